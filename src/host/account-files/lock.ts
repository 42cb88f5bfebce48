// The account files' locks, taken as shadow-utils takes them, so that this daemon, useradd,
// usermod, vipw and every other tool of the host exclude one another:
// 1. lckpwdf(3): an fcntl write lock on /etc/.pwd.lock (glibc's lckpwdf, which shadow-utils calls
//    before any change as root). An fcntl lock, not flock: Linux keeps the two kinds apart.
// 2. For each file, `<file>.lock`: shadow-utils writes its pid to `<file>.<pid>` and link(2)s that
//    to the lock's name, which fails while the name exists; a lock whose pid is not alive is stale
//    and removed. Tools that take only these (vipw without lckpwdf) are excluded by them.
// The tools do not wait for a held lock ("cannot lock /etc/passwd; try again later"); this writer
// waits and tries again, up to a deadline, and never holds a lock while it waits for another.
import { closeSync, openSync } from 'node:fs';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { tryWriteLock } from '../../native/fcntl-lock.js';

export interface AccountFilesLock {
  /** Releases every lock taken, the per-file ones first. Idempotent. */
  release(): Promise<void>;
}

export interface LockOptions {
  /** The lckpwdf lock file, /etc/.pwd.lock. */
  readonly lockFile: string;
  /** The account files to lock, in shadow-utils' order (passwd, shadow, group, gshadow). */
  readonly files: readonly string[];
  /** Give up (and throw) after this long. */
  readonly timeoutMs: number;
  /** Pause between two attempts. */
  readonly retryMs?: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

type Attempt = { readonly taken: true } | { readonly taken: false; readonly holder: string };

/** One try at `<file>.lock`, as shadow-utils' do_lock_file: link a pid file, or find the holder. */
async function tryFileLock(file: string): Promise<Attempt> {
  const lock = `${file}.lock`;
  const mine = `${file}.${process.pid}`;
  await writeFile(mine, String(process.pid), { mode: 0o600, flag: 'w' });
  try {
    for (let tries = 0; tries < 2; tries++) {
      try {
        await link(mine, lock);
        return { taken: true };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const text = await readFile(lock, 'utf8').catch(() => null);
      if (text === null) continue; // released in between: try the link again
      const pid = /^\s*(\d+)\s*$/.exec(text)?.[1];
      // A lock whose content is not a pid is someone's, in a form we do not know: never removed.
      if (pid === undefined) return { taken: false, holder: `${lock} (content ${JSON.stringify(text.slice(0, 20))})` };
      if (Number(pid) !== process.pid && alive(Number(pid))) return { taken: false, holder: `${lock} (pid ${pid})` };
      // Its holder is gone (a tool killed while holding it): stale, as shadow-utils judges it.
      await unlink(lock).catch(() => undefined);
    }
    return { taken: false, holder: `${lock} (taken again while its stale lock was removed)` };
  } finally {
    await unlink(mine).catch(() => undefined);
  }
}

/**
 * Takes lckpwdf's lock and then every file's lock. While a lock is held by another process, what
 * was taken is let go before waiting, so two writers that lock in different orders cannot deadlock.
 */
export async function lockAccountFiles(options: LockOptions): Promise<AccountFilesLock> {
  const deadline = Date.now() + options.timeoutMs;
  const retryMs = options.retryMs ?? 10;
  for (let attempt = 1; ; attempt++) {
    const fd = openSync(options.lockFile, 'a', 0o600);
    const taken: string[] = [];
    let release = async () => {
      release = async () => undefined;
      for (const file of [...taken].reverse()) await unlink(`${file}.lock`).catch(() => undefined);
      closeSync(fd); // closing the descriptor releases the fcntl lock
    };
    let holder: string | null = null;
    try {
      if (!tryWriteLock(fd)) holder = `${options.lockFile} (lckpwdf)`;
      for (const file of options.files) {
        if (holder !== null) break;
        const got = await tryFileLock(file);
        if (got.taken) taken.push(file);
        else holder = got.holder;
      }
    } catch (err) {
      await release();
      throw err;
    }
    if (holder === null) return { release: () => release() };
    await release();
    if (Date.now() >= deadline) {
      throw new Error(`cannot lock the account files: ${holder} is held by another process (waited ${options.timeoutMs} ms, ${attempt} attempts)`);
    }
    // A short random pause, growing a little: the tools hold the lock for milliseconds.
    await sleep(Math.min(retryMs * attempt, 100) * (0.5 + Math.random()));
  }
}
