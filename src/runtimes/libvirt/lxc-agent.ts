// A container's agent: there is no qemu-ga in a container, and none is needed. Its programs are
// started by nodemgr entering the container's namespaces (nsenter) from a detached keeper process
// (lxc-exec-keeper.ts) that records their exit on the host, so that execStatus answers after the
// daemon restarted; a node process per running program is what that costs, and it needs nothing
// of the container's image. Its files are copied through the container's root as the host
// mounts it (lxc-root.ts), every path resolved inside it (lxc-guest-paths.ts).
//
// The container's init is found in libvirt's state of the running container (<init pid=.../>),
// or as its controller's child when libvirt missed it, checked to be pid 1 of a pid namespace of
// its own. ping answers once that init runs.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeError } from '../../util/errors.js';
import {
  AgentError, checkExecRequest, checkMode, execRecords, retryUntil, seconds, type ExecState, type GuestAgent,
} from './guest-agent.js';
import { keeperFiles, type KeeperRequest } from './lxc-exec-keeper.js';
import { checkOpenedInRoot, NO_FOLLOW, resolveInRoot } from './lxc-guest-paths.js';

/** Where libvirt keeps the state of running containers. */
export const LXC_STATE_DIR = '/run/libvirt/lxc';
/** How long the keeper has to say the program started. */
const START_TIMEOUT_MS = 30_000;

/**
 * The container's init as the host numbers it, from libvirt's state file; null when it is not
 * running. libvirtd learns the init's pid from an event of the container's controller
 * (libvirt_lxc), and under load that event can be lost: the domain runs, its state file has no
 * <init/>. The controller's pid is in the same file, and the init is its child: that one is taken
 * then, if the controller is this container's (its command line names it).
 */
export async function containerInit(name: string, stateDir = LXC_STATE_DIR): Promise<number | null> {
  const state = await readFile(join(stateDir, `${name}.xml`), 'utf8').catch(() => '');
  const recorded = pidIn(/<init pid=['"](\d+)['"]/.exec(state)?.[1]);
  if (recorded !== null && (await isNamespaceInit(recorded))) return recorded;
  const controller = pidIn(/<domstatus\b[^>]*\spid=['"](\d+)['"]/.exec(state)?.[1]);
  if (controller === null || !(await controls(controller, name))) return null;
  for (const child of await childrenOf(controller)) if (await isNamespaceInit(child)) return child;
  return null;
}

const pidIn = (text: string | undefined): number | null => {
  const pid = Number(text ?? NaN);
  return Number.isInteger(pid) && pid >= 2 ? pid : null;
};

/** Its pid in its own namespace is 1 (the last NSpid field): not some process that took the number. */
async function isNamespaceInit(pid: number): Promise<boolean> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return /^NSpid:.*\s1$/m.test(status);
}

/** Whether the process is the controller of this container: `--name NAME` among its arguments. */
async function controls(pid: number, name: string): Promise<boolean> {
  const args = (await readFile(`/proc/${pid}/cmdline`, 'latin1').catch(() => '')).split('\0');
  return args.some((arg, i) => arg === '--name' && args[i + 1] === name);
}

/** The process's children, from each of its threads (/proc/PID/task/TID/children). */
async function childrenOf(pid: number): Promise<number[]> {
  const threads = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const lists = await Promise.all(threads.map((tid) => readFile(`/proc/${pid}/task/${tid}/children`, 'latin1').catch(() => '')));
  return lists.flatMap((list) => list.split(' ')).map((word) => pidIn(word)).filter((child): child is number => child !== null);
}

/**
 * The cgroup.procs files of the groups a process is in (/proc/<pid>/cgroup), at the mounts the host
 * has of each hierarchy (/proc/self/mountinfo). Pure.
 */
export function cgroupProcsFiles(procCgroup: string, mountinfo: string): string[] {
  const mounts: Array<{ point: string; type: string; options: Set<string> }> = [];
  for (const line of mountinfo.split('\n')) {
    const [before, after] = line.split(' - ');
    const fields = before?.split(' ') ?? [];
    const [type, , superOptions] = after?.split(' ') ?? [];
    if (fields[3] !== '/' || (type !== 'cgroup' && type !== 'cgroup2')) continue;
    mounts.push({ point: fields[4]!.replace(/\\040/g, ' '), type, options: new Set((superOptions ?? '').split(',')) });
  }
  const files: string[] = [];
  for (const line of procCgroup.split('\n')) {
    const m = /^\d+:([^:]*):(\/.*)$/.exec(line);
    if (!m || m[2] === '/') continue;
    const controllers = m[1]!.split(',').filter((c) => c !== '');
    const mount = controllers.length === 0
      ? mounts.find((x) => x.type === 'cgroup2')
      : mounts.find((x) => x.type === 'cgroup' && controllers.every((c) => x.options.has(c)));
    if (mount) files.push(join(mount.point, m[2]!, 'cgroup.procs'));
  }
  return files;
}

/** The keeper's script and the loader flags it needs (a TypeScript source runs with this process's loader). */
function keeperLaunch(): { script: string; execArgv: string[] } {
  const self = fileURLToPath(import.meta.url);
  const script = join(dirname(self), `lxc-exec-keeper${self.endsWith('.ts') ? '.ts' : '.js'}`);
  const execArgv = process.execArgv.filter((a, i, all) => /^--(import|loader|experimental-loader)\b/.test(a) || /^--(import|loader|experimental-loader)$/.test(all[i - 1] ?? ''));
  return { script, execArgv };
}

/** Starts a keeper for the request; resolves with the program's pid once the keeper tells it. */
function startKeeper(name: string, request: KeeperRequest, requestFile: string): Promise<number> {
  const { script, execArgv } = keeperLaunch();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...execArgv, script, requestFile], { detached: true, stdio: ['ignore', 'pipe', 'ignore'] });
    let line = '';
    const done = (error: AgentError | null, pid?: number) => {
      clearTimeout(timer);
      child.stdout!.destroy();
      child.unref();
      if (error) reject(error);
      else resolve(pid!);
    };
    const timer = setTimeout(() => done(new AgentError(`exec in ${name}: the program was not started within ${seconds(START_TIMEOUT_MS)}`)), START_TIMEOUT_MS);
    child.on('error', (error) => done(new AgentError(`exec in ${name}: cannot start its keeper: ${error.message}`)));
    child.stdout!.on('data', (data: Buffer) => {
      line += data.toString();
      if (!line.includes('\n')) return;
      const told = JSON.parse(line.split('\n')[0]!) as { pid?: number; error?: string };
      if (told.pid !== undefined) done(null, told.pid);
      else done(new AgentError(`exec in ${name} failed: ${told.error ?? 'its keeper said nothing'}`));
    });
    child.stdout!.on('end', () => {
      if (!line.includes('\n')) done(new AgentError(`exec in ${name} failed: its keeper ended without starting the program`));
    });
  });
}

