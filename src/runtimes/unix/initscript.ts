// A sliver's initscript: kept under the run directory and started as the sliver's own user,
// detached from the daemon so that it outlives a daemon restart.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, chown, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

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

// Run as root when the script must start inside cgroups: the launcher writes its own pid into each
// group's cgroup.procs before it drops to the account, so no process of the script ever runs
// outside them (moving it after the spawn would leave a window in which it could fork away).
// Arguments: uid, gid, script path, then the cgroup.procs files. setpriv changes the real,
// effective and saved ids together and clears the supplementary groups, as spawn() does.
const JOIN_AND_DROP = [
  'uid=$1 gid=$2 script=$3',
  'shift 3',
  'for procs do echo $$ >"$procs" || { echo "nodemgr: cannot join $procs" >&2; exit 111; }; done',
  'exec setpriv --reuid="$uid" --regid="$gid" --clear-groups /bin/sh -c "$0" nodemgr-initscript "$script"',
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
 * spawn() with uid/gid drops root the way login does: before setgid() and setuid() the child calls
 * setgroups(0, NULL), so root's supplementary groups are not inherited, and the account (created
 * with only its private group) has exactly the groups a login would give it: its primary group.
 */
export async function launchInitscript(account: InitscriptAccount, path: string, cgroupProcFiles: readonly string[] = []): Promise<LaunchedInitscript> {
  const joining = cgroupProcFiles.length > 0;
  const args = joining
    ? ['-c', JOIN_AND_DROP, WRAPPER, String(account.uid), String(account.gid), path, ...cgroupProcFiles]
    : ['-c', WRAPPER, 'nodemgr-initscript', path];
  const child = spawn('/bin/sh', args, {
    uid: joining ? undefined : account.uid,
    gid: joining ? undefined : account.gid,
    cwd: account.home,
    env: {
      HOME: account.home,
      USER: account.name,
      LOGNAME: account.name,
      SHELL: account.shell,
      PATH: '/usr/local/bin:/usr/bin:/bin',
      LANG: 'C.UTF-8',
    },
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
