// What runs for a sliver's ssh session: its login shell or one command, as the sliver, inside its
// cgroups (launch.ts), with a terminal from node-pty or with plain pipes. The daemon keeps nothing
// of the session but the process; output is passed on only as fast as the client reads it.
import { spawn as spawnProcess, type ChildProcess } from 'node:child_process';
import type { IPty } from 'node-pty';
import { launchAsAccount, loginEnvironment, type SessionLaunch } from '../host/launch.js';
import { describeError } from '../util/errors.js';

export interface SessionAccount {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
  readonly shell: string;
}

export interface TerminalRequest {
  readonly term: string;
  readonly cols: number;
  readonly rows: number;
}

/** Client variables passed on, as OpenSSH's sshd does by default (AcceptEnv LANG LC_*). */
export function acceptedClientVariable(name: string): boolean {
  return name === 'LANG' || /^LC_[A-Z_]+$/.test(name);
}

/** An ssh login's environment, as sshd gives it: nothing of the daemon's own. */
export function sshLoginEnvironment(
  account: SessionAccount,
  connection: { clientAddress: string; clientPort: number; serverAddress: string; serverPort: number },
  clientVariables: ReadonlyMap<string, string>,
  terminal: TerminalRequest | null,
): Record<string, string> {
  const env: Record<string, string> = {
    ...loginEnvironment(account),
    SSH_CLIENT: `${connection.clientAddress} ${connection.clientPort} ${connection.serverPort}`,
    SSH_CONNECTION: `${connection.clientAddress} ${connection.clientPort} ${connection.serverAddress} ${connection.serverPort}`,
  };
  for (const [name, value] of clientVariables) if (acceptedClientVariable(name)) env[name] = value;
  if (terminal) env['TERM'] = terminal.term || 'xterm';
  return env;
}

/** The command line of a session: the login shell, or the shell running one command. */
export function sessionArgv(account: SessionAccount, command: string | null): string[] {
  return command === null ? [account.shell, '-l'] : [account.shell, '-c', command];
}

/** A terminal size from the client: absurd or missing values get the usual 80x24. */
const dimension = (n: number, fallback: number, max: number) => (Number.isInteger(n) && n > 0 ? Math.min(n, max) : fallback);

type PtyModule = typeof import('node-pty');
let ptyModule: Promise<PtyModule | Error> | null = null;

/**
 * node-pty, loaded at the first terminal session: it is an optional dependency (a native build),
 * and a node where it could not be built still serves commands over ssh.
 */
function loadPty(): Promise<PtyModule | Error> {
  ptyModule ??= import('node-pty').then(
    (m) => ((m as { default?: PtyModule }).default ?? m),
    (error: unknown) => new Error(`terminal sessions are not available on this node: node-pty is not built (${describeError(error).split('\n')[0]})`),
  );
  return ptyModule;
}

export type { SessionLaunch } from '../host/launch.js';

/** A Unix sliver's session: its shell or one command, as the account, inside its cgroups. */
export function accountLaunch(account: SessionAccount, cgroupProcFiles: readonly string[], command: string | null): SessionLaunch {
  return { ...launchAsAccount(account, cgroupProcFiles, sessionArgv(account, command)), cwd: account.home };
}

export async function startTerminalSession(launch: SessionLaunch, env: Record<string, string>, terminal: TerminalRequest): Promise<IPty> {
  const pty = await loadPty();
  if (pty instanceof Error) throw pty;
  return pty.spawn(launch.file, [...launch.args], {
    name: terminal.term || 'xterm',
    cols: dimension(terminal.cols, 80, 1000),
    rows: dimension(terminal.rows, 24, 500),
    cwd: launch.cwd,
    env,
  });
}

export function startPipedSession(launch: SessionLaunch, env: Record<string, string>): ChildProcess {
  return spawnProcess(launch.file, [...launch.args], { cwd: launch.cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
}