/** Whether the process `pid` is still the keeper of `requestFile`. */
async function keeperRuns(pid: number, requestFile: string): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.split('\0').includes(requestFile);
}

export interface LxcAgentPlaces {
  /** The container's root as the host sees it (the mounted overlay). */
  readonly root: string;
  /** The guest's agent state on the host. */
  readonly recordsDir: string;
}

export function createLxcAgent(name: string, places: LxcAgentPlaces, stateDir = LXC_STATE_DIR): GuestAgent {
  const { root, recordsDir } = places;
  const records = execRecords(recordsDir);

  const init = async (what: string): Promise<number> => {
    const pid = await containerInit(name, stateDir);
    if (pid === null) throw new AgentError(`${what} in ${name}: the container is not running`);
    return pid;
  };

  return {
    async ping(timeoutMs) {
      try {
        await retryUntil(timeoutMs, 250, () => init('ping'));
      } catch {
        throw new AgentError(`the container ${name} did not answer ping within ${seconds(timeoutMs)} (it is not running)`);
      }
    },

    async exec(request) {
      checkExecRequest(name, request);
      const initPid = await init('exec');
      // Its program must be there: nsenter's own failure would otherwise be the program's exit code.
      const program = await resolveInRoot(name, root, request.path, { followLast: true });
      const st = await open(program, constants.O_RDONLY | NO_FOLLOW).then(async (h) => {
        try {
          await checkOpenedInRoot(name, request.path, root, h);
          return await h.stat();
        } finally {
          await h.close();
        }
      }, () => null);
      if (!st?.isFile() || (st.mode & 0o111) === 0) throw new AgentError(`exec in ${name} failed: ${request.path} is not an executable file there`);
      const [procCgroup, mountinfo] = await Promise.all([readFile(`/proc/${initPid}/cgroup`, 'utf8'), readFile('/proc/self/mountinfo', 'utf8')]);
      await mkdir(recordsDir, { recursive: true, mode: 0o700 });
      const requestFile = join(recordsDir, `request-${randomBytes(8).toString('hex')}.json`);
      const keeperRequest: KeeperRequest = {
        init: initPid, cgroupProcs: cgroupProcsFiles(procCgroup, mountinfo), path: request.path,
        args: [...request.args], env: [...request.env], recordsDir,
      };
      await writeFile(requestFile, JSON.stringify(keeperRequest), { mode: 0o600 });
      try {
        const pid = await startKeeper(name, keeperRequest, requestFile);
        return pid;
      } finally {
        await rm(requestFile, { force: true });
      }
    },

    async execStatus(pid): Promise<ExecState> {
      const recorded = await records.read(pid);
      if (recorded) return recorded;
      const files = keeperFiles(recordsDir, pid);
      const keeper = await readFile(files.keeper, 'utf8').then((t) => JSON.parse(t) as { keeper: number; requestFile: string }, () => null);
      if (keeper === null) {
        // Its keeper may have written the exit and gone between the two reads.
        const late = await records.read(pid);
        if (late) return late;
        throw new AgentError(`no program with pid ${pid} was started by exec in ${name} since it booted`);
      }
      if (await keeperRuns(keeper.keeper, keeper.requestFile)) return { exited: false };
      // Its keeper ended: it wrote the exit just now, or it was killed without (the host restarted).
      return (await records.read(pid)) ?? { exited: true, exitCode: null, signal: null };
    },

    async putFile(hostPath, guestPath, mode) {
      checkMode(name, mode);
      const target = await resolveInRoot(name, root, guestPath, { followLast: false, makeParents: true });
      // Written beside the target and renamed over it: a reader never sees half a file, and a link
      // that is there is replaced, not followed.
      const temp = join(dirname(target), `.nodemgr-put-${randomBytes(6).toString('hex')}`);
      const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | NO_FOLLOW, mode ?? 0o644).catch((error: unknown) => {
        throw new AgentError(`putFile to ${name}: cannot create ${guestPath}: ${describeError(error)}`);
      });
      try {
        await checkOpenedInRoot(name, guestPath, root, handle);
        await copyInto(handle, hostPath, name);
        if (mode !== undefined) await handle.chmod(mode);
        await handle.close();
        await rename(temp, target).catch((error: unknown) => {
          throw new AgentError(`putFile to ${name}: cannot replace ${guestPath}: ${describeError(error)}`);
        });
      } catch (error) {
        await handle.close().catch(() => undefined);
        await rm(temp, { force: true });
        throw error;
      }
    },

    async getFile(guestPath, hostPath, maxBytes) {
      const source = await resolveInRoot(name, root, guestPath, { followLast: true });
      const handle = await open(source, constants.O_RDONLY | NO_FOLLOW).catch((error: NodeJS.ErrnoException) => {
        throw new AgentError(error.code === 'ENOENT' ? `getFile from ${name}: ${guestPath} is missing` : `getFile from ${name}: cannot open ${guestPath}: ${error.message}`);
      });
      const temp = join(dirname(hostPath), `.${basename(hostPath)}.${randomBytes(4).toString('hex')}.part`);
      try {
        await checkOpenedInRoot(name, guestPath, root, handle);
        const st = await handle.stat();
        if (!st.isFile()) throw new AgentError(`getFile from ${name}: ${guestPath} is not a regular file`);
        if (st.size > maxBytes) throw new AgentError(`getFile from ${name}: ${guestPath} has ${st.size} bytes, more than the ${maxBytes} bytes allowed`);
        await copyOut(handle, temp, maxBytes, () => new AgentError(`getFile from ${name}: ${guestPath} has more than the ${maxBytes} bytes allowed`));
        await rename(temp, hostPath);
      } catch (error) {
        await rm(temp, { force: true });
        throw error;
      } finally {
        await handle.close();
      }
    },
  };
}

