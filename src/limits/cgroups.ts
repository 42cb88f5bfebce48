// The slivers' control groups: one group per sliver under a parent directory that the daemon owns,
// in every hierarchy used (cgroup v1 mounts one hierarchy per controller, v2 has one for all).
// What both kernel interfaces share lives here; cgroup-v1.ts and cgroup-v2.ts write the limits.
import { constants } from 'node:fs';
import { access, mkdir, open, readdir, readFile, rmdir, stat, statfs, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { SHARES_MAX, SHARES_MIN } from './cpu.js';

export interface CgroupLimits {
  /** v1 cpu.shares, 2..262144; v2 gets cpu.weight = sharesToWeight(cpuShares). */
  readonly cpuShares: number;
  /** CFS quota per CFS_PERIOD_US; null: no cap. */
  readonly cpuQuotaUs: number | null;
  readonly memoryBytes: number | null;
  readonly pidsMax: number | null;
}

export interface CgroupReading {
  /**
   * As the kernel shows them; a field is null when its controller is not available. Under v2,
   * cpuShares is the smallest shares value that maps to the kernel's cpu.weight, which is coarser.
   */
  readonly limits: { cpuShares: number | null; cpuQuotaUs: number | null; memoryBytes: number | null; pidsMax: number | null };
  readonly memoryUsageBytes: number | null;
  readonly processes: number;
  readonly cpuUsageNs: number | null;
  readonly oomKills: number | null;
}

/** Per limit: null when this host enforces it, otherwise why it cannot. */
export interface CgroupSupport {
  readonly cpu: string | null;
  readonly cpuQuota: string | null;
  readonly memory: string | null;
  readonly pids: string | null;
  readonly kill: string | null;
}

export interface SliverCgroups {
  readonly version: 1 | 2;
  readonly support: CgroupSupport;
  ensureParent(): Promise<void>;
  /** Creates the group when missing and writes the limits that differ from what the kernel shows. */
  apply(name: string, limits: CgroupLimits): Promise<void>;
  /** null when the group does not exist. */
  read(name: string): Promise<CgroupReading | null>;
  /** Moves the process into the sliver's group in every hierarchy used. */
  join(name: string, pid: number): Promise<void>;
  /** The cgroup.procs files (one per hierarchy) a root launcher writes its own pid into before it drops privileges. */
  procFiles(name: string): string[];
  pids(name: string): Promise<number[]>;
  /** Kills every process of the group; returns how many it signalled. */
  killAll(name: string): Promise<number>;
  /** Kills, then removes the group from every hierarchy; succeeds when it is already gone. */
  remove(name: string): Promise<void>;
  /** The groups under the parent, for recovery after a restart. */
  list(): Promise<string[]>;
  /** Moves every process whose real uid is a key of `owners` into that sliver's group, where it is not yet. */
  sweep(owners: ReadonlyMap<number, string>): Promise<{ moved: number }>;
}

export interface CgroupOptions {
  /** Where the cgroup file systems are mounted; default /sys/fs/cgroup. */
  root?: string;
  /** The daemon's own directory in each hierarchy, relative to it; default "nodemgr". */
  parent?: string;
  /** Default: detected from the file system at root. */
  version?: 1 | 2;
}

/** What differs between the two kernel interfaces; the rest of SliverCgroups is built on it. */
export interface CgroupBackend {
  readonly version: 1 | 2;
  /** The parent directory in every hierarchy used. */
  readonly parents: readonly string[];
  readonly support: CgroupSupport;
  ensureParent(): Promise<void>;
  /** Writes the limits into a group that exists in every hierarchy, and lets it run if it was left frozen. */
  applyLimits(name: string, limits: CgroupLimits): Promise<void>;
  readStatus(name: string): Promise<Omit<CgroupReading, 'processes'>>;
  /** Kills the whole group in one step (v2 cgroup.kill); false when the kernel has no such switch. */
  killSwitch(name: string): Promise<boolean>;
  /** Stops (true) or resumes every task of the group; false when there is no freezer for it. */
  freeze(name: string, frozen: boolean): Promise<boolean>;
}

export const DEFAULT_ROOT = '/sys/fs/cgroup';
export const DEFAULT_PARENT = 'nodemgr';
const CGROUP2_SUPER_MAGIC = 0x63677270;
/** How long killAll keeps trying before it reports the survivors. */
const KILL_TIMEOUT_MS = 10_000;
/** An exiting task leaves its group a moment after SIGKILL; rmdir waits this long for it. */
const RMDIR_TIMEOUT_MS = 3_000;
const POLL_MS = 10;

export class CgroupError extends Error {
  override readonly name = 'CgroupError';
  constructor(
    message: string,
    /** The errno name (EBUSY, ESRCH, ...) when a system call failed. */
    readonly code: string | null = null,
    readonly file: string | null = null,
  ) {
    super(message);
  }
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/;

/** Sliver names become directory names: anything that could climb out of the parent is refused. */
export function validateGroupName(name: string, what = 'sliver name'): string {
  if (typeof name !== 'string' || !NAME.test(name) || name.includes('..')) {
    throw new CgroupError(
      `invalid ${what} ${JSON.stringify(name)}: up to 32 letters, digits, "_", "-" and ".", not starting with "." or "-"`,
    );
  }
  return name;
}

function validateParent(parent: string): string {
  for (const part of parent.split('/')) validateGroupName(part, `cgroup parent ${JSON.stringify(parent)}: component`);
  return parent;
}

export function validateLimits(name: string, limits: CgroupLimits): void {
  const fail = (field: string, value: unknown, rule: string) => {
    throw new CgroupError(`invalid ${field} ${String(value)} for sliver "${name}": ${rule}`);
  };
  const { cpuShares, cpuQuotaUs, memoryBytes, pidsMax } = limits;
  if (!Number.isInteger(cpuShares) || cpuShares < SHARES_MIN || cpuShares > SHARES_MAX) {
    fail('cpuShares', cpuShares, `an integer from ${SHARES_MIN} to ${SHARES_MAX}`);
  }
  if (cpuQuotaUs !== null && (!Number.isSafeInteger(cpuQuotaUs) || cpuQuotaUs < 1_000)) {
    fail('cpuQuotaUs', cpuQuotaUs, 'null or an integer of at least 1000 (the kernel refuses less than 1 ms)');
  }
  if (memoryBytes !== null && (!Number.isSafeInteger(memoryBytes) || memoryBytes < 1)) fail('memoryBytes', memoryBytes, 'null or a positive integer');
  if (pidsMax !== null && (!Number.isSafeInteger(pidsMax) || pidsMax < 0)) fail('pidsMax', pidsMax, 'null or a non-negative integer');
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function errorCode(error: unknown): string | null {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : null;
}

const HINTS: Readonly<Record<string, string>> = {
  EINVAL: 'the kernel refused the value',
  ENOENT: 'no such control file: is the controller enabled for this group?',
  EACCES: 'no such control file: is the controller enabled for this group?',
  ESRCH: 'no such process',
  EPERM: 'not permitted',
  ENOSPC: 'the group is not set up for this controller',
};

function describe(error: unknown, file: string): string {
  const code = errorCode(error);
  if (!code) return String(error);
  const hint = code === 'EBUSY' ? (/memory\.(memsw\.)?limit_in_bytes$|memory\.max$/.test(file) ? 'usage is above it' : 'busy') : HINTS[code];
  return hint ? `${code} (${hint})` : code;
}

/** A control file's contents, trimmed; null when the file does not exist. */
export async function readControl(file: string): Promise<string | null> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return null;
    throw new CgroupError(`cannot read ${file}: ${describe(error, file)}`, errorCode(error), file);
  }
}

export const exists = (file: string) => access(file).then(() => true, () => false);

// Never O_CREAT: /sys/fs/cgroup is often a tmpfs, where a control file of a hierarchy that is not
// mounted would be created as a plain file and the limit silently lost.
const WRITE_FLAGS = constants.O_WRONLY | constants.O_TRUNC;

/** Writes one value in one write(2), as the kernel parses it; `subject` names the group in errors. */
export async function writeControl(file: string, value: string, subject: string): Promise<void> {
  try {
    await writeFile(file, value, { flag: WRITE_FLAGS });
  } catch (error) {
    throw new CgroupError(
      `cannot set ${basename(file)} of ${subject} to ${value} in ${dirname(file)}: ${describe(error, file)}`,
      errorCode(error),
      file,
    );
  }
}

/** Writes `desired` unless the kernel already shows it, so that a repeated apply changes nothing. */
export async function setControl(file: string, desired: string, subject: string, same = (current: string) => current === desired): Promise<void> {
  const current = await readControl(file);
  if (current !== null && same(current)) return;
  await writeControl(file, desired, subject);
}

export const sliverSubject = (name: string) => `sliver "${name}"`;

export const PARENT_SUBJECT = "the slivers' parent group";

export const parseCount = (text: string | null) => (text !== null && /^\d+$/.test(text) ? Number(text) : null);

/** `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control). */
export function keyedValue(text: string | null, key: string): number | null {
  const match = text === null ? null : new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return match ? Number(match[1]) : null;
}

/** The number of CPUs the host's own tasks may spread over, which the parent's weight answers to. */
export function cpuCount(): number {
  return Math.max(1, cpus().length);
}

let pageSizeCache: number | null = null;

/** Memory limits read back rounded down to whole pages; the first mapping of smaps tells their size. */
export async function pageSize(): Promise<number> {
  if (pageSizeCache === null) {
    const handle = await open('/proc/self/smaps', 'r').catch(() => null);
    const head = handle ? await handle.read(Buffer.alloc(4096), 0, 4096, 0).finally(() => handle.close()) : null;
    const kb = head && /^KernelPageSize:\s+(\d+) kB$/m.exec(head.buffer.toString('utf8', 0, head.bytesRead));
    // Without /proc the common size will do: at worst an unchanged limit is written again.
    pageSizeCache = kb ? Number(kb[1]) * 1024 : 4096;
  }
  return pageSizeCache;
}

/** The group's directory and every group below it, parents before children. */
async function subtree(dir: string): Promise<string[]> {
  const found: string[] = [];
  const pending = [dir];
  while (pending.length > 0) {
    const current = pending.shift()!;
    let entries;
    try {
      entries = await readdir(current, { withFileTypes: true });
    } catch (error) {
      if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') continue;
      throw new CgroupError(`cannot list ${current}: ${describe(error, current)}`, errorCode(error), current);
    }
    found.push(current);
    for (const entry of entries) if (entry.isDirectory()) pending.push(join(current, entry.name));
  }
  return found;
}

/** Pids in the group or below it, in every hierarchy given. */
async function pidsIn(dirs: readonly string[]): Promise<Set<number>> {
  const all = new Set<number>();
  for (const dir of dirs) {
    for (const group of await subtree(dir)) {
      for (const line of ((await readControl(join(group, 'cgroup.procs'))) ?? '').split('\n')) if (/^\d+$/.test(line)) all.add(Number(line));
    }
  }
  return all;
}

async function movePid(procsFile: string, pid: number, subject: string): Promise<void> {
  try {
    await writeFile(procsFile, String(pid), { flag: WRITE_FLAGS });
  } catch (error) {
    throw new CgroupError(`cannot move pid ${pid} into ${subject} (${procsFile}): ${describe(error, procsFile)}`, errorCode(error), procsFile);
  }
}

/** Real uid and state of every process, from /proc/<pid>/status; processes that exit meanwhile are left out. */
async function processOwners(): Promise<Map<number, { uid: number; state: string }>> {
  const owners = new Map<number, { uid: number; state: string }>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => null);
    const uid = status && /^Uid:\s+(\d+)/m.exec(status);
    const state = status && /^State:\s+(\S)/m.exec(status);
    if (uid && state) owners.set(Number(entry), { uid: Number(uid[1]), state: state[1]! });
  }
  return owners;
}

