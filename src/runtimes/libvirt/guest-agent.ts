// The in-guest agent: what nodemgr can do inside a running guest without logging into it (XenBEE's
// xbeinstd ran a task's program, staged its files and reported its exit; here the agent is QEMU's
// packaged guest agent in a virtual machine, and nodemgr itself entering the namespaces of a
// container). One interface for both kinds (qemu-agent.ts, lxc-agent.ts), so that the task engine
// runs a job the same way in either.
//
// A job is killed by running the guest's own kill on its pid: exec(killRequest(pid)) (a container
// is entered for it like any other program), then execStatus(pid) reports the signal.
//
// Exits are kept on the host (exec-records), so that execStatus answers the same every time it is
// asked, across daemon restarts: qemu-ga forgets a program once it reported its exit.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** What failed in the guest or on the way to its agent; the message says which guest and which call. */
export class AgentError extends Error {
  override readonly name = 'AgentError';
}

export interface ExecRequest {
  /** An absolute path: no PATH search, no shell. */
  readonly path: string;
  readonly args: readonly string[];
  /** "NAME=value"; the program's whole environment. */
  readonly env: readonly string[];
}

export type ExecState =
  | { readonly exited: false }
  | { readonly exited: true; readonly exitCode: number | null; readonly signal: number | null };

export interface GuestAgent {
  /** Resolves once the agent answers guest-ping; AgentError after timeoutMs. */
  ping(timeoutMs: number): Promise<void>;
  /** Starts the program at `path` (no PATH search, no shell) with exactly args and env; returns its pid in the guest. */
  exec(request: ExecRequest): Promise<number>;
  /** The state of a program started by exec; keeps working after the daemon restarts (the pid is persisted by the caller). */
  execStatus(pid: number): Promise<ExecState>;
  /** Copies a host file into the guest (parent directories made), with mode if given; replaces what is there. */
  putFile(hostPath: string, guestPath: string, mode?: number): Promise<void>;
  /** Copies a guest file out to a host file; AgentError if it is larger than maxBytes or missing. */
  getFile(guestPath: string, hostPath: string, maxBytes: number): Promise<void>;
}

/** What kills a job: the guest's kill(1), SIGKILL to its pid. */
export function killRequest(pid: number): ExecRequest {
  return { path: '/bin/kill', args: ['-KILL', String(pid)], env: [] };
}

/** Why the request cannot be run as asked, or null. Pure. */
export function execRequestProblem(request: ExecRequest): string | null {
  const nul = (s: string) => s.includes('\0');
  if (!request.path.startsWith('/') || nul(request.path)) return `program path ${JSON.stringify(request.path)} is not an absolute path`;
  if (request.args.some(nul)) return 'an argument holds a NUL character';
  for (const entry of request.env) {
    const at = entry.indexOf('=');
    if (at < 1 || nul(entry)) return `environment entry ${JSON.stringify(entry)} is not NAME=value`;
  }
  return null;
}

/** Throws an AgentError naming the guest when the request cannot be run as asked. */
export function checkExecRequest(guest: string, request: ExecRequest): void {
  const problem = execRequestProblem(request);
  if (problem !== null) throw new AgentError(`exec in ${guest} refused: ${problem}`);
}

/** Whether `mode` is a file mode a putFile can set (permission bits, set-id and sticky). Pure. */
export function checkMode(guest: string, mode: number | undefined): void {
  if (mode !== undefined && !(Number.isInteger(mode) && mode >= 0 && mode <= 0o7777)) {
    throw new AgentError(`putFile in ${guest} refused: mode ${mode} is not a file mode (0 to 0o7777)`);
  }
}

/** The seconds of a timeout, as messages give them. */
export const seconds = (ms: number) => `${ms / 1000} s`;

/** The guest's directory of agent state on the host (under its guest directory, gone with it). */
export const agentDir = (guestDirOfGuest: string) => join(guestDirOfGuest, 'agent');

/**
 * The exits of programs started by exec, one JSON file per guest pid. Kept until the guest boots
 * again (its pids start over then) or the pid is given to a new program.
 */
export interface ExecRecords {
  read(pid: number): Promise<ExecState | null>;
  write(pid: number, state: ExecState & { exited: true }): Promise<void>;
  /** Forgets the pid's earlier program (a new one has its number now). */
  forget(pid: number): Promise<void>;
  /** Forgets everything (a new boot). */
  clear(): Promise<void>;
}

export function execRecords(dir: string): ExecRecords {
  const file = (pid: number) => join(dir, `${pid}.exit`);
  return {
    async read(pid) {
      const text = await readFile(file(pid), 'utf8').catch(() => null);
      if (text === null) return null;
      const saved = JSON.parse(text) as { exitCode: number | null; signal: number | null };
      return { exited: true, exitCode: saved.exitCode, signal: saved.signal };
    },
    async write(pid, state) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const temp = `${file(pid)}.${randomBytes(4).toString('hex')}`;
      await writeFile(temp, JSON.stringify({ exitCode: state.exitCode, signal: state.signal }), { mode: 0o600 });
      await rename(temp, file(pid));
    },
    forget: (pid) => rm(file(pid), { force: true }),
    clear: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Waits until `ask` answers or timeoutMs passes; the last failure is rethrown then. */
export async function retryUntil<T>(timeoutMs: number, pauseMs: number, ask: (remainingMs: number) => Promise<T>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await ask(Math.max(deadline - Date.now(), 1));
    } catch (error) {
      if (Date.now() + pauseMs >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
  }
}
