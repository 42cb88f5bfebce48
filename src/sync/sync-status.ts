// The outcome of the last sync, kept in a small file of its own beside the database. It changes
// on every poll, while the records usually do not: keeping it apart means a no-change sync
// rewrites a few hundred bytes, not a database of 10,000 records.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileDurably } from '../db/durable-file.js';
import type { SyncStatus } from '../db/types.js';
import { validateSyncStatus } from '../db/validate.js';
import type { Logger } from '../log.js';
import { describeError } from '../util/errors.js';

export function syncStatusPath(stateDir: string): string {
  return join(stateDir, 'last-sync.json');
}

/**
 * Reads the last sync status: null when there is none yet. A damaged file is not fatal (the
 * next sync rewrites it); `onDamaged` hears why it was ignored.
 */
export async function readSyncStatus(path: string, onDamaged: (reason: string) => void = () => undefined): Promise<SyncStatus | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  try {
    return validateSyncStatus(JSON.parse(text));
  } catch (error) {
    onDamaged(`${path}: ${describeError(error)}`);
    return null;
  }
}

export interface SyncStatusFile {
  readonly current: SyncStatus | null;
  /** Takes the new status at once and writes it durably in the background (the latest wins). */
  record(status: SyncStatus): void;
  /** Resolves when the latest status recorded is on disk. */
  flush(): Promise<void>;
}

export function createSyncStatusFile(path: string, initial: SyncStatus | null, logger: Logger): SyncStatusFile {
  let current = initial;
  let writing: Promise<void> | null = null;
  let dirty = false;

  const writeLoop = async (): Promise<void> => {
    while (dirty) {
      dirty = false;
      const text = JSON.stringify(current, null, 2) + '\n';
      // A failed write is logged and not retried by itself: the next sync writes a fresher one.
      await writeFileDurably(path, text, 0o644).catch((error: Error) =>
        logger.error('sync status not written', { file: path, error: error.message }),
      );
    }
  };

  const startWriting = (): void => {
    writing = writeLoop().finally(() => {
      writing = null;
      if (dirty) startWriting(); // recorded after the loop's last look
    });
  };

  return {
    get current() {
      return current;
    },
    record(status) {
      current = status;
      dirty = true;
      if (!writing) startWriting();
    },
    async flush() {
      while (writing) await writing;
    },
  };
}
