// A virtual machine's agent: QEMU's guest agent (qemu-ga, in the guest's image) on the
// virtio-serial channel org.qemu.guest_agent.0, reached through libvirt, which is the channel's one
// client: `virsh qemu-agent-command` (the libvirt binding has no call for it).
//
// Files travel in base64 chunks of guest-file-write and guest-file-read. A write's chunk is 64 KiB:
// the command is one argument of virsh, and Linux takes at most 128 KiB in one argument
// (MAX_ARG_STRLEN), which 64 KiB in base64 (87,384 characters) and the JSON around it fit and the
// next power of two does not. A read's answer comes back on virsh's output, with no such limit: its
// chunk is 512 KiB, a reply of 700 KB, well within libvirt's 4 MiB for one string, and few enough
// calls that virsh's start (~0.1 s each) does not dominate. Each call is bounded by libvirt's
// --timeout, so a guest that hangs fails the call instead of holding it.
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CommandError, runCommand } from '../../host/exec.js';
import { describeError } from '../../util/errors.js';
import {
  AgentError, checkExecRequest, checkMode, execRecords, retryUntil, seconds,
  type ExecRecords, type ExecRequest, type ExecState, type GuestAgent,
} from './guest-agent.js';

export const WRITE_CHUNK_BYTES = 64 * 1024;
export const READ_CHUNK_BYTES = 512 * 1024;
/** How long one agent command may take (libvirt's --timeout), unless the call says otherwise. */
const COMMAND_TIMEOUT_S = 30;
/** How long a helper program (mkdir -p, chmod) may run. */
const HELPER_TIMEOUT_MS = 30_000;

/** What libvirt said about a failed agent command, without virsh's "error: " prefixes. Pure. */
export function agentFailure(stderr: string): string {
  const text = stderr.split('\n').map((l) => l.replace(/^error:\s*/, '').trim()).filter((l) => l !== '' && !/^failed to /.test(l)).join('; ');
  // "unable to execute QEMU agent command 'x': Guest agent command failed, error was '...'"
  const inner = /error was '(.*)'$/s.exec(text)?.[1] ?? /unable to execute QEMU agent command '[^']+': (.*)$/s.exec(text)?.[1];
  return inner ?? text;
}

