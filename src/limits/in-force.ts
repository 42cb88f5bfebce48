// The limits in force on the host, read back from the kernel (cgroup files, tc classes, quotas)
// and from the byte-cap counts, for `nodemgr status` and GetSliverStatus. What the plan says is
// shown elsewhere; this is what the host actually holds, so a difference between them shows.
import { join } from 'node:path';
import type { ByteCapStates } from './bwmon.js';
import type { SliverCgroups } from './cgroups.js';
import { CFS_PERIOD_US } from '../rspec/cpu.js';
import type { DiskLimits } from './disk.js';
import { sliverClassMinors } from './shaping.js';
import type { KernelClass, ShapingReading, TrafficShaper } from './tc.js';
import { mapBounded } from '../util/bounded.js';
import { describeError } from '../util/errors.js';

/** Field -> value, in the rspec's units (KiB, kbit/s, percent); a field is absent when not in force. */
export type LimitsInForce = Record<string, number | string | boolean>;

export interface InForceSources {
  readonly cgroups: SliverCgroups | null;
  readonly shaper: TrafficShaper | null;
  readonly disk: DiskLimits | null;
  readonly byteCaps: ByteCapStates;
  readonly byteCapPeriodSeconds: number;
  readonly homeBase: string;
  /** Why a kind of limit is not enforced on this host. */
  readonly unavailable: ReadonlyMap<string, string>;
  /** What the daemon could not apply, by sliver ('' is the node) and kind; absent outside it. */
  readonly problems?: ReadonlyMap<string, ReadonlyMap<string, string>>;
}

const describeProblems = (problems: ReadonlyMap<string, string> | undefined) =>
  problems && problems.size > 0 ? [...problems].map(([kind, text]) => `${kind}: ${text}`).join('; ') : null;

const kib = (bytes: number) => Math.floor(bytes / 1024);

/**
 * Cgroup reads in flight at once: one after the other, a thousand slivers' groups took seconds;
 * more than this gains little more and keeps the thread pool from the daemon's other file work.
 */
const CGROUP_READS_IN_FLIGHT = 8;

function put(into: LimitsInForce, key: string, value: number | string | boolean | null | undefined): void {
  if (value !== null && value !== undefined) into[key] = value;
}

/** Per limit of a cgroup, the words an operator reads in "X: not enforced". */
const CGROUP_DOMAINS: ReadonlyArray<[keyof SliverCgroups['support'], string]> = [
  ['cpu', 'cpu shares'], ['cpuQuota', 'cpu cap'], ['memory', 'memory'], ['pids', 'processes'],
];

/**
 * Reads back, for each sliver, what the kernel enforces. A limit is listed only where the host holds
 * it; where it does not, `not_enforced` says so with the reason, per domain (cpu, memory, processes,
 * bandwidth, disk), for the node's reasons (a tool or controller missing) and the sliver's own (no
 * cgroup, traffic not classified into its class) alike.
 */
