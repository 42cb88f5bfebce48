// A session's bytes between the ssh channel and what serves it: a terminal (node-pty), a process's
// pipes, or the API for one request. Output goes only as fast as the client reads it.
import { constants } from 'node:os';
import type { ServerChannel } from 'ssh2';
import { encodeFault } from '../api/codec.js';
import { FaultCode } from '../api/faults.js';
import { describeError } from '../util/errors.js';
import { startPipedSession, startTerminalSession, type SessionLaunch, type TerminalRequest } from './sessions.js';

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, number]) => [number, name.replace(/^SIG/, '')]));

/** One session's channel and how it ends. */
export interface SessionIo {
  readonly channel: ServerChannel;
  /** Keeps the connection from counting as idle. */
  readonly touch: () => void;
  /** Ends the session (once) with an exit status, or a signal's name, and a message for the client. */
  readonly finish: (status: number | string, message?: string) => void;
  readonly ended: () => boolean;
}

/**
 * The signals an exit-signal message may name: RFC 4254's list, the only names ssh2 sends (it
 * throws on any other, and a sliver's command killed by SIGBUS or SIGXCPU would take the daemon
 * down with it).
 */
const SSH_SIGNALS: ReadonlySet<string> = new Set(['ABRT', 'ALRM', 'FPE', 'HUP', 'ILL', 'INT', 'KILL', 'PIPE', 'QUIT', 'SEGV', 'TERM', 'USR1', 'USR2']);

/**
 * How a session ends on the wire: an exit status, or a signal ssh can name; another signal as the
 * shell reports it, status 128 + its number (SIGBUS: 135). Pure.
 */
export function sessionEnd(status: number | string): { status: number } | { signal: string } {
  if (typeof status === 'number') return { status };
  if (SSH_SIGNALS.has(status)) return { signal: status };
  const number = (constants.signals as Record<string, number | undefined>)[`SIG${status}`];
  return { status: number === undefined ? 1 : 128 + number };
}

/** Says `message` on stderr (if any), the exit status or signal, and closes the channel. */
export function endChannel(channel: ServerChannel, status: number | string, message?: string): void {
  if (message) channel.stderr.write(message);
  const end = sessionEnd(status);
  if ('signal' in end) channel.exit(end.signal, false, '');
  else channel.exit(end.status);
  channel.end();
}

/** Bytes of a terminal's input that the daemon holds at most before it stops reading the client's. */
const TERMINAL_INPUT_HIGH = 256 * 1024;
const TERMINAL_INPUT_LOW = 64 * 1024;
const TERMINAL_INPUT_POLL_MS = 20;

/**
 * The bytes written to a terminal that its program has not taken yet. node-pty queues them (and
 * retries as the kernel takes them) without a way to ask: its write queue is read directly, and
 * where a version of node-pty has none, nothing is counted (the input then goes unbounded, as with
 * node-pty alone).
 */
function terminalInputQueue(pty: object): () => number {
  const queue = (pty as { _writeStream?: { _writeQueue?: unknown } })._writeStream?._writeQueue;
  if (!Array.isArray(queue)) return () => 0;
  const tasks = queue as { buffer: Buffer; offset: number }[];
  return () => {
    let bytes = 0;
    for (const task of tasks) bytes += task.buffer.length - task.offset;
    return bytes;
  };
}

/**
 * The end of a session whose client went first: its programs are sent SIGHUP, as sshd's are when
 * their terminal goes, and the session ends there (its slot given back) whether they stop or not.
 */
const CLIENT_GONE = 'HUP';

