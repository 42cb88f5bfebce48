// The state directory's lock: one lock file that names its owner, so that a second daemon refuses
// to start, and a lock left behind by a daemon that died is taken over instead of blocking forever.
//
// Node has no flock/fcntl, so the lock is a file that exists while it is held. Its owner is the pid
// plus the process start time (field 22 of /proc/<pid>/stat): a pid that the kernel has since given
// to another process is not mistaken for the owner.
//
// Creating the lock. The file is written under a private name (opened with O_EXCL, `wx`) and then
// hard-linked to the lock's name. link() fails with EEXIST when the name exists, so it is as exclusive
// as opening the lock itself with `wx`, but the lock appears with its contents complete: a starter
// that reads it never sees an empty file that it could take for a stale lock.
//
// Taking over a stale lock. There is no atomic "replace this file if it still holds X", and the
// obvious recipes break when two starters find the same stale lock at once:
// - unlink + `wx` retry: A and B both read the stale lock; A unlinks it and creates its own; B then
//   unlinks A's fresh lock (believing it still the stale one) and creates its own. Both run.
// - rename a fresh lock over it, then re-read: A renames, re-reads (sees its own), then B renames over
//   A's lock and re-reads (sees its own). Both run.
// So a takeover is serialised by a second lock, `<lock>.takeover`, taken the same exclusive way.
// Only its holder may replace the lock, and only after re-reading it, under the guard, and finding
// exactly the stale contents it judged (every lock carries a random token, so contents never repeat).
// A starter that judged the same stale lock but comes second either finds the guard held by a live
// process (it waits and looks again) or gets the guard after the first is done and re-reads a lock
// that has changed (it looks again, and finds a live owner). While the lock holds the stale
// contents nobody but the guard holder may touch it: its owner is dead, and creating needs the name
// free. A takeover that itself dies leaves a guard naming a dead process; that guard is stale in turn
// and is taken over by the same rule, one level down (`<lock>.takeover.takeover`).
import { randomBytes } from 'node:crypto';
import { link, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { describeError } from '../util/errors.js';

export class LockHeldError extends Error {
  constructor(
    readonly pid: number,
    readonly lockPath: string,
  ) {
    super(`another nodemgr (pid ${pid}) holds ${lockPath}; stop it first`);
    this.name = 'LockHeldError';
  }
}

export interface HeldLock {
  /** Removes the lock file if it is still this process's. Idempotent. */
  release(): Promise<void>;
}

interface LockOwner {
  readonly pid: number;
  /** Start time in clock ticks since boot; null where /proc is not available. */
  readonly startTime: string | null;
}

type Verdict = { readonly alive: true; readonly owner: LockOwner } | { readonly alive: false; readonly reason: string };

type Claim = { readonly kind: 'claimed' } | { readonly kind: 'held'; readonly owner: LockOwner };

/** How long to keep waiting for another starter that is in the middle of a takeover. */
const TAKEOVER_WAIT_MS = 5000;
/** Nested abandoned takeovers before we give up and ask the operator. */
const MAX_GUARD_DEPTH = 4;

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | null)?.code;
}


function newToken(): string {
  return randomBytes(12).toString('hex');
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

type ProcessInfo =
  | { readonly kind: 'gone' }
  | { readonly kind: 'exited' }
  | { readonly kind: 'running'; readonly startTime: string | null };

/** Fields after the command name (which is in parentheses and may itself hold spaces and ")"). */
function statFields(stat: string): string[] | null {
  const close = stat.lastIndexOf(')');
  if (close < 0) return null;
  return stat.slice(close + 1).trim().split(/\s+/);
}

async function inspectProcess(pid: number): Promise<ProcessInfo> {
  try {
    const fields = statFields(await readFile(`/proc/${pid}/stat`, 'utf8'));
    // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    const state = fields?.[0];
    if (state === 'Z' || state === 'X') return { kind: 'exited' };
    return { kind: 'running', startTime: fields?.[19] ?? null };
  } catch {
    // No /proc entry: the process is gone, unless /proc hides other users' processes (hidepid)
    // or is not mounted; signal 0 tells those apart without touching the process.
    try {
      process.kill(pid, 0);
      return { kind: 'running', startTime: null };
    } catch (error) {
      return errnoCode(error) === 'EPERM' ? { kind: 'running', startTime: null } : { kind: 'gone' };
    }
  }
}

async function currentIdentity(): Promise<LockOwner> {
  const info = await inspectProcess(process.pid);
  return { pid: process.pid, startTime: info.kind === 'running' ? info.startTime : null };
}

function lockContents(owner: LockOwner): string {
  return JSON.stringify({ pid: owner.pid, startTime: owner.startTime, token: newToken(), since: new Date().toISOString() }) + '\n';
}

function parseOwner(raw: string): LockOwner | null {
  try {
    const value = JSON.parse(raw) as { pid?: unknown; startTime?: unknown };
    const { pid, startTime } = value;
    // A pid of 0 or below would make signal 0 address a process group: never trust one.
    if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return null;
    if (startTime !== null && typeof startTime !== 'string') return null;
    return { pid, startTime };
  } catch {
    return null;
  }
}

async function judge(owner: LockOwner): Promise<Verdict> {
  const info = await inspectProcess(owner.pid);
  if (info.kind === 'gone') return { alive: false, reason: `process ${owner.pid} is gone` };
  if (info.kind === 'exited') return { alive: false, reason: `process ${owner.pid} has exited` };
  if (owner.startTime !== null && info.startTime !== null && owner.startTime !== info.startTime) {
    return { alive: false, reason: `pid ${owner.pid} now belongs to another process` };
  }
  return { alive: true, owner };
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return null;
    throw error;
  }
}

