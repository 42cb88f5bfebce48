// From the slivers' effective rspecs to what each one's cgroup, traffic classes and quota must
// hold. Pure: the same slivers give the same limits, so applying them again changes nothing.
import type { Rspec } from '../rspec/resources.js';
import type { CgroupLimits } from './cgroups.js';
import { capQuotaUs, cpuWeights } from '../rspec/cpu.js';
import type { SliverShaping } from './shaping.js';

export interface LimitTarget {
  readonly name: string;
  readonly uid: number;
  /** The effective rspec: the sliver's own with loans applied, defaults filled in. */
  readonly rspec: Rspec;
}

export interface SliverLimits {
  readonly name: string;
  readonly uid: number;
  readonly rspec: Rspec;
  readonly cgroup: CgroupLimits;
  readonly shaping: SliverShaping;
  /** disk_max in KiB; null: none. */
  readonly diskKiB: number | null;
}

const amount = (rspec: Rspec, key: string) => rspec[key] ?? 0;
/** 0 means "no limit" for the hard limits. */
const limitOrNull = (n: number, scale = 1) => (n > 0 ? n * scale : null);

export function sliverLimits(targets: readonly LimitTarget[], cpuCount: number): SliverLimits[] {
  const { weights } = cpuWeights(
    targets.map((t) => ({ name: t.name, share: amount(t.rspec, 'cpu_share'), guaranteedPct: amount(t.rspec, 'cpu_pct') })),
    cpuCount,
  );
  return targets.map((t) => ({
    name: t.name,
    uid: t.uid,
    rspec: t.rspec,
    cgroup: {
      cpuShares: weights.get(t.name)!,
      cpuQuotaUs: capQuotaUs(amount(t.rspec, 'cpu_cap')),
      memoryBytes: limitOrNull(amount(t.rspec, 'mem_max'), 1024),
      pidsMax: limitOrNull(amount(t.rspec, 'proc_max')),
    },
    shaping: {
      name: t.name,
      uid: t.uid,
      minRateKbit: amount(t.rspec, 'net_min_rate'),
      maxRateKbit: amount(t.rspec, 'net_max_rate'),
      share: Math.max(1, amount(t.rspec, 'net_share')),
      exemptMinRateKbit: amount(t.rspec, 'net_i2_min_rate'),
      exemptMaxRateKbit: amount(t.rspec, 'net_i2_max_rate'),
    },
    diskKiB: limitOrNull(amount(t.rspec, 'disk_max')),
  }));
}

export function sameCgroupLimits(a: CgroupLimits, b: CgroupLimits): boolean {
  return a.cpuShares === b.cpuShares && a.cpuQuotaUs === b.cpuQuotaUs && a.memoryBytes === b.memoryBytes && a.pidsMax === b.pidsMax;
}