async function isGone(pid: number): Promise<boolean> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null);
  return status === null || /^State:\s+[ZX]/m.test(status);
}

const groupExists = (dir: string) => stat(dir).then((s) => s.isDirectory(), () => false);

function assemble(backend: CgroupBackend): SliverCgroups {
  const groupDirs = (name: string) => backend.parents.map((parent) => join(parent, validateGroupName(name)));
  const pids = async (name: string) => [...(await pidsIn(groupDirs(name)))].sort((a, b) => a - b);

  // Killing by pid alone loses against a process that forks faster than /proc can be read. Frozen,
  // a group cannot fork, so the pids read then are all of it; SIGKILL waits in each frozen task and
  // takes effect when the group thaws. cgroup.kill does the same inside the kernel.
  async function killAll(name: string): Promise<number> {
    const deadline = Date.now() + KILL_TIMEOUT_MS;
    const signalled = new Set<number>();
    for (;;) {
      const before = await pids(name);
      if (before.length === 0) return signalled.size;
      if (Date.now() >= deadline) {
        throw new CgroupError(
          `cannot kill every process of sliver "${name}": ${before.length} still in its group after ${KILL_TIMEOUT_MS / 1000} s (pids ${before.slice(0, 20).join(' ')})`,
        );
      }
      if (await backend.killSwitch(name)) {
        for (const pid of before) signalled.add(pid);
      } else {
        const frozen = await backend.freeze(name, true);
        try {
          for (const pid of await pids(name)) {
            if (pid === process.pid) continue;
            try {
              process.kill(pid, 'SIGKILL');
              signalled.add(pid);
            } catch {
              // ESRCH: it exited by itself
            }
          }
        } finally {
          if (frozen) await backend.freeze(name, false);
        }
      }
      const settled = Math.min(deadline, Date.now() + 1_000);
      while ((await pids(name)).length > 0 && Date.now() < settled) await sleep(POLL_MS);
    }
  }

  async function removeDir(dir: string, name: string): Promise<void> {
    const deadline = Date.now() + RMDIR_TIMEOUT_MS;
    for (const group of (await subtree(dir)).reverse()) {
      for (;;) {
        try {
          await rmdir(group);
          break;
        } catch (error) {
          const code = errorCode(error);
          if (code === 'ENOENT') break;
          if (code === 'EBUSY' && Date.now() < deadline) {
            await sleep(POLL_MS);
            continue;
          }
          throw new CgroupError(`cannot remove the group of sliver "${name}" (${group}): ${describe(error, group)}`, code, group);
        }
      }
    }
  }

  return {
    version: backend.version,
    support: backend.support,
    ensureParent: () => backend.ensureParent(),
    async apply(name, limits) {
      validateGroupName(name);
      validateLimits(name, limits);
      await backend.ensureParent();
      for (const dir of groupDirs(name)) {
        try {
          await mkdir(dir);
        } catch (error) {
          if (errorCode(error) !== 'EEXIST') {
            throw new CgroupError(`cannot create the group of sliver "${name}" (${dir}): ${describe(error, dir)}`, errorCode(error), dir);
          }
        }
      }
      await backend.applyLimits(name, limits);
    },
    async read(name) {
      const dirs = groupDirs(name);
      const present = await Promise.all(dirs.map(groupExists));
      if (!present.includes(true)) return null;
      const status = await backend.readStatus(name);
      return { ...status, processes: (await pids(name)).length };
    },
    async join(name, pid) {
      if (!Number.isInteger(pid) || pid <= 0) throw new CgroupError(`invalid pid ${pid} to move into sliver "${name}"`);
      for (const dir of groupDirs(name)) {
        if (!(await groupExists(dir))) throw new CgroupError(`sliver "${name}" has no group in ${dirname(dir)} (apply creates it)`, 'ENOENT', dir);
        await movePid(join(dir, 'cgroup.procs'), pid, sliverSubject(name));
      }
    },
    procFiles: (name) => groupDirs(name).map((dir) => join(dir, 'cgroup.procs')),
    pids,
    killAll: (name) => killAll(validateGroupName(name)),
    async remove(name) {
      const dirs = groupDirs(name);
      if (!(await Promise.all(dirs.map(groupExists))).includes(true)) return;
      await killAll(name);
      for (const dir of dirs) await removeDir(dir, name);
    },
    async list() {
      const names = new Set<string>();
      for (const parent of backend.parents) {
        const entries = await readdir(parent, { withFileTypes: true }).catch(() => []);
        for (const entry of entries) if (entry.isDirectory() && NAME.test(entry.name) && !entry.name.includes('..')) names.add(entry.name);
      }
      return [...names].sort();
    },
    async sweep(owners) {
      for (const name of owners.values()) validateGroupName(name);
      // Processes are listed before the groups are read: a child forked in between starts in its
      // parent's group, so nothing that was already inside is taken for a stray.
      const processes = [...(await processOwners())].filter(
        ([pid, p]) => owners.has(p.uid) && pid !== process.pid && p.state !== 'Z' && p.state !== 'X',
      );
      const members = new Map<string, (Set<number> | null)[]>();
      for (const name of new Set(processes.map(([, p]) => owners.get(p.uid)!))) {
        // A sliver whose group does not exist (yet) is left to the supervisor that creates it.
        members.set(name, await Promise.all(groupDirs(name).map(async (dir) => ((await groupExists(dir)) ? pidsIn([dir]) : null))));
      }
      let moved = 0;
      for (const [pid, p] of processes) {
        const name = owners.get(p.uid)!;
        let movedThis = false;
        for (const [i, dir] of groupDirs(name).entries()) {
          const inside = members.get(name)![i];
          if (!inside || inside.has(pid)) continue;
          try {
            await movePid(join(dir, 'cgroup.procs'), pid, sliverSubject(name));
            movedThis = true;
          } catch (error) {
            if (errorCode(error) === 'ESRCH' || (await isGone(pid))) break;
            throw error;
          }
        }
        if (movedThis) moved++;
      }
      return { moved };
    },
  };
}

/** A cgroup2 file system at root means the unified hierarchy alone; anything else is v1 or hybrid. */
export async function detectCgroupVersion(root = DEFAULT_ROOT): Promise<1 | 2> {
  try {
    return (await statfs(root)).type === CGROUP2_SUPER_MAGIC ? 2 : 1;
  } catch (error) {
    throw new CgroupError(`cannot tell the cgroup version at ${root}: ${describe(error, root)}`, errorCode(error), root);
  }
}

export async function createSliverCgroups(options: CgroupOptions = {}): Promise<SliverCgroups> {
  const root = options.root ?? DEFAULT_ROOT;
  const parent = validateParent(options.parent ?? DEFAULT_PARENT);
  const version = options.version ?? (await detectCgroupVersion(root));
  // Loaded here rather than at the top: the backends build on this module's helpers, and a static
  // import both ways would make the order of evaluation matter.
  const backend =
    version === 1 ? await (await import('./cgroup-v1.js')).cgroupV1(root, parent) : await (await import('./cgroup-v2.js')).cgroupV2(root, parent);
  return assemble(backend);
}
