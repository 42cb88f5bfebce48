// Runs a host command with an argument array (never through a shell) and reports a failure with
// the command line, its exit status and what it wrote to stderr. Shared by every host adapter.
import { spawn } from 'node:child_process';
import { describeError } from '../util/errors.js';

export interface CommandOptions {
  /** Written to the command's stdin, which is then closed; without it stdin is /dev/null. */
  input?: string;
  /** The command is killed (SIGKILL) after this long; default 60 s. */
  timeoutMs?: number;
  /** The whole environment of the command; default the daemon's own. */
  env?: NodeJS.ProcessEnv;
  uid?: number;
  gid?: number;
  cwd?: string;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
}

const DEFAULT_TIMEOUT_MS = 60_000;
// Enough for any tool we run; a command that writes more is misbehaving and is stopped.
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

export class CommandError extends Error {
  override readonly name = 'CommandError';
  constructor(
    message: string,
    readonly file: string,
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
    readonly stdout: string,
    readonly stderr: string,
    /** The program is not installed (or not on the command's PATH). */
    readonly missing = false,
  ) {
    super(message);
  }
}

/** The command as a person would type it, for messages: arguments with odd characters are quoted. */
export function commandLine(file: string, args: readonly string[]): string {
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export function runCommand(file: string, args: string[], opts: CommandOptions = {}): Promise<CommandResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const line = commandLine(file, args);
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(file, args, {
        env: opts.env ?? process.env,
        uid: opts.uid,
        gid: opts.gid,
        cwd: opts.cwd,
        stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        windowsHide: true,
      });
    } catch (err) {
      // spawn throws synchronously for invalid arguments (e.g. a NUL byte in an argument).
      reject(new CommandError(`${line}: ${describeError(err)}`, file, args, null, null, '', ''));
      return;
    }
    const out: Buffer[] = [];
    const errOut: Buffer[] = [];
    let size = 0;
    let overflow = false;
    let timedOut = false;
    let spawnError: NodeJS.ErrnoException | null = null;

    const collect = (into: Buffer[]) => (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_OUTPUT_BYTES) {
        if (!overflow) {
          overflow = true;
          child.kill('SIGKILL');
        }
        return;
      }
      into.push(chunk);
    };
    child.stdout!.on('data', collect(out));
    child.stderr!.on('data', collect(errOut));
    child.on('error', (err) => {
      spawnError = err;
    });
    if (opts.input !== undefined && child.stdin) {
      // A command that exits without reading its input makes the write fail with EPIPE; its exit
      // status says what went wrong, not the broken pipe.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);

    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(errOut).toString('utf8');
      if (!spawnError && !timedOut && !overflow && code === 0) {
        resolve({ stdout, stderr });
        return;
      }
      let why: string;
      if (spawnError) why = `could not run: ${spawnError.message}`;
      else if (timedOut) why = `timed out after ${timeoutMs} ms`;
      else if (overflow) why = `wrote more than ${MAX_OUTPUT_BYTES} bytes of output`;
      else if (signal) why = `killed by ${signal}`;
      else why = `exit code ${code}`;
      const detail = stderr.trim();
      reject(
        new CommandError(
          `${line} failed (${why})${detail ? `: ${detail}` : ''}`, file, args, code, signal, stdout, stderr,
          spawnError?.code === 'ENOENT',
        ),
      );
    });
  });
}
