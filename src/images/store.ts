// The cache directory on disk: made readable by everyone, its index read back and made to agree
// with the files at start, and the index written durably, several changes at a time.
import { chmod, mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { writeFileDurably } from '../db/durable-file.js';
import type { Logger } from '../log.js';
import { formatIndex, HEADER_BYTES, INDEX_FILE, parseIndex, type ImageEntry } from './index.js';
import { describeError } from '../util/errors.js';

/** Temporary files of this module and of writeFileDurably: dot files ending in .part or .tmp. */
export const TEMP_FILE = /^\..*\.(part|tmp)$/;
export const FILE_MODE = 0o644;
export const DIR_MODE = 0o755;

/** Creates `dir` (and missing parents) readable by everyone: the hypervisor may run as another user. */
export async function makeDirectory(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode: DIR_MODE });
  if (first === undefined) return;
  for (let d = dir; ; d = dirname(d)) {
    await chmod(d, DIR_MODE);
    if (d === first || dirname(d) === d) break;
  }
}

/** Deletes `path` (a file already gone is no fault); the reason it could not be deleted, else null. */
export async function deleteFile(path: string): Promise<string | null> {
  try {
    await unlink(path);
    return null;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? null : describeError(error);
  }
}

export async function readHeader(path: string): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, HEADER_BYTES, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** The entries of the index in `dir` as they are on disk, for readers other than the daemon (nodemgr status). */
export async function readImageIndex(dir: string): Promise<ImageEntry[]> {
  const path = join(resolve(dir), INDEX_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`image index ${path}: ${describeError(error)}`);
  }
  try {
    return parseIndex(text, resolve(dir)).entries;
  } catch (error) {
    throw new Error(`image index ${path}: ${describeError(error)}`);
  }
}

/** Reads the index and makes it agree with the directory: stray temporary files and entries without a file go. */
export async function recover(dir: string, logger: Logger): Promise<{ entries: ImageEntry[]; changed: boolean }> {
  const indexPath = join(dir, INDEX_FILE);
  let entries: ImageEntry[] = [];
  let changed = false;
  const text = await readFile(indexPath, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return null;
    throw new Error(`image index ${indexPath}: ${error.message}`);
  });
  if (text !== null) {
    try {
      const parsed = parseIndex(text, dir);
      entries = parsed.entries;
      for (const reason of parsed.dropped) logger.warn('image index entry dropped', { index: indexPath, reason });
      changed = parsed.dropped.length > 0;
    } catch (error) {
      // Kept for inspection, never deleted: it may be the only list of what the files are.
      const aside = `${indexPath}.damaged-${Date.now()}`;
      await rename(indexPath, aside);
      logger.error('image index damaged; moved aside, starting with an empty cache', { index: indexPath, moved_to: aside, reason: describeError(error) });
      changed = true;
    }
  }
  for (const name of await readdir(dir)) {
    if (!TEMP_FILE.test(name)) continue;
    await unlink(join(dir, name)).catch(() => undefined);
    logger.info('image cache: stray temporary file removed', { file: join(dir, name) });
  }
  const kept: ImageEntry[] = [];
  for (const entry of entries) {
    const st = await stat(entry.path).catch(() => null);
    if (st === null) {
      logger.warn('image entry dropped: its file is gone', { image: entry.name, uri: entry.uri, path: entry.path });
      changed = true;
    } else if (!st.isFile() || st.size !== entry.bytes) {
      logger.warn('image entry dropped: its file is not the one fetched', {
        image: entry.name, uri: entry.uri, path: entry.path, expected_bytes: entry.bytes, found_bytes: st.isFile() ? st.size : 'not a file',
      });
      if (st.isFile()) await unlink(entry.path).catch(() => undefined);
      changed = true;
    } else {
      kept.push(entry);
    }
  }
  return { entries: kept, changed };
}

/**
 * Writes the index of `entries()` durably. A write asked for while one is in progress is made
 * after it, once, for every change asked for meanwhile: many adds at once cost few writes, and
 * each caller's promise resolves when a write that includes its change is on disk.
 */
export function indexWriter(dir: string, entries: () => readonly ImageEntry[]): { write(): Promise<void>; idle(): Promise<void> } {
  let running: Promise<void> | null = null;
  let queued: Promise<void> | null = null;
  const start = (): Promise<void> => {
    const write = writeFileDurably(join(dir, INDEX_FILE), formatIndex(entries()), FILE_MODE);
    running = write.finally(() => {
      running = null;
    });
    return running;
  };
  return {
    write() {
      if (queued !== null) return queued;
      if (running === null) return start();
      queued = running.catch(() => undefined).then(() => {
        queued = null;
        return start();
      });
      return queued;
    },
    /** Resolves once the writes asked for so far are done (or failed: their callers were told). */
    idle: () => (queued ?? running ?? Promise.resolve()).catch(() => undefined),
  };
}
