// A task's job as the guest's agent runs it, and its end in the task's words. Pure.
//
// The agent starts one program with exact arguments and environment and no shell. The working
// directory and the Input/Output/Error redirections need one, so the program is /bin/sh with a
// fixed script that takes everything as positional parameters and then execs the job: the job
// replaces the shell (its exit status and its death by a signal are the job's own), it gets no
// variable of the script's, and its path is never searched for (exec "$@" with a path that holds a
// slash runs exactly that file).
import { constants } from 'node:os';
import type { PosixApplication } from './xsdl-types.js';

export interface JobRequest {
  readonly path: string;
  readonly args: readonly string[];
  readonly env: readonly string[];
}

/**
 * $1 the working directory, $2 $3 $4 the files of stdin, stdout and stderr, then the executable and
 * its arguments. 126: the directory cannot be entered (the shell's own code for "found but cannot
 * run"). The shell exports PWD and OLDPWD of its own; they are unset so that the job's environment
 * is the document's alone (a PWD the document gives is the working directory, as a shell makes it).
 */
function jobScript(givesPwd: boolean): string {
  return `cd -- "$1" || exit 126; unset OLDPWD${givesPwd ? '' : ' PWD'}; i=$2 o=$3 e=$4; shift 4; exec "$@" <"$i" >"$o" 2>"$e"`;
}

/** What the guest's agent runs for the task's application. */
export function jobRequest(app: PosixApplication): JobRequest {
  // The parser refuses a relative executable; a name without a slash would be looked up in PATH.
  if (!app.executable.startsWith('/')) throw new Error(`the executable ${JSON.stringify(app.executable)} is not an absolute path`);
  return {
    path: '/bin/sh',
    args: ['-c', jobScript(app.environment.some((v) => v.name === 'PWD')), 'nodemgr-job', app.workingDirectory ?? '/', app.input ?? '/dev/null', app.output ?? '/dev/null',
      app.error ?? '/dev/null', app.executable, ...app.arguments],
    env: app.environment.map((v) => `${v.name}=${v.value}`),
  };
}

/** The guest's directories a job's files need before it starts: the working directory, and those of its outputs. */
export function jobDirectories(app: PosixApplication): string[] {
  const parent = (path: string) => path.slice(0, path.lastIndexOf('/')) || '/';
  const dirs = new Set<string>();
  if (app.workingDirectory !== null) dirs.add(app.workingDirectory);
  for (const file of [app.output, app.error]) if (file !== null) dirs.add(parent(file));
  dirs.delete('/');
  return [...dirs].sort();
}

const SIGNAL_NAMES = new Map<number, string>(Object.entries(constants.signals).map(([name, number]) => [number, name]));

/** "SIGKILL" for 9; "signal 99" for a number Linux does not name. */
export function signalName(signal: number): string {
  return SIGNAL_NAMES.get(signal) ?? `signal ${signal}`;
}
