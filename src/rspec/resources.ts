// The resource vocabulary: one canonical name per resource, the names of both eras of the
// authority document mapped onto it, the default allocation, and what may be loaned.
// Pure data and pure functions only.

/** A sliver's resource specification: canonical resource name -> integer amount. */
export type Rspec = Record<string, number>;

export interface ResourceInfo {
  /** Canonical name used everywhere inside the program. */
  readonly name: string;
  /** Unit, for people reading status output. */
  readonly unit: string;
  /** Amount a sliver gets when the authority does not say. */
  readonly defaultAmount: number;
  /** True when a loan may move an amount of this resource between slivers. */
  readonly loanable: boolean;
  /** The least a lender must keep of a loanable resource. */
  readonly minimum: number;
  /** Largest value accepted from a document (guards against absurd or overflowing input). */
  readonly maximum: number;
}

const MAX_INT = Number.MAX_SAFE_INTEGER;

/**
 * Throttling of a byte cap starts at 80 % of the cap, as PlanetLab's bwmon takes it
 * (`net_thresh_kbyte` defaults to 0.8 x the sliver's `net_max_kbyte`): a slice that sets only its
 * cap is slowed before it has used it all, never after.
 */
function thresholdOf(capKbyte: number): number {
  return Math.floor(capKbyte * 0.8);
}

/** Each byte-cap threshold and the cap its default follows. */
const THRESHOLDS: ReadonlyArray<{ threshold: string; cap: string }> = [
  { threshold: 'net_thresh_kbyte', cap: 'net_max_kbyte' },
  { threshold: 'net_i2_thresh_kbyte', cap: 'net_i2_max_kbyte' },
];

function resource(
  name: string,
  unit: string,
  defaultAmount: number,
  loan: { loanable: boolean; minimum?: number },
  maximum = MAX_INT,
): ResourceInfo {
  return { name, unit, defaultAmount, loanable: loan.loanable, minimum: loan.minimum ?? 0, maximum };
}

// Defaults follow the PlanetLab node manager's DEFAULT_ALLOCATION: a sliver that the authority
// says nothing about gets a fair share of one, no reservation, and effectively unlimited rates.
const RESOURCES: readonly ResourceInfo[] = [
  resource('enabled', 'flag', 1, { loanable: false }, 1),
  resource('cpu_pct', '% of one CPU, guaranteed', 0, { loanable: true, minimum: 0 }, 100 * 1024),
  resource('cpu_share', 'shares', 1, { loanable: true, minimum: 1 }, 1_000_000),
  // Hard limits, 0 meaning none: a ceiling on CPU (CFS quota), memory, and processes.
  resource('cpu_cap', '% of one CPU, at most', 0, { loanable: false }, 100 * 1024),
  resource('mem_max', 'KiB', 0, { loanable: false }),
  resource('proc_max', 'processes', 0, { loanable: false }, 4_194_304),
  // Virtual CPUs of a libvirt guest, 0 meaning as many as its instance size gives.
  resource('vcpus', 'virtual CPUs', 0, { loanable: false }, 1024),
  resource('net_min_rate', 'kbit/s', 0, { loanable: true, minimum: 0 }),
  resource('net_max_rate', 'kbit/s', 1_000_000, { loanable: true, minimum: 8 }),
  resource('net_i2_min_rate', 'kbit/s', 0, { loanable: true, minimum: 0 }),
  resource('net_i2_max_rate', 'kbit/s', 1_000_000, { loanable: true, minimum: 8 }),
  resource('net_share', 'shares', 1, { loanable: true, minimum: 1 }, 1_000_000),
  // A threshold the slice does not give is 80 % of the sliver's own cap (see THRESHOLDS).
  resource('net_max_kbyte', 'KiB/day', 10_546_875, { loanable: false }),
  resource('net_thresh_kbyte', 'KiB/day', thresholdOf(10_546_875), { loanable: false }),
  resource('net_i2_max_kbyte', 'KiB/day', 31_640_625, { loanable: false }),
  resource('net_i2_thresh_kbyte', 'KiB/day', thresholdOf(31_640_625), { loanable: false }),
  resource('disk_max', 'KiB', 10_000_000, { loanable: false }),
];

const BY_NAME: ReadonlyMap<string, ResourceInfo> = new Map(RESOURCES.map((r) => [r.name, r]));

/**
 * The seed document's `nm_*` names. `scale` converts the seed's unit into the canonical one:
 * nm_cpu_guaranteed_share counted thousandths of the CPU (200 = 20 %), cpu_pct counts percent.
 */
const SEED_ALIASES: ReadonlyMap<string, { name: string; divisor: number }> = new Map([
  ['nm_cpu_share', { name: 'cpu_share', divisor: 1 }],
  ['nm_cpu_guaranteed_share', { name: 'cpu_pct', divisor: 10 }],
  ['nm_disk_quota', { name: 'disk_max', divisor: 1 }],
  ['nm_enabled', { name: 'enabled', divisor: 1 }],
  ['nm_net_min_rate', { name: 'net_min_rate', divisor: 1 }],
  ['nm_net_max_rate', { name: 'net_max_rate', divisor: 1 }],
  ['nm_net_exempt_min_rate', { name: 'net_i2_min_rate', divisor: 1 }],
  ['nm_net_exempt_max_rate', { name: 'net_i2_max_rate', divisor: 1 }],
  ['nm_net_share', { name: 'net_share', divisor: 1 }],
]);

/** Resources whose value is text rather than an integer; they are sliver attributes, not rspec. */
export const TEXT_ATTRIBUTES: ReadonlySet<string> = new Set(['initscript', 'vref', 'runtime', 'kernel', 'initrd', 'instance_size']);

export function resourceInfo(canonicalName: string): ResourceInfo | undefined {
  return BY_NAME.get(canonicalName);
}

export function allResources(): readonly ResourceInfo[] {
  return RESOURCES;
}

export type CanonicalAmount =
  | { ok: true; name: string; amount: number }
  | { ok: false; reason: string };

/**
 * Maps a resource as written in a document (either era's name) onto its canonical name and unit.
 * Returns undefined for a name this program does not know (the caller keeps and reports it).
 */
export function canonicalResource(name: string): { name: string; divisor: number } | undefined {
  if (BY_NAME.has(name)) return { name, divisor: 1 };
  return SEED_ALIASES.get(name);
}

/** Converts an amount given under `writtenName` into the canonical unit, validating its range. */
export function toCanonicalAmount(writtenName: string, amount: number): CanonicalAmount {
  const alias = canonicalResource(writtenName);
  if (!alias) return { ok: false, reason: `unknown resource "${writtenName}"` };
  const info = BY_NAME.get(alias.name)!;
  if (!Number.isSafeInteger(amount) || amount < 0) {
    return { ok: false, reason: `resource "${writtenName}" must be a non-negative integer, got ${amount}` };
  }
  const converted = Math.floor(amount / alias.divisor);
  if (converted > info.maximum) {
    return { ok: false, reason: `resource "${writtenName}" is ${amount}, above its maximum ${info.maximum * alias.divisor}` };
  }
  return { ok: true, name: alias.name, amount: converted };
}

/** The full rspec of a sliver: defaults overlaid with what the authority gave. */
export function withDefaults(given: Rspec): Rspec {
  const full: Rspec = {};
  for (const r of RESOURCES) full[r.name] = r.defaultAmount;
  for (const [name, amount] of Object.entries(given)) full[name] = amount;
  for (const { threshold, cap } of THRESHOLDS) {
    if (!Object.hasOwn(given, threshold)) full[threshold] = thresholdOf(full[cap]!);
  }
  return full;
}
