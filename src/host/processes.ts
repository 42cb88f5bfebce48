// Finding and killing every process of one uid, for stopping and destroying an account.
import { readdir, readFile } from 'node:fs/promises';
import { runCommand } from './exec.js';

export interface ProcessInfo {
  readonly pid: number;
  readonly state: string;
  /** Real, effective, saved and filesystem uid. */
  readonly uids: readonly number[];
}

/** Reads the Uid and State lines of /proc/<pid>/status; null when the process is gone. */
export async function readProcess(pid: number, procRoot = '/proc'): Promise<ProcessInfo | null> {
  let text: string;
  try {
    text = await readFile(`${procRoot}/${pid}/status`, 'utf8');
  } catch {
    return null; // exited between the listing and the read
  }
  return parseProcessStatus(pid, text);
}

export function parseProcessStatus(pid: number, text: string): ProcessInfo | null {
  const uidLine = /^Uid:\s+(.*)$/m.exec(text);
  const stateLine = /^State:\s+(\S)/m.exec(text);
  if (!uidLine || !stateLine) return null;
  const uids = uidLine[1]!.trim().split(/\s+/).map(Number);
  return { pid, state: stateLine[1]!, uids };
}

/**
 * A process belongs to `uid` when its real or saved uid is it: exactly the processes that the
 * account itself may signal. A root process that only borrowed the uid as its effective uid (sshd
 * reading authorized_keys, for one) is not the account's and is left alone.
 */
function belongsTo(info: ProcessInfo, uid: number): boolean {
  return info.uids[0] === uid || info.uids[2] === uid;
}

/**
 * Pids of the live processes of `uid`. The Uid line is read rather than the owner of /proc/<pid>,
 * because a process that makes itself non-dumpable shows as root there. Zombies are left out: they
 * cannot run or hold anything, and on a host whose init does not reap they would never go away.
 */
export async function processesOf(uid: number, procRoot = '/proc'): Promise<number[]> {
  const names = await readdir(procRoot);
  const pids = names.filter((n) => /^\d+$/.test(n)).map(Number);
  const infos = await Promise.all(pids.map((pid) => readProcess(pid, procRoot)));
  return infos
    .filter((i): i is ProcessInfo => i !== null && belongsTo(i, uid) && i.state !== 'Z' && i.state !== 'X')
    .map((i) => i.pid);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // ESRCH: it exited on its own, which is what we want anyway.
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class ProcessesSurvivedError extends Error {
  override readonly name = 'ProcessesSurvivedError';
}

/**
 * kill(-1, SIGKILL) sent as the account reaches every process the account may signal, in one pass
 * that the kernel makes atomic against fork(): a fork still in progress is aborted by the pending
 * signal. Nothing that lists /proc from outside can promise that: a process that forks and exits
 * in a loop changes its pid faster than the listing can be read, and outruns any kill by pid.
 * The helper shell excludes itself from kill(-1) and exits right after.
 */
async function killAllAsAccount(uid: number, gid: number): Promise<void> {
  await runCommand('/bin/sh', ['-c', 'kill -s KILL -- -1'], {
    uid,
    gid,
    cwd: '/',
    env: { PATH: '/usr/bin:/bin' },
    timeoutMs: 10_000,
  }).catch(() => undefined); // "no such process" when there was nothing to kill; the listing below decides
}

/**
 * Kills every process of `uid` and returns how many were found. First everything the account can
 * signal is killed as the account itself (see killAllAsAccount). What is left after that (a
 * process still dying, or one the helper could not reach because it could not start) is handled
 * from here by pid, in rounds that stop every process found and list again: a process that forked
 * before its SIGSTOP landed has a child the first listing missed, and the kernel aborts a fork that
 * overlaps a pending signal, so once a listing after the stops finds nothing new, every process of
 * the uid is frozen and none can fork any more. Only then are they all killed.
 */
export async function killProcessesOf(
  uid: number,
  gid: number,
  options: { timeoutMs?: number; procRoot?: string } = {},
): Promise<number> {
  if (uid === 0) throw new Error('refusing to kill the processes of root');
  const procRoot = options.procRoot ?? '/proc';
  const deadline = Date.now() + (options.timeoutMs ?? 5000);
  const found = new Set<number>(await processesOf(uid, procRoot));
  await killAllAsAccount(uid, gid);
  for (let round = 0; ; round++) {
    const before = await processesOf(uid, procRoot);
    if (before.length === 0) return found.size;
    if (Date.now() > deadline) {
      throw new ProcessesSurvivedError(
        `${before.length} process(es) of uid ${uid} survived SIGKILL: ${before.slice(0, 10).join(' ')}`,
      );
    }
    // Killed processes take a moment to go; give them that before treating them as survivors.
    if (round === 0) {
      await sleep(20);
      continue;
    }
    for (const pid of before) signal(pid, 'SIGSTOP');
    const after = await processesOf(uid, procRoot);
    const afterSet = new Set(after);
    // A listed pid that no longer belongs to the uid exited and its number may already serve
    // another process, which the SIGSTOP above must not leave frozen.
    for (const pid of before) {
      if (afterSet.has(pid)) continue;
      const info = await readProcess(pid, procRoot);
      if (info && !belongsTo(info, uid)) signal(pid, 'SIGCONT');
    }
    const beforeSet = new Set(before);
    if (after.some((pid) => !beforeSet.has(pid))) continue; // stop the newcomers first
    for (const pid of after) {
      signal(pid, 'SIGKILL');
      found.add(pid);
    }
    await killAllAsAccount(uid, gid);
    await sleep(10);
  }
}