/** Runs `launch` on a terminal; `onResize` receives what the client's window changes call. */
export async function connectTerminal(
  io: SessionIo, launch: SessionLaunch, env: Record<string, string>, terminal: TerminalRequest,
  onResize: (resize: (cols: number, rows: number) => void) => void,
): Promise<void> {
  const { channel, touch, finish } = io;
  let pty;
  try {
    pty = await startTerminalSession(launch, env, terminal);
  } catch (error) {
    finish(1, `nodemgr: ${describeError(error)}; a command without a terminal (ssh -T) still works\r\n`);
    return;
  }
  onResize((cols, rows) => {
    if (cols > 0 && rows > 0) pty.resize(Math.min(cols, 1000), Math.min(rows, 500));
  });
  // A client that stops reading stops its own shell's output, and nobody else's.
  pty.onData((data) => {
    touch();
    if (!channel.write(data)) {
      pty.pause();
      channel.once('drain', () => pty.resume());
    }
  });
  const pending = terminalInputQueue(pty);
  let exited = false;
  let held = false;
  channel.on('data', (data: Buffer) => {
    touch();
    pty.write(data.toString('binary'));
    // A program that does not read its terminal must not make the daemon hold all a client sends:
    // the channel stops taking input (ssh's window closes) until the terminal has taken most of it.
    if (!held && pending() > TERMINAL_INPUT_HIGH) {
      held = true;
      channel.pause();
      const check = setInterval(() => {
        if (exited || io.ended() || pending() < TERMINAL_INPUT_LOW) {
          clearInterval(check);
          held = false;
          channel.resume();
        }
      }, TERMINAL_INPUT_POLL_MS);
    }
  });
  pty.onExit(({ exitCode, signal }) => {
    exited = true;
    finish(signal ? (SIGNAL_NAMES.get(signal) ?? 'KILL') : exitCode);
  });
  channel.on('close', () => {
    if (io.ended()) return;
    pty.kill('SIGHUP');
    finish(CLIENT_GONE);
  });
}

/** Runs `launch` with plain pipes (a command, or a shell without a terminal). */
export function connectPipes(io: SessionIo, launch: SessionLaunch, env: Record<string, string>): void {
  const { channel, touch, finish } = io;
  const child = startPipedSession(launch, env);
  child.stdout!.on('data', touch);
  child.stdout!.pipe(channel, { end: false });
  child.stderr!.pipe(channel.stderr, { end: false });
  channel.on('data', touch);
  channel.pipe(child.stdin!);
  child.stdin!.on('error', () => undefined); // the command may exit without reading its input
  child.on('error', (error) => finish(1, `nodemgr: ${error.message}\r\n`));
  child.on('close', (code, signal) => finish(signal ? signal.replace(/^SIG/, '') : (code ?? 1)));
  channel.on('close', () => {
    if (io.ended()) return;
    child.kill('SIGHUP');
    // What ignores the hangup runs on in the sliver, as a nohup'd program would, but writes to
    // closed pipes: it neither waits for a reader that is gone nor keeps the session open.
    child.stdin?.destroy();
    child.stdout?.destroy();
    child.stderr?.destroy();
    finish(CLIENT_GONE);
  });
}

/** One XML-RPC request on stdin, `call`'s answer on stdout, as forward_api_calls does. */
export function answerApiRequest(io: SessionIo, maxRequestBytes: number, call: (body: Buffer) => Promise<string>): void {
  const { channel, touch, finish } = io;
  const chunks: Buffer[] = [];
  let size = 0;
  let refused = false;
  channel.on('data', (chunk: Buffer) => {
    touch();
    if (refused) return;
    size += chunk.length;
    if (size > maxRequestBytes) {
      refused = true;
      chunks.length = 0;
      // As forward_api_calls answers it: fault 102 and exit status 2.
      channel.write(encodeFault(FaultCode.invalidArgument, `request too large: more than ${maxRequestBytes} bytes`));
      finish(2);
      return;
    }
    chunks.push(chunk);
  });
  channel.on('end', () => {
    if (refused) return;
    call(Buffer.concat(chunks, size)).then((answer) => {
      channel.write(answer);
      finish(0);
    }).catch((error: unknown) => finish(1, `nodemgr: ${describeError(error)}\n`));
  });
}
