// cgroup v1: each controller has its own hierarchy (or shares one with a few others), and the
// sliver's group exists once in each. cpuset is left out: a new cpuset group holds no CPUs and no
// memory nodes until they are copied in, and refuses tasks (ENOSPC) meanwhile.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CFS_PERIOD_US, SHARES_MAX } from '../rspec/cpu.js';
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

export type V1Controller = 'cpu' | 'cpuacct' | 'memory' | 'pids' | 'freezer';
const CONTROLLERS: readonly V1Controller[] = ['cpu', 'cpuacct', 'memory', 'pids', 'freezer'];
/** The kernel shows "no limit" as the largest page-aligned long; nothing real comes near 2^60. */
const UNLIMITED_BYTES = 2 ** 60;
const FREEZE_WAIT_MS = 1_000;

const unescapeMount = (path: string) => path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));

/** Mount points of the v1 hierarchies at or below `root`, by the controllers used here (/proc/self/mountinfo). */
export function v1Mounts(mountinfo: string, root: string): Map<V1Controller, string> {
  const base = root.replace(/\/+$/, '');
  const found = new Map<V1Controller, string>();
  for (const line of mountinfo.split('\n')) {
    const [before, after] = line.split(' - ');
    if (!before || !after) continue;
    const mountPoint = unescapeMount(before.split(' ')[4] ?? '');
    const [fsType, , superOptions = ''] = after.split(' ');
    if (fsType !== 'cgroup' || (mountPoint !== base && !mountPoint.startsWith(`${base}/`))) continue;
    const options = superOptions.split(',');
    for (const controller of CONTROLLERS) if (options.includes(controller) && !found.has(controller)) found.set(controller, mountPoint);
  }
  return found;
}

function parseBytes(text: string | null): number | null {
  const value = parseCount(text);
  return value === null || value >= UNLIMITED_BYTES ? null : value;
}

// The kernel keeps memory+swap at or above memory alone, at every step: a raise moves the
// upper one (memsw) first, a cut moves memory first. Without swap accounting there is no memsw.
async function applyMemory(group: string, bytes: number | null, subject: string): Promise<void> {
  const limitFile = join(group, 'memory.limit_in_bytes');
  const memswFile = join(group, 'memory.memsw.limit_in_bytes');
  const page = await pageSize();
  const same = (current: string) => {
    const shown = parseBytes(current);
    if (bytes === null || shown === null) return bytes === shown;
    return shown <= bytes && bytes - shown < page;
  };
  const current = parseBytes(await readControl(limitFile));
  const raising = bytes === null || (current !== null && bytes >= current);
  const files = [limitFile, ...((await exists(memswFile)) ? [memswFile] : [])];
  if (raising) files.reverse();
  for (const file of files) await setControl(file, bytes === null ? '-1' : String(bytes), subject, same);
}

