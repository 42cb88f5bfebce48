// The node database on disk: the only module that writes it. The file is guarded by the state
// directory's lock, replaced atomically and durably on every write, and validated whole on every
// read, so a reader sees either the previous contents or the new ones and a damaged file is noticed.
// Updates are applied in memory at once; their writes are coalesced.
import { mkdir, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Low, type Adapter } from 'lowdb';
import type { Logger } from '../log.js';
import { writeFileDurably } from './durable-file.js';
import { acquireLock, type HeldLock } from './lock.js';
import { emptyDatabase, type NodeDatabase } from './types.js';
import { validateDatabase } from './validate.js';
import { nextWriteDelay, type LastWrite } from './write-pacing.js';
import { describeError } from '../util/errors.js';

export { DatabaseFormatError, validateDatabase } from './validate.js';

export interface DatabaseStore {
  /** Current contents (immutable snapshot; treat as read-only). */
  readonly data: NodeDatabase;
  /**
   * Replaces contents with fn(current); the write to disk is coalesced: many updates within
   * `coalesceMs` become one durable write, paced for a large database (write-pacing.ts). Returns
   * once the new data is in memory. An fn that returns the current object unchanged writes nothing.
   */
  update(fn: (current: NodeDatabase) => NodeDatabase): void;
  /** Resolves when everything updated so far is durably on disk (rejects with the write error). */
  flush(): Promise<void>;
  /** Flushes, then releases the lock. */
  close(): Promise<void>;
  /** Why the newest contents are not on disk (a full disk, say), since when; null when they are. */
  problem(): WriteProblem | null;
}

export interface WriteProblem {
  readonly error: string;
  /** ISO time of the first failed write of the current run of failures. */
  readonly since: string;
}

export interface OpenOptions {
  path: string;
  lockPath: string;
  /** Delay between the first unwritten update and its write (default 50). */
  coalesceMs?: number;
  /** After a failed write, the next is tried this long later even without an update (default 5000). */
  retryMs?: number;
  logger: Logger;
  readonly?: false;
}

export interface OpenedDatabase {
  store: DatabaseStore;
  /** Set when the file on disk was damaged: where it was moved and why. The store starts empty. */
  recovered: null | { movedTo: string; reason: string };
}

/** The database file could not be read, or is not a node database. Names the file. */
export class DatabaseFileError extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
    /** The errno code when the file could not be read at all (e.g. ENOENT). */
    readonly code?: string,
  ) {
    super(`node database ${path}: ${reason}`);
    this.name = 'DatabaseFileError';
  }
}

const DEFAULT_COALESCE_MS = 50;
const DEFAULT_RETRY_MS = 5_000;


function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | null)?.code;
}

/** Raised for contents that can be read but are not a valid database; the file is moved aside. */
class CorruptContents extends Error {}

/** Parses and validates file contents; throws CorruptContents with the reason. */
function decode(text: string): NodeDatabase {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new CorruptContents(`not valid JSON (${describeError(error)})`);
  }
  try {
    return validateDatabase(value);
  } catch (error) {
    throw new CorruptContents(describeError(error));
  }
}

/** Null when the file does not exist. Read errors other than that are not corruption: rethrown. */
async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return null;
    throw new DatabaseFileError(path, `cannot read: ${describeError(error)}`, errnoCode(error));
  }
}

function encode(db: NodeDatabase): string {
  return JSON.stringify(db, null, 2) + '\n';
}

/**
 * lowdb adapter with durable writes: lowdb's own JSONFile renames without fsync. A database that
 * would not validate is never written, so that a bug cannot leave a file the next start rejects.
 */
function durableAdapter(path: string): Adapter<NodeDatabase> {
  return {
    async read() {
      const text = await readText(path);
      return text === null ? null : decode(text);
    },
    write(db) {
      // Serialise synchronously: the snapshot written is the one current when the write began.
      let text: string;
      try {
        validateDatabase(db);
        text = encode(db);
      } catch (error) {
        return Promise.reject(error);
      }
      return writeFileDurably(path, text, 0o600);
    },
  };
}