export function createQemuAgent(uri: string, name: string, recordsDir: string): GuestAgent {
  const records: ExecRecords = execRecords(recordsDir);

  /** One agent command; its "return". */
  const command: AgentCommand = async <T>(execute: string, args: Record<string, unknown> | null, timeoutS = COMMAND_TIMEOUT_S): Promise<T> => {
    const json = JSON.stringify(args === null ? { execute } : { execute, arguments: args });
    try {
      const { stdout } = await runCommand('virsh', ['-q', '-c', uri, 'qemu-agent-command', name, json, '--timeout', String(timeoutS)], {
        timeoutMs: (timeoutS + 30) * 1000,
      });
      return (JSON.parse(stdout) as { return: T }).return;
    } catch (error) {
      const why = error instanceof CommandError ? agentFailure(error.stderr) : describeError(error);
      if (/not responding|not connected|not available/i.test(why)) {
        throw new AgentError(`the guest agent of ${name} did not answer ${execute} within ${timeoutS} s (${why})`);
      }
      if (/not running/i.test(why)) throw new AgentError(`the guest agent of ${name} cannot answer ${execute}: ${name} is not running`);
      throw new AgentError(`the guest agent of ${name} failed ${execute}: ${why}`);
    }
  };

  const startProgram = async (request: ExecRequest): Promise<number> => {
    checkExecRequest(name, request);
    // env always given, even empty: without it qemu-ga passes its own environment on.
    const started = await command<{ pid: number }>('guest-exec', {
      path: request.path, arg: [...request.args], env: [...request.env], 'capture-output': false,
    });
    return started.pid;
  };

  const programState = async (pid: number): Promise<ExecState> => {
    const s = await command<{ exited: boolean; exitcode?: number; signal?: number }>('guest-exec-status', { pid });
    return s.exited ? { exited: true, exitCode: s.exitcode ?? null, signal: s.signal ?? null } : { exited: false };
  };

  /** Runs a helper program to its end; AgentError unless it exits 0. */
  const runHelper = async (request: ExecRequest): Promise<void> => {
    const pid = await startProgram(request);
    const deadline = Date.now() + HELPER_TIMEOUT_MS;
    for (;;) {
      const state = await programState(pid);
      if (state.exited) {
        if (state.exitCode === 0) return;
        throw new AgentError(`in ${name}, ${[request.path, ...request.args].join(' ')} failed (exit code ${state.exitCode}, signal ${state.signal})`);
      }
      if (Date.now() > deadline) throw new AgentError(`in ${name}, ${request.path} did not finish within ${seconds(HELPER_TIMEOUT_MS)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  return {
    async ping(timeoutMs) {
      // An agent that is not connected yet (the guest still booting) fails at once: asked again
      // until the time is up, each time for at most what is left of it.
      try {
        await retryUntil(timeoutMs, 500, (remaining) => command('guest-ping', null, Math.max(1, Math.min(5, Math.floor(remaining / 1000)))));
      } catch (error) {
        throw new AgentError(`the guest agent of ${name} did not answer guest-ping within ${seconds(timeoutMs)} (${describeError(error)})`);
      }
    },

    async exec(request) {
      const pid = await startProgram(request);
      await records.forget(pid);
      return pid;
    },

    async execStatus(pid) {
      const recorded = await records.read(pid);
      if (recorded) return recorded;
      const state = await programState(pid).catch((error: unknown) => {
        if (/invalid parameter 'pid'/i.test(describeError(error))) {
          throw new AgentError(`the guest agent of ${name} knows no program with pid ${pid} (not started by exec since the guest booted)`);
        }
        throw error;
      });
      // qemu-ga forgets a program once it told its exit: kept here for every later question.
      if (state.exited) await records.write(pid, state);
      return state;
    },

    putFile: (hostPath, guestPath, mode) => putFileByAgent({ name, command, runHelper }, hostPath, guestPath, mode),
    getFile: (guestPath, hostPath, maxBytes) => getFileByAgent({ name, command, runHelper }, guestPath, hostPath, maxBytes),
  };
}

/** One agent command; its "return". */
type AgentCommand = <T>(execute: string, args: Record<string, unknown> | null, timeoutS?: number) => Promise<T>;

/** What the file calls need of the agent. */
interface FileContext {
  readonly name: string;
  readonly command: AgentCommand;
  /** Runs a helper program to its end; AgentError unless it exits 0. */
  readonly runHelper: (request: ExecRequest) => Promise<void>;
}

/** Runs `task` on an open guest file, which is closed after it however it ends. */
async function withGuestFile<T>(agent: FileContext, path: string, mode: 'r' | 'w', task: (handle: number) => Promise<T>): Promise<T> {
  const { name, command } = agent;
  const handle = await command<number>('guest-file-open', { path, mode }).catch((error: unknown) => {
    if (mode === 'r' && /no such file/i.test(describeError(error))) throw new AgentError(`getFile from ${name}: ${path} is missing`);
    throw error;
  });
  try {
    return await task(handle);
  } finally {
    await command('guest-file-close', { handle }).catch(() => undefined);
  }
}

async function putFileByAgent(agent: FileContext, hostPath: string, guestPath: string, mode: number | undefined): Promise<void> {
  const { name, command, runHelper } = agent;
  checkMode(name, mode);
  if (!guestPath.startsWith('/')) throw new AgentError(`putFile in ${name} refused: ${guestPath} is not an absolute path`);
  const source = await open(hostPath, 'r').catch((error: unknown) => {
    throw new AgentError(`putFile to ${name}: cannot read ${hostPath}: ${describeError(error)}`);
  });
  try {
    await runHelper({ path: '/bin/mkdir', args: ['-p', '--', dirname(guestPath)], env: [] });
    await withGuestFile(agent, guestPath, 'w', async (handle) => {
      const buffer = Buffer.alloc(WRITE_CHUNK_BYTES);
      for (;;) {
        const { bytesRead } = await source.read(buffer, 0, WRITE_CHUNK_BYTES, null);
        if (bytesRead === 0) break;
        const written = await command<{ count: number }>('guest-file-write', { handle, 'buf-b64': buffer.toString('base64', 0, bytesRead) });
        if (written.count !== bytesRead) throw new AgentError(`putFile to ${name}: ${guestPath} took ${written.count} of ${bytesRead} bytes`);
      }
    });
    if (mode !== undefined) await runHelper({ path: '/bin/chmod', args: [mode.toString(8).padStart(4, '0'), '--', guestPath], env: [] });
  } finally {
    await source.close();
  }
}

async function getFileByAgent(agent: FileContext, guestPath: string, hostPath: string, maxBytes: number): Promise<void> {
  const { name, command } = agent;
  const temp = `${hostPath}.${randomBytes(4).toString('hex')}.part`;
  const target = await open(temp, 'wx', 0o600);
  try {
    await withGuestFile(agent, guestPath, 'r', async (handle) => {
      const end = await command<{ position: number }>('guest-file-seek', { handle, offset: 0, whence: 'end' });
      if (end.position > maxBytes) throw new AgentError(`getFile from ${name}: ${guestPath} has ${end.position} bytes, more than the ${maxBytes} bytes allowed`);
      await command('guest-file-seek', { handle, offset: 0, whence: 'set' });
      let total = 0;
      for (;;) {
        const chunk = await command<{ count: number; 'buf-b64': string; eof: boolean }>('guest-file-read', { handle, count: READ_CHUNK_BYTES });
        total += chunk.count;
        // It may have grown since its size was read.
        if (total > maxBytes) throw new AgentError(`getFile from ${name}: ${guestPath} has more than the ${maxBytes} bytes allowed`);
        if (chunk.count > 0) await target.write(Buffer.from(chunk['buf-b64'], 'base64'));
        if (chunk.eof || chunk.count === 0) break;
      }
    });
    await target.close();
    await rename(temp, hostPath);
  } catch (error) {
    await target.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw error;
  }
}
