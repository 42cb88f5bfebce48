// The limits in force on the host, read back from the kernel (cgroup files, tc classes, quotas)
// and from the byte-cap counts, for `nodemgr status` and GetSliverStatus. What the plan says is
// shown elsewhere; this is what the host actually holds, so a difference between them shows.
import { join } from 'node:path';
import type { ByteCapStates } from './bwmon.js';
import type { SliverCgroups } from './cgroups.js';
import { CFS_PERIOD_US } from './cpu.js';
import type { DiskLimits } from './disk.js';
import { sliverClassMinors } from './shaping.js';
import type { KernelClass, TrafficShaper } from './tc.js';

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

function put(into: LimitsInForce, key: string, value: number | string | boolean | null | undefined): void {
  if (value !== null && value !== undefined) into[key] = value;
}

export async function readLimitsInForce(
  sources: InForceSources,
  slivers: ReadonlyArray<{ name: string; uid: number }>,
): Promise<Map<string, LimitsInForce>> {
  const result = new Map<string, LimitsInForce>();
  let classes = new Map<number, KernelClass>();
  const notes: string[] = [...sources.unavailable.entries()].map(([kind, why]) => `${kind}: ${why}`);
  const nodeProblems = describeProblems(sources.problems?.get(''));
  if (nodeProblems) notes.push(nodeProblems);
  if (sources.shaper) {
    classes = await sources.shaper.read().catch((error: unknown) => {
      notes.push(`bandwidth: classes not readable: ${(error as Error).message}`);
      return new Map<number, KernelClass>();
    });
  }
  const disk = sources.disk
    ? await sources.disk.usageAll(slivers.map((s) => ({ uid: s.uid, home: join(sources.homeBase, s.name) }))).catch((error: unknown) => {
      notes.push(`disk: usage not measured: ${(error as Error).message}`);
      return null;
    })
    : null;
  const diskSupport = sources.disk ? await sources.disk.support().catch(() => null) : null;

  for (const s of slivers) {
    const limits: LimitsInForce = {};
    const cgroup = sources.cgroups ? await sources.cgroups.read(s.name).catch(() => null) : null;
    if (cgroup) {
      put(limits, 'cpu_shares', cgroup.limits.cpuShares);
      put(limits, 'cpu_cap', cgroup.limits.cpuQuotaUs === null ? null : Math.round((cgroup.limits.cpuQuotaUs / CFS_PERIOD_US) * 1000) / 10);
      put(limits, 'mem_max', cgroup.limits.memoryBytes === null ? null : kib(cgroup.limits.memoryBytes));
      put(limits, 'mem_used', cgroup.memoryUsageBytes === null ? null : kib(cgroup.memoryUsageBytes));
      put(limits, 'proc_max', cgroup.limits.pidsMax);
      put(limits, 'processes', cgroup.processes);
      put(limits, 'oom_kills', cgroup.oomKills);
      put(limits, 'cpu_used_seconds', cgroup.cpuUsageNs === null ? null : Math.round(cgroup.cpuUsageNs / 1e7) / 100);
    }
    if (sources.shaper) {
      try {
        const minors = sliverClassMinors(sources.shaper.layout, s.uid);
        const main = classes.get(minors.main);
        const exempt = classes.get(minors.exempt);
        put(limits, 'net_min_rate', main && Math.round(main.rateBit / 1000));
        put(limits, 'net_max_rate', main && Math.round(main.ceilBit / 1000));
        put(limits, 'net_i2_min_rate', exempt && Math.round(exempt.rateBit / 1000));
        put(limits, 'net_i2_max_rate', exempt && Math.round(exempt.ceilBit / 1000));
      } catch {
        // outside the shaped uid range: no classes, and the enforcer reports why
      }
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
    if (diskSupport && !diskSupport.enforced && diskSupport.reason) put(limits, 'disk_note', diskSupport.reason);
    put(limits, 'problems', describeProblems(sources.problems?.get(s.name)));
    if (notes.length > 0) put(limits, 'notes', notes.join('; '));
    result.set(s.name, limits);
  }
  return result;
}