const COPY_CHUNK = 1 << 20;

async function copyInto(target: Awaited<ReturnType<typeof open>>, hostPath: string, name: string): Promise<void> {
  const source = await open(hostPath, 'r').catch((error: unknown) => {
    throw new AgentError(`putFile to ${name}: cannot read ${hostPath}: ${describeError(error)}`);
  });
  try {
    const buffer = Buffer.alloc(COPY_CHUNK);
    for (;;) {
      const { bytesRead } = await source.read(buffer, 0, COPY_CHUNK, null);
      if (bytesRead === 0) return;
      await target.write(buffer, 0, bytesRead);
    }
  } finally {
    await source.close();
  }
}

/** Copies at most maxBytes from `source` to a new host file; `tooLarge` when there is more (it may have grown). */
async function copyOut(source: Awaited<ReturnType<typeof open>>, hostFile: string, maxBytes: number, tooLarge: () => Error): Promise<void> {
  const target = await open(hostFile, 'wx', 0o600);
  try {
    const buffer = Buffer.alloc(COPY_CHUNK);
    let total = 0;
    for (;;) {
      const { bytesRead } = await source.read(buffer, 0, COPY_CHUNK, null);
      if (bytesRead === 0) return;
      total += bytesRead;
      if (total > maxBytes) throw tooLarge();
      await target.write(buffer, 0, bytesRead);
    }
  } finally {
    await target.close();
  }
}
