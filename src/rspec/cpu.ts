// CPU arithmetic, pure: from the slivers' effective rspecs to the weight each sliver's cgroup gets.
//
// A weight alone gives proportions, and `cpu_pct` promises a floor ("this many percent of one CPU,
// whoever else is busy"). Both fit in one weight per sliver: of a fixed total, each guarantee
// takes its fraction of the node's CPU outright, and what is left is divided by `cpu_share`. With
// every sliver busy, a sliver then gets at least its guarantee plus its share of the rest; with
// some idle, the scheduler hands their time to the busy ones in proportion, so nobody loses.
// Moving shares between two slivers (a loan) changes only those two weights: the others' parts
// depend on the sums, which a loan keeps.

/** cgroup v1 cpu.shares accepts 2..262144; the total is what the weights of all slivers add up to. */
export const SHARES_MIN = 2;
export const SHARES_MAX = 262_144;
const WEIGHT_TOTAL = SHARES_MAX;
/** Guarantees may take at most this much of the node; the rest keeps the others running. */
const MAX_GUARANTEED_FRACTION = 0.9;

export interface CpuClaim {
  readonly name: string;
  /** Relative share of the CPU left after guarantees (cpu_share, at least 1). */
  readonly share: number;
  /** Guaranteed percent of one CPU (cpu_pct). */
  readonly guaranteedPct: number;
}

export interface CpuWeights {
  /** cpu.shares per sliver, 2..262144. */
  readonly weights: ReadonlyMap<string, number>;
  /** Set when the guarantees added up to more than the node can give: they were scaled by this. */
  readonly guaranteesScaledBy: number | null;
}

export function cpuWeights(claims: readonly CpuClaim[], cpuCount: number): CpuWeights {
  if (!Number.isInteger(cpuCount) || cpuCount < 1) throw new Error(`cpuCount must be a positive integer, got ${cpuCount}`);
  const fraction = (c: CpuClaim) => Math.max(0, c.guaranteedPct) / (100 * cpuCount);
  const guaranteed = claims.reduce((sum, c) => sum + fraction(c), 0);
  const scale = guaranteed > MAX_GUARANTEED_FRACTION ? MAX_GUARANTEED_FRACTION / guaranteed : 1;
  const shareTotal = claims.reduce((sum, c) => sum + Math.max(1, c.share), 0);
  const left = 1 - guaranteed * scale;
  const weights = new Map<string, number>();
  for (const c of claims) {
    const part = fraction(c) * scale + (left * Math.max(1, c.share)) / shareTotal;
    weights.set(c.name, Math.min(SHARES_MAX, Math.max(SHARES_MIN, Math.round(part * WEIGHT_TOTAL))));
  }
  return { weights, guaranteesScaledBy: scale === 1 ? null : scale };
}

/** cgroup v2 cpu.weight (1..10000) for a v1 cpu.shares value, by the OCI runtimes' linear mapping of 2..262144 onto 1..10000. */
export function sharesToWeight(shares: number): number {
  const clamped = Math.min(SHARES_MAX, Math.max(SHARES_MIN, shares));
  return Math.max(1, Math.min(10_000, 1 + Math.floor(((clamped - SHARES_MIN) * 9_999) / (SHARES_MAX - SHARES_MIN))));
}

/** The CFS period used for caps: 100 ms, the kernel's default. */
export const CFS_PERIOD_US = 100_000;

/** CFS quota per period for a cap in percent of one CPU (150 = one and a half CPUs); null: none. */
export function capQuotaUs(capPct: number): number | null {
  if (!(capPct > 0)) return null;
  // The kernel refuses a quota under 1 ms.
  return Math.max(1_000, Math.round((capPct / 100) * CFS_PERIOD_US));
}
