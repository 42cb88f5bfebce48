// A sliver's initscript: kept under the run directory and started as the sliver's own user,
// detached from the daemon so that it outlives a daemon restart.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, chown, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { launchAsAccount, loginEnvironment } from '../../host/launch.js';

export interface InitscriptAccount {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
  readonly shell: string;
}

/** Where the initscripts live, and the record of which text was last started, per account. */
export function initscriptDir(runDir: string): string {
  return join(runDir, 'initscripts');
}

export function initscriptPath(runDir: string, name: string): string {
  return join(initscriptDir(runDir), name);
}

// Account names cannot contain a dot, so this never meets a script's name.
function startedRecordPath(runDir: string, name: string): string {
  return join(initscriptDir(runDir), `${name}.started`);
}

export function initscriptHash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The hash of the initscript last started for the account, or null when none is recorded. */
export async function startedHash(runDir: string, name: string): Promise<string | null> {
  try {
    return (await readFile(startedRecordPath(runDir, name), 'utf8')).trim() || null;
  } catch {
    return null;
  }
}

export async function recordStarted(runDir: string, name: string, hash: string): Promise<void> {
  const path = startedRecordPath(runDir, name);
  await writeFile(`${path}.tmp`, hash + '\n', { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

export async function forgetStarted(runDir: string, name: string): Promise<void> {
  await rm(startedRecordPath(runDir, name), { force: true });
}

/** Removes everything the run directory holds for the account. */
export async function removeInitscriptFiles(runDir: string, name: string): Promise<void> {
  await rm(initscriptPath(runDir, name), { force: true });
  await rm(`${initscriptPath(runDir, name)}.tmp`, { force: true });
  await rm(startedRecordPath(runDir, name), { force: true });
  await rm(`${startedRecordPath(runDir, name)}.tmp`, { force: true });
}

/**
 * Writes the script where the account can run it but not change it: owned by root, group the
 * account's private group (of which it is the only member), mode 0750. The account needs read and
 * execute to run a script; other slivers get nothing, since an initscript may hold things its slice
 * does not publish. The directory is 0711: every account may pass through it, none may list it.
 */
export async function writeInitscript(runDir: string, account: InitscriptAccount, text: string): Promise<string> {
  const dir = initscriptDir(runDir);
  await mkdir(dir, { recursive: true, mode: 0o711 });
  await chmod(dir, 0o711);
  const path = initscriptPath(runDir, account.name);
  const temp = `${path}.tmp`;
  await writeFile(temp, text, { mode: 0o700 });
  await chown(temp, 0, account.gid);
  await chmod(temp, 0o750);
  await rename(temp, path);
  return path;
}

// The constant program of the wrapper shell; the script's path is its only argument ($1), so no
// text of the spec is ever parsed by a shell. Running as the account, it opens the log in the
// account's home with the account's own rights: a symlink planted there can lead nowhere the
// account could not write itself (root opening that path could be sent anywhere). If the log
// cannot be opened the output goes to /dev/null rather than the script not running. `exec` keeps
// one process, so the initscript's pid is the one that was spawned.
const WRAPPER = [
  'umask 022',
  'log="$HOME/.nodemgr-initscript.log"',
  'true 2>/dev/null >>"$log" || log=/dev/null',
  'exec "$1" </dev/null >>"$log" 2>&1',
].join('\n');

export interface LaunchedInitscript {
  readonly pid: number;
  /** Resolves with the wrapper's exit status when the initscript ends (it may never end). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts the script as the account, in its own session (setsid), so that neither a signal to the
 * daemon's process group nor the daemon's exit reaches it.
 *
 * It is launched by root inside the sliver's cgroups and then becomes the account (launch.ts), so
 * the account has exactly the groups a login would give it (its primary group) and every process
 * of the script is in the sliver's groups from the start.
 */
export async function launchInitscript(account: InitscriptAccount, path: string, cgroupProcFiles: readonly string[] = []): Promise<LaunchedInitscript> {
  const launch = launchAsAccount(account, cgroupProcFiles, ['/bin/sh', '-c', WRAPPER, 'nodemgr-initscript', path]);
  const child = spawn(launch.file, launch.args, {
    cwd: account.home,
    env: loginEnvironment(account),
    stdio: 'ignore',
    detached: true,
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  // The daemon neither waits for the script nor lets it keep the event loop alive; Node still
  // reaps it when it ends, so no zombie is left.
  child.unref();
  return { pid: child.pid!, exited };
}
