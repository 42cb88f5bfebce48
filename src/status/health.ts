// What the running daemon cannot do right now that its files cannot say: kept in the run directory
// (a tmpfs), so that it can be written when the state directory's disk is full, and read by
// `nodemgr status`.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { WriteProblem } from '../db/store.js';
import type { SyncStatus } from '../db/types.js';
import { validateSyncStatus } from '../db/validate.js';

export interface DaemonHealth {
  readonly pid: number;
  /** Why the node database on disk is older than the daemon's; null when it is current. */
  readonly database: WriteProblem | null;
  /** The last sync as the daemon knows it (its file may not have been written). */
  readonly lastSync: SyncStatus | null;
}

export function healthPath(runDir: string): string {
  return join(runDir, 'health.json');
}

export async function writeHealth(path: string, health: DaemonHealth): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, JSON.stringify(health) + '\n', { mode: 0o644 });
  await rename(temporary, path);
}

/** The health the daemon last wrote, if that daemon is still running; null otherwise. */
export async function readHealth(path: string): Promise<DaemonHealth | null> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return null;
  }
  const health = value as Partial<DaemonHealth> | null;
  if (!health || typeof health.pid !== 'number' || !Number.isSafeInteger(health.pid) || health.pid <= 0) return null;
  if (!isRunning(health.pid)) return null;
  const db = health.database;
  const database = db && typeof db.error === 'string' && typeof db.since === 'string' ? { error: db.error, since: db.since } : null;
  let lastSync: SyncStatus | null = null;
  try {
    lastSync = health.lastSync ? validateSyncStatus(health.lastSync) : null;
  } catch {
    lastSync = null;
  }
  return { pid: health.pid, database, lastSync };
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