function privateName(path: string): string {
  return `${path}.${process.pid}.${newToken()}.new`;
}

/** Creates `path` with `contents` unless it exists; false when it does. */
async function createExclusive(path: string, contents: string): Promise<boolean> {
  const temp = privateName(path);
  await writeFile(temp, contents, { flag: 'wx', mode: 0o644 });
  try {
    await link(temp, path);
    return true;
  } catch (error) {
    if (errnoCode(error) === 'EEXIST') return false;
    throw new Error(`cannot create lock file ${path}: ${describeError(error)}`);
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

async function replaceWith(path: string, contents: string): Promise<void> {
  const temp = privateName(path);
  await writeFile(temp, contents, { flag: 'wx', mode: 0o644 });
  try {
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
}

/** Unlinks `path` if it still holds `contents`. Nobody else replaces a lock whose owner is alive. */
async function removeIfOurs(path: string, contents: string): Promise<boolean> {
  if ((await readIfExists(path)) !== contents) return false;
  await unlink(path).catch((error: unknown) => {
    if (errnoCode(error) !== 'ENOENT') throw error;
  });
  return true;
}

interface Context {
  readonly me: LockOwner;
  readonly logger: Logger;
  readonly deadline: number;
}

/**
 * Takes `path` for `contents`: creates it, or takes it over when its owner is dead. Resolves
 * `held` with the owner when a live process holds it.
 */
async function claim(path: string, contents: string, depth: number, ctx: Context): Promise<Claim> {
  for (;;) {
    if (await createExclusive(path, contents)) return { kind: 'claimed' };
    const raw = await readIfExists(path);
    if (raw === null) continue; // released between our attempt and our look
    const owner = parseOwner(raw);
    const verdict: Verdict = owner ? await judge(owner) : { alive: false, reason: 'lock file is unreadable' };
    if (verdict.alive) return { kind: 'held', owner: verdict.owner };
    ctx.logger.warn('taking over stale lock', { lock: path, previous_pid: owner?.pid ?? null, reason: verdict.reason });
    const outcome = await replaceStale(path, raw, contents, depth, ctx);
    if (outcome === 'replaced') return { kind: 'claimed' };
    if (outcome === 'busy') {
      if (Date.now() > ctx.deadline) {
        throw new Error(`timed out taking over the stale lock ${path}: another nodemgr keeps ${path}.takeover`);
      }
      await sleep(10 + Math.random() * 20);
    }
    // 'changed': somebody else took it over (or released it) meanwhile; look again.
  }
}

/** Replaces `path` by `contents` if it still holds `staleRaw`, serialised by the takeover guard. */
async function replaceStale(
  path: string,
  staleRaw: string,
  contents: string,
  depth: number,
  ctx: Context,
): Promise<'replaced' | 'changed' | 'busy'> {
  const guard = `${path}.takeover`;
  if (depth >= MAX_GUARD_DEPTH) {
    throw new Error(`cannot take over ${path}: takeovers by processes that died are left in ${guard}*; remove those files`);
  }
  const guardContents = lockContents(ctx.me);
  const guarded = await claim(guard, guardContents, depth + 1, ctx);
  if (guarded.kind === 'held') return 'busy';
  try {
    if ((await readIfExists(path)) !== staleRaw) return 'changed';
    await replaceWith(path, contents);
    return 'replaced';
  } finally {
    await removeIfOurs(guard, guardContents);
  }
}

/**
 * Takes the lock at `path` for this process. Throws LockHeldError when a live process holds it;
 * a lock whose owner is gone (or whose pid now belongs to another process) is taken over, logged.
 * The directory must exist.
 */
export async function acquireLock(path: string, logger: Logger): Promise<HeldLock> {
  const me = await currentIdentity();
  const contents = lockContents(me);
  const result = await claim(path, contents, 0, { me, logger, deadline: Date.now() + TAKEOVER_WAIT_MS });
  if (result.kind === 'held') throw new LockHeldError(result.owner.pid, path);
  logger.debug('lock acquired', { lock: path, pid: me.pid });

  let released: Promise<void> | null = null;
  return {
    release() {
      released ??= (async () => {
        if (!(await removeIfOurs(path, contents))) {
          // Only possible if another process judged us dead: say so rather than remove its lock.
          logger.error('lock file no longer ours at release; left alone', { lock: path, pid: me.pid });
        }
      })();
      return released;
    },
  };
}
