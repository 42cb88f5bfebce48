// The keeper of one program run in a container (lxc-agent.ts): a small detached process, outside
// the daemon, that starts the program in the container's namespaces, waits for it, and writes its
// exit where the daemon (this one or the next) reads it. It is run as a script:
//
//   node lxc-exec-keeper.js <request file>
//
// The request (JSON, KeeperRequest) is read and removed at once: it may hold the program's
// environment. The keeper prints one line on its stdout, {"pid": N} (the program's pid in the
// container) or {"error": "..."}, and closes it; the daemon waits for that line only.
//
// How the program is started, and why: nsenter enters the container's pid namespace and forks
// there (a process only joins a pid namespace by being forked into it); its child is the host's
// /bin/sh, still in the host's mount namespace, which
//   1. writes its own pid ($$, as the container numbers it) to fd 3, the keeper's pipe: the
//      program will have this pid, and it is known before the program runs, so even a program
//      that ends at once has its pid told;
//   2. joins the container's cgroups (its limits bind the program as they bind the container);
//   3. execs env -i with exactly the request's environment, which execs nsenter again to enter
//      the container's other namespaces and root (no fork: the pid namespace is entered
//      already), which execs the program. One process all along, with the pid of step 1.
// The outer nsenter waits for it, and ends as it ended: with its exit code, or killed by the same
// signal (util-linux re-raises a child's fatal signal), which is what the keeper records. A
// container that stops kills the program; the keeper records that as SIGKILL.
import { spawn } from 'node:child_process';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';

export interface KeeperRequest {
  /** The container's init, as the host numbers it. */
  readonly init: number;
  /** The cgroup.procs files of the container's groups, as the host sees them. */
  readonly cgroupProcs: readonly string[];
  readonly path: string;
  readonly args: readonly string[];
  readonly env: readonly string[];
  /** Where the keeper writes <pid>.keeper while it waits and <pid>.exit when the program ended. */
  readonly recordsDir: string;
}

/** The files a keeper writes for the program with `pid`. */
export const keeperFiles = (recordsDir: string, pid: number) => ({
  keeper: join(recordsDir, `${pid}.keeper`),
  exit: join(recordsDir, `${pid}.exit`),
});

const NSENTER = '/usr/bin/nsenter';
const ENV = '/usr/bin/env';

// $1: how many cgroup.procs files follow; then the files; then the command.
const LAUNCH = [
  'echo $$ >&3 && exec 3>&-',
  'n=$1; shift',
  'while [ "$n" -gt 0 ]; do echo 0 >"$1" || exit 125; shift; n=$((n - 1)); done',
  'exec "$@"',
].join('\n');

/** nsenter's argument list for the request. Pure. */
export function keeperCommand(request: KeeperRequest): string[] {
  const target = ['--target', String(request.init)];
  return [
    ...target, '--pid', '--', '/bin/sh', '-c', LAUNCH, 'nodemgr-exec', String(request.cgroupProcs.length), ...request.cgroupProcs,
    ENV, '-i', '--', ...request.env,
    NSENTER, ...target, '--mount', '--uts', '--ipc', '--net', '--cgroup', '--root', '--', request.path, ...request.args,
  ];
}

function writeAtomically(file: string, text: string): void {
  const temp = `${file}.${process.pid}`;
  writeFileSync(temp, text, { mode: 0o600 });
  renameSync(temp, file);
}

function tell(message: object): void {
  try {
    writeFileSync(1, `${JSON.stringify(message)}\n`);
  } catch {
    // The daemon stopped waiting (or stopped): the files say the rest.
  }
}

function keep(requestFile: string): void {
  const request = JSON.parse(readFileSync(requestFile, 'utf8')) as KeeperRequest;
  rmSync(requestFile, { force: true });
  const child = spawn(NSENTER, keeperCommand(request), {
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  });
  let pidText = '';
  let pid: number | null = null;
  const pipe = child.stdio[3]!;
  // The line comes before the program runs; the pipe itself stays open as long as nsenter does.
  pipe.on('data', (data: Buffer) => {
    if (pid !== null) return;
    pidText += data.toString();
    if (!pidText.includes('\n')) return;
    const n = Number(pidText.split('\n')[0]!.trim());
    if (!Number.isInteger(n) || n < 1) return;
    pid = n;
    // An earlier program of the same pid is forgotten before this one can end.
    rmSync(keeperFiles(request.recordsDir, pid).exit, { force: true });
    writeAtomically(keeperFiles(request.recordsDir, pid).keeper, JSON.stringify({ keeper: process.pid, requestFile }));
    tell({ pid });
    pipe.destroy();
  });
  child.on('error', (error) => tell({ error: `cannot run ${NSENTER}: ${error.message}` }));
  child.on('close', (code, signal) => {
    if (pid === null) {
      tell({ error: `${NSENTER} could not enter the container (exit code ${code}, signal ${signal})` });
      return;
    }
    const files = keeperFiles(request.recordsDir, pid);
    writeAtomically(files.exit, JSON.stringify({ exitCode: code, signal: signal === null ? null : constants.signals[signal] }));
    rmSync(files.keeper, { force: true });
  });
}

// Run as a script (not when imported for its types and helpers).
if (process.argv[1] !== undefined && /lxc-exec-keeper\.[jt]s$/.test(process.argv[1])) {
  // Detached from the daemon; a signal for the daemon's group never reaches it.
  for (const signal of ['SIGHUP', 'SIGINT', 'SIGTERM'] as const) process.on(signal, () => undefined);
  keep(process.argv[2] ?? '');
}