export async function readLimitsInForce(
  sources: InForceSources,
  slivers: ReadonlyArray<{ name: string; uid: number }>,
): Promise<Map<string, LimitsInForce>> {
  const result = new Map<string, LimitsInForce>();
  const notes: string[] = [];
  const nodeProblems = describeProblems(sources.problems?.get(''));
  if (nodeProblems) notes.push(nodeProblems);

  // What no sliver has on this host, with the reason.
  const nodeWide: string[] = [];
  if (!sources.cgroups) {
    const why = sources.unavailable.get('cgroups') ?? 'cgroups are not available';
    nodeWide.push(`cpu, memory, processes: not enforced: ${why}`);
  } else {
    for (const [key, words] of CGROUP_DOMAINS) {
      const why = sources.cgroups.support[key];
      if (why !== null) nodeWide.push(`${words}: not enforced: ${why}`);
    }
  }
  let shaping: ShapingReading | null = null;
  if (!sources.shaper) {
    nodeWide.push(`bandwidth: not enforced: ${sources.unavailable.get('bandwidth') ?? 'no device is shaped'}`);
  } else {
    shaping = await sources.shaper.inspect().catch((error: unknown) => ({
      problem: `the traffic classes cannot be read: ${describeError(error)}`,
      classes: new Map<number, KernelClass>(), classifier: { main: new Map(), exempt: new Map() },
    }));
    if (shaping.problem !== null) nodeWide.push(`bandwidth: not enforced: ${shaping.problem}`);
  }
  const diskSupport = sources.disk ? await sources.disk.support().catch(() => null) : null;
  if (!sources.disk) nodeWide.push('disk: not enforced: no disk limits on this host');
  else if (diskSupport && !diskSupport.enforced) {
    // The disk adapter's reasons already begin with "not enforced: ".
    nodeWide.push(`disk: not enforced: ${(diskSupport.reason ?? 'no quotas on the file system of the homes').replace(/^not enforced: /, '')}`);
  }

  const disk = sources.disk
    ? await sources.disk.usageAll(slivers.map((s) => ({ uid: s.uid, home: join(sources.homeBase, s.name) }))).catch((error: unknown) => {
      notes.push(`disk: usage not measured: ${describeError(error)}`);
      return null;
    })
    : null;

  const { cgroups } = sources;
  const readings = cgroups
    ? await mapBounded(slivers, CGROUP_READS_IN_FLIGHT, (s) => cgroups.read(s.name).catch(() => null))
    : slivers.map(() => null);
  for (const [i, s] of slivers.entries()) {
    const limits: LimitsInForce = {};
    const notEnforced = [...nodeWide];
    const cgroup = readings[i];
    if (cgroup) {
      put(limits, 'cpu_shares', cgroup.limits.cpuShares);
      put(limits, 'cpu_cap', cgroup.limits.cpuQuotaUs === null ? null : Math.round((cgroup.limits.cpuQuotaUs / CFS_PERIOD_US) * 1000) / 10);
      put(limits, 'mem_max', cgroup.limits.memoryBytes === null ? null : kib(cgroup.limits.memoryBytes));
      put(limits, 'mem_used', cgroup.memoryUsageBytes === null ? null : kib(cgroup.memoryUsageBytes));
      put(limits, 'proc_max', cgroup.limits.pidsMax);
      put(limits, 'processes', cgroup.processes);
      put(limits, 'oom_kills', cgroup.oomKills);
      put(limits, 'cpu_used_seconds', cgroup.cpuUsageNs === null ? null : Math.round(cgroup.cpuUsageNs / 1e7) / 100);
    } else if (sources.cgroups) {
      notEnforced.push('cpu, memory, processes: not enforced: the sliver has no cgroup (yet)');
    }
    if (sources.shaper && shaping && shaping.problem === null) {
      const why = bandwidthOf(sources.shaper, shaping, s.uid, limits);
      if (why !== null) notEnforced.push(`bandwidth: not enforced: ${why}`);
    }
    const caps = sources.byteCaps[s.name];
    if (caps) {
      put(limits, 'net_kbyte_used', kib(caps.main.usedBytes));
      put(limits, 'net_i2_kbyte_used', kib(caps.exempt.usedBytes));
      put(limits, 'net_period_start', new Date(caps.main.periodStart * 1000).toISOString());
      put(limits, 'net_period_end', new Date((caps.main.periodStart + sources.byteCapPeriodSeconds) * 1000).toISOString());
      put(limits, 'net_throttled', caps.main.notified);
      put(limits, 'net_i2_throttled', caps.exempt.notified);
    }
    const usage = disk?.get(s.uid);
    if (usage) {
      put(limits, 'disk_used', usage.usedKiB);
      put(limits, 'disk_max', usage.limitKiB);
      put(limits, 'disk_enforced', usage.enforced);
      if (!usage.complete) put(limits, 'disk_used_note', 'at least: the walk of the home stopped at its bound');
    }
    put(limits, 'problems', describeProblems(sources.problems?.get(s.name)));
    if (notEnforced.length > 0) put(limits, 'not_enforced', notEnforced.join('; '));
    if (notes.length > 0) put(limits, 'notes', notes.join('; '));
    result.set(s.name, limits);
  }
  return result;
}

/**
 * Puts the sliver's rates where its traffic is classified into its classes; otherwise returns why
 * its bandwidth is not enforced.
 */
function bandwidthOf(shaper: TrafficShaper, shaping: ShapingReading, uid: number, limits: LimitsInForce): string | null {
  let minors;
  try {
    minors = sliverClassMinors(shaper.layout, uid);
  } catch (error) {
    return describeError(error);
  }
  const main = shaping.classes.get(minors.main);
  if (!main) return `uid ${uid} has no traffic class`;
  if (shaping.classifier.main.get(uid) !== minors.main) return `uid ${uid} is not classified into its traffic class`;
  put(limits, 'net_min_rate', Math.round(main.rateBit / 1000));
  put(limits, 'net_max_rate', Math.round(main.ceilBit / 1000));
  const exempt = shaping.classes.get(minors.exempt);
  if (exempt && shaping.classifier.exempt.get(uid) === minors.exempt) {
    put(limits, 'net_i2_min_rate', Math.round(exempt.rateBit / 1000));
    put(limits, 'net_i2_max_rate', Math.round(exempt.ceilBit / 1000));
  }
  return null;
}