export async function cgroupV1(root: string, parent: string): Promise<CgroupBackend> {
  const mounts = v1Mounts(await readFile('/proc/self/mountinfo', 'utf8'), root);
  if (mounts.size === 0) throw new CgroupError(`no cgroup v1 hierarchy with any of ${CONTROLLERS.join(', ')} is mounted under ${root}`);
  const hierarchies = [...new Set(mounts.values())];
  const missing = (controller: V1Controller) => `no cgroup v1 hierarchy with the ${controller} controller is mounted under ${root}`;
  /** The group's directory in the hierarchy of `controller`; null when that controller is not mounted. */
  const dir = (controller: V1Controller, name?: string) => {
    const mount = mounts.get(controller);
    return mount === undefined ? null : name === undefined ? join(mount, parent) : join(mount, parent, name);
  };
  const cpuMount = mounts.get('cpu');
  const quotaSupported = cpuMount !== undefined && (await exists(join(cpuMount, 'cpu.cfs_quota_us')));

  const support = {
    cpu: cpuMount ? null : missing('cpu'),
    cpuQuota: quotaSupported ? null : cpuMount ? `the kernel has no CFS bandwidth control (no cpu.cfs_quota_us in ${cpuMount})` : missing('cpu'),
    memory: mounts.has('memory') ? null : missing('memory'),
    pids: mounts.has('pids') ? null : missing('pids'),
    kill: mounts.has('freezer') ? null : `${missing('freezer')}: processes are killed by pid, which a process that forks fast can outrun`,
  };

  async function ensureParent(): Promise<void> {
    for (const hierarchy of hierarchies) {
      const path = join(hierarchy, parent);
      try {
        // A parent below a group of systemd's (the unit's, with Delegate=yes) needs that group in
        // the hierarchies systemd leaves alone too (freezer).
        await mkdir(path, { recursive: true });
      } catch (error) {
        if (errorCode(error) !== 'EEXIST') throw new CgroupError(`cannot create ${PARENT_SUBJECT} ${path}: ${errorCode(error) ?? String(error)}`, errorCode(error), path);
      }
    }
    // Every task left in the root group weighs as much as a whole child group of 1024 shares, so
    // with the default the slivers together would get one task's part of a busy host. At 1024 per
    // CPU they count as that many busy tasks, enough to fill every CPU against the host's own.
    const cpu = dir('cpu');
    if (cpu) await setControl(join(cpu, 'cpu.shares'), String(Math.min(SHARES_MAX, 1024 * cpuCount())), PARENT_SUBJECT);
  }

  async function applyLimits(name: string, limits: CgroupLimits): Promise<void> {
    const subject = sliverSubject(name);
    const cpu = dir('cpu', name);
    if (cpu) {
      await setControl(join(cpu, 'cpu.shares'), String(limits.cpuShares), subject);
      if (quotaSupported) {
        await setControl(join(cpu, 'cpu.cfs_period_us'), String(CFS_PERIOD_US), subject);
        await setControl(join(cpu, 'cpu.cfs_quota_us'), String(limits.cpuQuotaUs ?? -1), subject);
      }
    }
    const memory = dir('memory', name);
    if (memory) await applyMemory(memory, limits.memoryBytes, subject);
    const pids = dir('pids', name);
    if (pids) await setControl(join(pids, 'pids.max'), limits.pidsMax === null ? 'max' : String(limits.pidsMax), subject);
    // A daemon that died in the middle of killAll leaves the group frozen, and everything started
    // in it later would stop at once.
    const freezer = dir('freezer', name);
    if (freezer) await setControl(join(freezer, 'freezer.state'), 'THAWED', subject);
  }

  async function readStatus(name: string): Promise<Omit<CgroupReading, 'processes'>> {
    const read = (controller: V1Controller, file: string) => {
      const group = dir(controller, name);
      return group ? readControl(join(group, file)) : Promise.resolve(null);
    };
    const quota = await read('cpu', 'cpu.cfs_quota_us');
    const period = parseCount(await read('cpu', 'cpu.cfs_period_us'));
    const pidsMax = await read('pids', 'pids.max');
    return {
      limits: {
        cpuShares: parseCount(await read('cpu', 'cpu.shares')),
        cpuQuotaUs: quota === null || quota === '-1' || !period ? null : Math.round((Number(quota) * CFS_PERIOD_US) / period),
        memoryBytes: parseBytes(await read('memory', 'memory.limit_in_bytes')),
        pidsMax: pidsMax === 'max' ? null : parseCount(pidsMax),
      },
      memoryUsageBytes: parseCount(await read('memory', 'memory.usage_in_bytes')),
      cpuUsageNs: parseCount(await read('cpuacct', 'cpuacct.usage')),
      oomKills: keyedValue(await read('memory', 'memory.oom_control'), 'oom_kill'),
    };
  }

  async function freeze(name: string, frozen: boolean): Promise<boolean> {
    const group = dir('freezer', name);
    const file = group && join(group, 'freezer.state');
    if (!file || !(await exists(file))) return false;
    await writeControl(file, frozen ? 'FROZEN' : 'THAWED', sliverSubject(name));
    if (frozen) {
      // Until every task has stopped the group shows FREEZING. Waiting longer does not help the
      // caller: a task that cannot freeze (in uninterruptible sleep) still takes SIGKILL.
      const until = Date.now() + FREEZE_WAIT_MS;
      while ((await readControl(file)) !== 'FROZEN' && Date.now() < until) await sleep(5);
    }
    return true;
  }

  return {
    version: 1,
    parents: hierarchies.map((hierarchy) => join(hierarchy, parent)),
    support,
    ensureParent,
    applyLimits,
    readStatus,
    killSwitch: async () => false,
    freeze,
  };
}
