// How every process of a sliver is started (its initscript, an ssh session): by root, which joins
// the sliver's cgroups and then becomes the account. Moving a process into its groups after it was
// spawned would leave a moment in which it could fork outside them; here nothing of the sliver
// ever runs outside them.
//
// setpriv sets the real, effective and saved ids together and clears the supplementary groups, as
// login does for an account whose only group is its private one. On a terminal the launcher first
// gives the terminal to the account (as sshd does), so that programs checking its owner work.

export interface LaunchAccount {
  readonly uid: number;
  readonly gid: number;
}

// Arguments: uid, gid, the number of cgroup.procs files, the files, then the command.
const LAUNCHER = [
  'uid=$1 gid=$2 n=$3',
  'shift 3',
  'while [ "$n" -gt 0 ]; do',
  '  echo $$ >"$1" || { echo "nodemgr: cannot join the cgroup $1" >&2; exit 111; }',
  '  shift; n=$((n - 1))',
  'done',
  'if [ -t 0 ]; then terminal=$(tty) && chown "$uid" "$terminal" && chmod 0620 "$terminal"; fi',
  'exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"',
].join('\n');

/** The executable and arguments that run `argv` as the account inside the given cgroups. */
export function launchAsAccount(account: LaunchAccount, cgroupProcFiles: readonly string[], argv: readonly string[]): { file: string; args: string[] } {
  if (argv.length === 0) throw new Error('launchAsAccount: no command');
  for (const id of [account.uid, account.gid]) {
    if (!Number.isInteger(id) || id < 1) throw new Error(`launchAsAccount: refusing to run as id ${id}`);
  }
  return {
    file: '/bin/sh',
    args: ['-c', LAUNCHER, 'nodemgr-launch', String(account.uid), String(account.gid), String(cgroupProcFiles.length), ...cgroupProcFiles, ...argv],
  };
}

/** A login's PATH; it holds what the launcher runs (setpriv, tty, chown), and never the daemon's own. */
export const LAUNCH_PATH = '/usr/local/bin:/usr/bin:/bin';

/** An account as a login sees it. */
export interface LoginAccount {
  readonly name: string;
  readonly home: string;
  readonly shell: string;
}

/** The environment a login of the account starts with: nothing of the daemon's own. */
export function loginEnvironment(account: LoginAccount): Record<string, string> {
  return { HOME: account.home, USER: account.name, LOGNAME: account.name, SHELL: account.shell, PATH: LAUNCH_PATH, LANG: 'C.UTF-8' };
}

/** What a session runs (a login shell, a command, a guest's console): a program with its arguments, in a directory. */
export interface SessionLaunch {
  readonly file: string;
  readonly args: readonly string[];
  readonly cwd: string;
}