/** Reads the database without the lock (writes are atomic renames), e.g. for `nodemgr status`. */
export async function readDatabaseSnapshot(path: string): Promise<NodeDatabase> {
  let text: string | null;
  try {
    text = await readText(path);
  } catch (error) {
    throw error instanceof DatabaseFileError ? error : new DatabaseFileError(path, describeError(error));
  }
  if (text === null) throw new DatabaseFileError(path, 'no such file (has the daemon run yet?)', 'ENOENT');
  try {
    return decode(text);
  } catch (error) {
    throw new DatabaseFileError(path, describeError(error));
  }
}

/** Moves a damaged file aside under a name that no earlier damaged file uses. */
async function moveAside(path: string): Promise<string> {
  const stamp = new Date().toISOString();
  for (let n = 0; ; n++) {
    const target = `${path}.corrupt-${stamp}${n === 0 ? '' : `-${n}`}`;
    try {
      await stat(target);
    } catch (error) {
      if (errnoCode(error) !== 'ENOENT') throw error;
      // We hold the lock, so nothing else creates files of this name between the look and the move.
      await rename(path, target);
      return target;
    }
  }
}

/** Removes temporary files of writes that a crash interrupted (named by writeFileDurably). */
async function removeAbandonedTemps(path: string, logger: Logger): Promise<void> {
  const dir = dirname(path);
  const prefix = `.${basename(path)}.`;
  const pattern = /^\d+\.\d+\.tmp$/;
  for (const name of await readdir(dir)) {
    if (!name.startsWith(prefix) || !pattern.test(name.slice(prefix.length))) continue;
    await unlink(join(dir, name)).then(
      () => logger.info('removed temporary file of an interrupted write', { file: join(dir, name) }),
      () => undefined,
    );
  }
}

