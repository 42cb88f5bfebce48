// A guest's shape from its effective rspec, pure: how many vCPUs and how much memory (an instance
// size, overridden by the rspec), its CPU weight and cap, and its interface bandwidth, in libvirt's
// units. The CPU weight and cap follow the same arithmetic as the cgroups of unix slivers, so a
// sliver's rspec means the same whichever runtime it has.
import { capQuotaUs, CFS_PERIOD_US, cpuWeights, SHARES_MAX, SHARES_MIN, sharesToWeight } from '../../rspec/cpu.js';
import { resourceInfo, type Rspec } from '../../rspec/resources.js';

export type InstanceSizeName = 'small' | 'medium' | 'large';

export interface InstanceSizeShape {
  readonly memoryKiB: number;
  readonly vcpus: number;
}

export const INSTANCE_SIZES: Readonly<Record<InstanceSizeName, InstanceSizeShape>> = {
  small: { memoryKiB: 512 * 1024, vcpus: 1 },
  medium: { memoryKiB: 1024 * 1024, vcpus: 2 },
  large: { memoryKiB: 2048 * 1024, vcpus: 4 },
};

export const DEFAULT_INSTANCE_SIZE: InstanceSizeName = 'small';

/** Less than this is taken for a mistake of unit (MiB written where KiB is meant), not a guest. */
export const MIN_GUEST_MEMORY_KIB = 16 * 1024;

/**
 * Interface bandwidth in libvirt's unit, kilobytes per second (libvirt hands it to tc as kbps,
 * 1000 bytes), for both directions. null: no such limit.
 */
export interface GuestBandwidth {
  /** From net_max_rate. */
  readonly averageKBps: number | null;
  /** From net_min_rate: a guarantee, which libvirt can only give on interfaces of a libvirt network. */
  readonly floorKBps: number | null;
}

export interface GuestShape {
  readonly size: InstanceSizeName;
  readonly vcpus: number;
  readonly memoryKiB: number;
  /** The weight on the cgroup v1 scale (cpu.shares, 2..262144). */
  readonly cpuShares: number;
  /** The same weight on the cgroup v2 scale (cpu.weight, 1..10000), which libvirt wants on a v2 host. */
  readonly cpuWeight: number;
  readonly cpuPeriodUs: number;
  /** CFS quota of the whole guest per period, from cpu_cap; null: no cap. */
  readonly cpuQuotaUs: number | null;
  /** null when neither rate limits anything. */
  readonly bandwidth: GuestBandwidth | null;
}

export type ShapeResult = { ok: true; shape: GuestShape } | { ok: false; reason: string };

export interface ShapeOptions {
  /**
   * The guest's cpu.shares as guestCpuShares computed it over all the node's guests. Without it the
   * guest is weighed on its own: 1024 (the cgroup default) per unit of cpu_share, cpu_pct ignored.
   */
  readonly cpuShares?: number;
}

const STANDALONE_SHARES_PER_UNIT = 1024;

function isSizeName(name: string): name is InstanceSizeName {
  return Object.prototype.hasOwnProperty.call(INSTANCE_SIZES, name);
}

const amount = (rspec: Rspec, key: string) => rspec[key] ?? 0;

/**
 * cpu.shares for each guest by the arithmetic of the unix slivers' cgroups (cpu_share divides what
 * the cpu_pct guarantees leave), over the guests that compete for the CPU under one parent cgroup.
 */
export function guestCpuShares(guests: readonly { name: string; rspec: Rspec }[], cpuCount: number): ReadonlyMap<string, number> {
  return cpuWeights(
    guests.map((g) => ({ name: g.name, share: amount(g.rspec, 'cpu_share'), guaranteedPct: amount(g.rspec, 'cpu_pct') })),
    cpuCount,
  ).weights;
}

function bandwidth(rspec: Rspec): GuestBandwidth | null {
  const unlimited = resourceInfo('net_max_rate')?.defaultAmount ?? 1_000_000;
  const maxKbit = amount(rspec, 'net_max_rate');
  const minKbit = amount(rspec, 'net_min_rate');
  // kbit/s to kB/s; a cap rounds down so that it is never exceeded, a guarantee up so it is kept.
  const averageKBps = maxKbit > 0 && maxKbit < unlimited ? Math.max(1, Math.floor(maxKbit / 8)) : null;
  const floorKBps = minKbit > 0 ? Math.max(1, Math.ceil(minKbit / 8)) : null;
  if (averageKBps === null && floorKBps === null) return null;
  // A guarantee above the cap cannot be kept; the cap wins, as in the unix slivers' HTB classes.
  return { averageKBps, floorKBps: averageKBps !== null && floorKBps !== null ? Math.min(floorKBps, averageKBps) : floorKBps };
}

/** The guest's shape for the slice's instance_size (null or '': small) and effective rspec. */
export function guestShape(rspec: Rspec, size: string | null, options: ShapeOptions = {}): ShapeResult {
  const sizeName = size === null || size.trim() === '' ? DEFAULT_INSTANCE_SIZE : size.trim();
  if (!isSizeName(sizeName)) {
    return { ok: false, reason: `unknown instance_size "${size}" (one of ${Object.keys(INSTANCE_SIZES).join(', ')})` };
  }
  const base = INSTANCE_SIZES[sizeName];
  const vcpus = amount(rspec, 'vcpus');
  const memMax = amount(rspec, 'mem_max');
  if (!Number.isSafeInteger(vcpus) || vcpus < 0) return { ok: false, reason: `rspec vcpus must be a non-negative integer, got ${vcpus}` };
  if (!Number.isSafeInteger(memMax) || memMax < 0) return { ok: false, reason: `rspec mem_max must be a non-negative integer (KiB), got ${memMax}` };
  if (memMax > 0 && memMax < MIN_GUEST_MEMORY_KIB) {
    return { ok: false, reason: `rspec mem_max is ${memMax} KiB, less than the ${MIN_GUEST_MEMORY_KIB} KiB a guest needs (the unit is KiB)` };
  }
  const given = options.cpuShares;
  if (given !== undefined && (!Number.isSafeInteger(given) || given < SHARES_MIN || given > SHARES_MAX)) {
    return { ok: false, reason: `cpu shares must be an integer from ${SHARES_MIN} to ${SHARES_MAX}, got ${given}` };
  }
  const cpuShares = given ?? Math.min(SHARES_MAX, Math.max(SHARES_MIN, STANDALONE_SHARES_PER_UNIT * Math.max(1, amount(rspec, 'cpu_share'))));
  return {
    ok: true,
    shape: {
      size: sizeName,
      vcpus: vcpus > 0 ? vcpus : base.vcpus,
      memoryKiB: memMax > 0 ? memMax : base.memoryKiB,
      cpuShares,
      cpuWeight: sharesToWeight(cpuShares),
      cpuPeriodUs: CFS_PERIOD_US,
      cpuQuotaUs: capQuotaUs(amount(rspec, 'cpu_cap')),
      bandwidth: bandwidth(rspec),
    },
  };
}
