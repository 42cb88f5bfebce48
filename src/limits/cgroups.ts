// The slivers' control groups: one group per sliver under a parent directory that the daemon owns,
// in every hierarchy used (cgroup v1 mounts one hierarchy per controller, v2 has one for all).
// What both kernel interfaces share is in cgroup-files.ts; cgroup-v1.ts and cgroup-v2.ts write the
// limits; this module puts a sliver's groups together: made, read, joined, killed, removed, swept.
import { mkdir, readdir, rmdir, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { cgroupV1 } from './cgroup-v1.js';
import { cgroupV2 } from './cgroup-v2.js';
import {
  CgroupError, describe, errorCode, groupExists, isGone, movePid, NAME, pidsIn, processOwners, sleep, sliverSubject, subtree,
  validateGroupName, validateLimits, validateParent, type CgroupBackend, type CgroupLimits, type CgroupReading, type CgroupSupport,
} from './cgroup-files.js';

export { CgroupError, validateGroupName } from './cgroup-files.js';
export type { CgroupLimits, CgroupReading, CgroupSupport } from './cgroup-files.js';

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
export const DEFAULT_ROOT = '/sys/fs/cgroup';
export const DEFAULT_PARENT = 'nodemgr';
const CGROUP2_SUPER_MAGIC = 0x63677270;
/** How long killAll keeps trying before it reports the survivors. */
const KILL_TIMEOUT_MS = 10_000;
/** An exiting task leaves its group a moment after SIGKILL; rmdir waits this long for it. */
const RMDIR_TIMEOUT_MS = 3_000;
const POLL_MS = 10;

/**
 * Kills every process of the group. Killing by pid alone loses against a process that forks faster
 * than /proc can be read. Frozen, a group cannot fork, so the pids read then are all of it; SIGKILL
 * waits in each frozen task and takes effect when the group thaws. cgroup.kill does the same
 * inside the kernel.
 */
async function killGroup(backend: CgroupBackend, name: string, pids: () => Promise<number[]>): Promise<number> {
  const deadline = Date.now() + KILL_TIMEOUT_MS;
  const signalled = new Set<number>();
  for (;;) {
    const before = await pids();
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
        for (const pid of await pids()) {
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
    while ((await pids()).length > 0 && Date.now() < settled) await sleep(POLL_MS);
  }
}

/** Removes the group's directory and the groups below it, waiting out the moment an exiting task takes. */
async function removeGroupDir(dir: string, name: string): Promise<void> {
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

/** Moves every process whose real uid is a key of `owners` into that sliver's groups, where it is not yet. */
async function sweepStrays(groupDirs: (name: string) => string[], owners: ReadonlyMap<number, string>): Promise<{ moved: number }> {
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
}

function assemble(backend: CgroupBackend): SliverCgroups {
  const groupDirs = (name: string) => backend.parents.map((parent) => join(parent, validateGroupName(name)));
  const pids = async (name: string) => [...(await pidsIn(groupDirs(name)))].sort((a, b) => a - b);
  const killAll = (name: string) => killGroup(backend, name, () => pids(name));
  // The parent is made and set up once, not before every sliver's group (a mkdir in each hierarchy
  // and a control file each time). Should it vanish afterwards (an administrator's rmdir, a v1
  // hierarchy remounted), the next group made finds no parent and sets it up again.
  let parentSetUp: Promise<void> | null = null;
  const ensureParent = () => {
    const attempt = backend.ensureParent();
    parentSetUp = attempt;
    attempt.catch(() => {
      if (parentSetUp === attempt) parentSetUp = null;
    });
    return attempt;
  };
  const makeGroup = async (dir: string) => {
    try {
      await mkdir(dir);
    } catch (error) {
      if (errorCode(error) === 'EEXIST') return;
      if (errorCode(error) !== 'ENOENT') throw error;
      await ensureParent();
      await mkdir(dir).catch((again: unknown) => {
        if (errorCode(again) !== 'EEXIST') throw again;
      });
    }
  };

  return {
    version: backend.version,
    support: backend.support,
    ensureParent,
    async apply(name, limits) {
      validateGroupName(name);
      validateLimits(name, limits);
      await (parentSetUp ?? ensureParent());
      for (const dir of groupDirs(name)) {
        try {
          await makeGroup(dir);
        } catch (error) {
          throw new CgroupError(`cannot create the group of sliver "${name}" (${dir}): ${describe(error, dir)}`, errorCode(error), dir);
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
      for (const dir of dirs) await removeGroupDir(dir, name);
    },
    async list() {
      const names = new Set<string>();
      for (const parent of backend.parents) {
        const entries = await readdir(parent, { withFileTypes: true }).catch(() => []);
        for (const entry of entries) if (entry.isDirectory() && NAME.test(entry.name) && !entry.name.includes('..')) names.add(entry.name);
      }
      return [...names].sort();
    },
    sweep: (owners) => sweepStrays(groupDirs, owners),
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
  const backend = version === 1 ? await cgroupV1(root, parent) : await cgroupV2(root, parent);
  return assemble(backend);
}