interface FlushWaiter {
  readonly generation: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * What is wrong with writing after a write: nothing after a success (said once, if something was);
 * after a failure its reason, since the first failure of the run (said once per reason). The file
 * on disk keeps the last contents written; memory keeps the newest, written at the next update or
 * retry (a full disk that gets space again, say).
 */
function problemAfterWrite(previous: WriteProblem | null, error: unknown | null, options: OpenOptions, retryMs: number): WriteProblem | null {
  const { logger, path } = options;
  if (error === null) {
    if (previous) logger.warn('database written again', { file: path, failing_since: previous.since });
    return null;
  }
  if (previous?.error !== describeError(error)) {
    logger.error('database write failed; the last written database stays on disk, and the write is retried', {
      file: path, error: describeError(error), retry_in_ms: retryMs,
    });
  }
  return { error: describeError(error), since: previous?.since ?? new Date().toISOString() };
}

function createStore(low: Low<NodeDatabase>, lock: HeldLock, options: OpenOptions, dirty: boolean): DatabaseStore {
  const { logger, path } = options;
  const coalesceMs = options.coalesceMs ?? DEFAULT_COALESCE_MS;
  const retryMs = options.retryMs ?? DEFAULT_RETRY_MS;
  let problem: WriteProblem | null = null;
  // Every update bumps `generation`; `written` is the last generation durably on disk.
  let generation = dirty ? 1 : 0;
  let written = 0;
  let firstUnwrittenAt = Date.now();
  let lastWrite: LastWrite = { endedAt: 0, durationMs: 0 };
  const dueIn = () => nextWriteDelay(Date.now(), firstUnwrittenAt, coalesceMs, lastWrite);
  let timer: NodeJS.Timeout | null = null;
  let writing = false;
  let failed = false; // the last write failed: wait for the next update or flush to retry
  let waiters: FlushWaiter[] = [];
  let closing: Promise<void> | null = null;

  const settle = (error: unknown | null) => {
    const still: FlushWaiter[] = [];
    for (const w of waiters) {
      if (error !== null) w.reject(error);
      else if (w.generation <= written) w.resolve();
      else still.push(w);
    }
    waiters = still;
  };

  const schedule = (delayMs: number) => {
    if (writing || timer) return;
    timer = setTimeout(() => {
      timer = null;
      void writeNow();
    }, Math.max(0, delayMs));
  };

  const writeNow = async () => {
    if (writing || generation === written) return;
    writing = true;
    const target = generation;
    const started = Date.now();
    try {
      await low.write(); // writes the snapshot of `target`: the adapter serialises synchronously
      written = target;
      failed = false;
      logger.debug('database written', { file: path, generation: target, ms: Date.now() - started });
      problem = problemAfterWrite(problem, null, options, retryMs);
      settle(null);
    } catch (error) {
      failed = true;
      problem = problemAfterWrite(problem, error, options, retryMs);
      settle(error);
    } finally {
      writing = false;
      const ended = Date.now();
      lastWrite = { endedAt: ended, durationMs: ended - started };
    }
    if (failed && !closing) {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        failed = false;
        void writeNow();
      }, retryMs);
      timer.unref();
      return;
    }
    if (generation > written && !failed) {
      // The updates left over all came after this write began.
      firstUnwrittenAt = started;
      // A waiting flush should not wait for the coalescing delay as well.
      schedule(waiters.length > 0 ? 0 : dueIn());
    }
  };

  const flushPending = (): Promise<void> => {
    if (generation === written) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      waiters.push({ generation, resolve, reject });
      failed = false;
      if (timer) clearTimeout(timer);
      timer = null;
      // If a write is running it covers an older generation; its completion starts the next at once.
      void writeNow();
    });
  };

  return {
    get data() {
      return low.data;
    },
    update(fn) {
      if (closing) throw new Error(`node database ${path} is closed: update after close`);
      const next = fn(low.data);
      if (next === low.data) return; // nothing changed: nothing to write
      if (generation === written) firstUnwrittenAt = Date.now();
      low.data = next;
      generation++;
      failed = false;
      schedule(dueIn());
    },
    flush() {
      // After close nothing more is written (the lock is gone): report how the closing flush went.
      return closing ?? flushPending();
    },
    problem: () => problem,
    close() {
      closing ??= (async () => {
        try {
          await flushPending();
        } finally {
          if (timer) clearTimeout(timer);
          timer = null;
          await lock.release();
        }
      })();
      return closing;
    },
  };
}

/**
 * Takes the state directory's lock (LockHeldError when another daemon has it), then reads the
 * database. A missing file gives an empty database (written on the first write); a damaged one is
 * moved aside (never deleted) and reported in `recovered`, and the store starts empty.
 */
export async function openDatabase(options: OpenOptions): Promise<OpenedDatabase> {
  const { path, lockPath, logger } = options;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await mkdir(dirname(lockPath), { recursive: true, mode: 0o700 });
  const lock = await acquireLock(lockPath, logger);
  try {
    await removeAbandonedTemps(path, logger);
    const initial = emptyDatabase();
    const low = new Low<NodeDatabase>(durableAdapter(path), initial);
    let recovered: OpenedDatabase['recovered'] = null;
    let exists = true;
    try {
      await low.read();
      exists = low.data !== initial; // lowdb keeps the default data when the adapter finds no file
    } catch (error) {
      if (!(error instanceof CorruptContents)) throw error;
      const movedTo = await moveAside(path);
      recovered = { movedTo, reason: error.message };
      logger.error('node database is damaged; moved aside, starting empty', { file: path, moved_to: movedTo, reason: error.message });
      low.data = emptyDatabase();
      exists = false;
    }
    if (!exists && !recovered) logger.info('no node database yet; starting empty', { file: path });
    return { store: createStore(low, lock, options, !exists), recovered };
  } catch (error) {
    await lock.release();
    throw error;
  }
}
