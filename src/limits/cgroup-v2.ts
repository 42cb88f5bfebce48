// cgroup v2: one hierarchy, and a controller reaches a group only when every ancestor lists it in
// cgroup.subtree_control. The daemon enables what it may in the parent it owns; what the host has
// not handed down to that parent cannot be enforced, and `support` says so instead of failing.
import { mkdir, readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import { CFS_PERIOD_US, SHARES_MAX, SHARES_MIN, sharesToWeight } from '../rspec/cpu.js';
import {
  CgroupError,
  cpuCount,
  errorCode,
  exists,
  keyedValue,
  pageSize,
  PARENT_SUBJECT,
  parseCount,
  readControl,
  setControl,
  sleep,
  sliverSubject,
  writeControl,
  type CgroupBackend,
  type CgroupLimits,
  type CgroupReading,
} from './cgroup-files.js';

const LIMIT_CONTROLLERS = ['cpu', 'memory', 'pids'] as const;
/** cpu.weight of a group equal to one nice-0 task (the kernel's 1024 shares). */
const WEIGHT_PER_CPU = 100;
const WEIGHT_MAX = 10_000;
const FREEZE_WAIT_MS = 1_000;
/**
 * Where the daemon moves itself when its own group holds the slivers' parent: a group with
 * processes in it cannot hand controllers down (cgroup v2's "no internal processes" rule).
 */
export const DAEMON_LEAF = 'daemon';

const words = (text: string | null) => new Set((text ?? '').split(/\s+/).filter(Boolean));

/** The smallest cpu.shares value that sharesToWeight turns into `weight`: the inverse, as far as there is one. */
export function weightToShares(weight: number): number {
  const shares = SHARES_MIN + Math.ceil(((weight - 1) * (SHARES_MAX - SHARES_MIN)) / 9_999);
  return Math.min(SHARES_MAX, Math.max(SHARES_MIN, shares));
}

function parseMax(text: string | null): number | null {
  return text === 'max' ? null : parseCount(text);
}

/** How the kernel can kill a whole group: cgroup.kill (5.14), or freezing it first (5.2). */
async function killMode(dirs: readonly string[]): Promise<'kill' | 'freeze' | null> {
  for (const dir of dirs) {
    // The root group has neither file whatever the kernel, so only a group below it can tell.
    if (!(await exists(join(dir, 'cgroup.type')))) continue;
    if (await exists(join(dir, 'cgroup.kill'))) return 'kill';
    return (await exists(join(dir, 'cgroup.freeze'))) ? 'freeze' : null;
  }
  const [major = 0, minor = 0] = (/^(\d+)\.(\d+)/.exec(release()) ?? []).slice(1).map(Number);
  const version = major * 1000 + minor;
  return version >= 5014 ? 'kill' : version >= 5002 ? 'freeze' : null;
}

/** The group this process was started in ("0::/system.slice/nodemgr.service"), as a directory under root. Pure. */
export function ownGroupDir(root: string, procSelfCgroup: string): string | null {
  const line = procSelfCgroup.split('\n').find((l) => l.startsWith('0::/'));
  if (line === undefined) return null;
  const path = line.slice(3).replace(/\/+$/, '');
  // A daemon that has already moved into its leaf (a start that followed an earlier attempt) owns the group above it.
  const own = path.endsWith(`/${DAEMON_LEAF}`) ? path.slice(0, -DAEMON_LEAF.length - 1) : path;
  return join(root, own);
}

/**
 * A parent inside the daemon's own group is inside the subtree systemd delegates to the unit
 * (Delegate=yes): the daemon hands the controllers down itself, after moving into a leaf of its own.
 */
async function handDownControllers(container: string, controllers: readonly string[]): Promise<void> {
  const leaf = join(container, DAEMON_LEAF);
  await mkdir(leaf).catch((error: unknown) => {
    if (errorCode(error) !== 'EEXIST') throw new CgroupError(`cannot create the daemon's own group ${leaf}: ${errorCode(error) ?? String(error)}`, errorCode(error), leaf);
  });
  await writeControl(join(leaf, 'cgroup.procs'), String(process.pid), `the daemon's own group ${leaf}`);
  const enabled = words(await readControl(join(container, 'cgroup.subtree_control')));
  const wanted = controllers.filter((c) => !enabled.has(c));
  if (wanted.length > 0) await writeControl(join(container, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '), `the daemon's group ${container}`);
}

export async function cgroupV2(root: string, parent: string): Promise<CgroupBackend> {
  const dir = join(root, parent);
  const container = dirname(dir);
  const containerControllers = await readControl(join(container, 'cgroup.controllers'));
  if (containerControllers === null) throw new CgroupError(`${container} is not a cgroup v2 group: it has no cgroup.controllers`, 'ENOENT', container);
  const containerSubtree = await readControl(join(container, 'cgroup.subtree_control'));
  const delegated = container !== root && ownGroupDir(root, await readFile('/proc/self/cgroup', 'utf8').catch(() => '')) === container;
  const delegatedControllers = LIMIT_CONTROLLERS.filter((c) => words(containerControllers).has(c));
  // What the parent's cgroup.controllers lists, or will list once it exists (in a delegated
  // group: once the daemon has handed them down).
  const available = words((await readControl(join(dir, 'cgroup.controllers'))) ?? (delegated ? delegatedControllers.join(' ') : containerSubtree));
  const unavailable = (controller: string) => {
    if (available.has(controller)) return null;
    return words(containerControllers).has(controller)
      ? `the ${controller} controller is not enabled for the groups below ${container} (its cgroup.subtree_control: "${containerSubtree ?? ''}"); the host must enable it there`
      : `the ${controller} controller is not available in ${container} (its cgroup.controllers: "${containerControllers}")`;
  };
  const mode = await killMode([dir, container]);
  const support = {
    cpu: unavailable('cpu'),
    cpuQuota: unavailable('cpu'),
    memory: unavailable('memory'),
    pids: unavailable('pids'),
    kill: mode
      ? null
      : `neither cgroup.kill nor cgroup.freeze exists (kernel ${release()}): processes are killed by pid, which a process that forks fast can outrun`,
  };
  const group = (name: string) => join(dir, name);

  async function ensureParent(): Promise<void> {
    if (delegated) await handDownControllers(container, delegatedControllers);
    try {
      await mkdir(dir);
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw new CgroupError(`cannot create ${PARENT_SUBJECT} ${dir}: ${errorCode(error) ?? String(error)}`, errorCode(error), dir);
    }
    const controllers = words(await readControl(join(dir, 'cgroup.controllers')));
    const enabled = words(await readControl(join(dir, 'cgroup.subtree_control')));
    const wanted = LIMIT_CONTROLLERS.filter((c) => controllers.has(c) && !enabled.has(c));
    if (wanted.length > 0) await writeControl(join(dir, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '), PARENT_SUBJECT);
    // The host's own groups and tasks beside the parent weigh 100 each (one nice-0 task). With
    // the default the slivers together would get one task's part of a busy host; at 100 per CPU
    // they count as that many busy tasks, enough to fill every CPU against the host's own.
    if (controllers.has('cpu')) {
      await setControl(join(dir, 'cpu.weight'), String(Math.min(WEIGHT_MAX, WEIGHT_PER_CPU * cpuCount())), PARENT_SUBJECT);
    }
  }

  async function applyLimits(name: string, limits: CgroupLimits): Promise<void> {
    const subject = sliverSubject(name);
    const g = group(name);
    if (support.cpu === null) await setControl(join(g, 'cpu.weight'), String(sharesToWeight(limits.cpuShares)), subject);
    if (support.cpuQuota === null) {
      const cpuMax = `${limits.cpuQuotaUs ?? 'max'} ${CFS_PERIOD_US}`;
      await setControl(join(g, 'cpu.max'), cpuMax, subject, (current) => current.split(/\s+/).join(' ') === cpuMax);
    }
    if (support.memory === null) {
      const bytes = limits.memoryBytes;
      const page = await pageSize();
      await setControl(join(g, 'memory.max'), bytes === null ? 'max' : String(bytes), subject, (current) => {
        if (bytes === null) return current === 'max';
        const shown = parseMax(current);
        return shown !== null && shown <= bytes && bytes - shown < page;
      });
      // v2 counts swap apart from memory. No swap for a limited group keeps the limit what it is
      // under v1 (memory+swap at the memory limit) instead of adding the host's swap on top.
      const swap = join(g, 'memory.swap.max');
      if (await exists(swap)) await setControl(swap, bytes === null ? 'max' : '0', subject);
    }
    if (support.pids === null) await setControl(join(g, 'pids.max'), limits.pidsMax === null ? 'max' : String(limits.pidsMax), subject);
    // A daemon that died in the middle of killAll leaves the group frozen, and everything started
    // in it later would stop at once.
    const freezeFile = join(g, 'cgroup.freeze');
    if (await exists(freezeFile)) await setControl(freezeFile, '0', subject);
  }

  async function readStatus(name: string): Promise<Omit<CgroupReading, 'processes'>> {
    const read = (file: string) => readControl(join(group(name), file));
    const weight = parseCount(await read('cpu.weight'));
    const [quota, period] = ((await read('cpu.max')) ?? '').split(/\s+/);
    const usageUs = keyedValue(await read('cpu.stat'), 'usage_usec');
    return {
      limits: {
        cpuShares: weight === null ? null : weightToShares(weight),
        cpuQuotaUs: quota === undefined || quota === '' || quota === 'max' || !Number(period) ? null : Math.round((Number(quota) * CFS_PERIOD_US) / Number(period)),
        memoryBytes: parseMax(await read('memory.max')),
        pidsMax: parseMax(await read('pids.max')),
      },
      memoryUsageBytes: parseCount(await read('memory.current')),
      cpuUsageNs: usageUs === null ? null : usageUs * 1000,
      oomKills: keyedValue(await read('memory.events'), 'oom_kill'),
    };
  }

  async function killSwitch(name: string): Promise<boolean> {
    const file = join(group(name), 'cgroup.kill');
    if (!(await exists(file))) return false;
    await writeControl(file, '1', sliverSubject(name));
    return true;
  }

  async function freeze(name: string, frozen: boolean): Promise<boolean> {
    const file = join(group(name), 'cgroup.freeze');
    if (!(await exists(file))) return false;
    await writeControl(file, frozen ? '1' : '0', sliverSubject(name));
    if (frozen) {
      // A task that cannot stop now still takes SIGKILL, so the wait is bounded.
      const until = Date.now() + FREEZE_WAIT_MS;
      while (keyedValue(await readControl(join(group(name), 'cgroup.events')), 'frozen') !== 1 && Date.now() < until) await sleep(5);
    }
    return true;
  }

  return { version: 2, parents: [dir], support, ensureParent, applyLimits, readStatus, killSwitch, freeze };
}
