// Outgoing bandwidth, pure: the HTB tree on the uplink and the nftables table that sends each
// sliver's packets to its classes, as text for `tc -batch` and `nft -f`.
//
//   <major>:      root qdisc, htb, unclassified traffic to <major>:fffe
//   <major>:1     the link (rate = ceil = link_rate)
//   <major>:10    the node's cap (the bwcap record): every sliver's ordinary traffic, and the host's
//   <major>:20    exempt destinations (exempt_prefixes), with their own cap
//   <major>:M     one class per sliver under :10 (net_min_rate .. net_max_rate, weight net_share)
//   <major>:M+1   one per sliver under :20 (net_i2_min_rate .. net_i2_max_rate)
//   <major>:fffe  everything unclassified (the host itself, other users), under :10
//
// M is derived from the sliver's uid (0x100 + 2 × its offset in the uid range), so that a class
// belongs to the same account across restarts without bookkeeping. The classifier is an nftables
// table of our own: a map from socket uid to class sets the packet's priority, which HTB reads as
// its class. Only this kernel's u32 among tc classifiers exists here, and a map costs one lookup
// per packet however many slivers there are, where a chain of iptables rules costs one per sliver.

/** Rates in kbit/s as the rspec gives them (1 kbit = 1000 bit). */
export interface SliverShaping {
  readonly name: string;
  readonly uid: number;
  readonly minRateKbit: number;
  readonly maxRateKbit: number;
  readonly share: number;
  readonly exemptMinRateKbit: number;
  readonly exemptMaxRateKbit: number;
}

export interface ShapingLayout {
  readonly device: string;
  /** The root qdisc's major number (hex digits, e.g. "4e4d"); what tells our tree from another's. */
  readonly major: string;
  readonly uidMin: number;
  readonly uidMax: number;
  readonly linkRateKbit: number;
  /** The node's cap on ordinary traffic (bwcap), kbit/s. */
  readonly nodeCapKbit: number;
  readonly exemptCapKbit: number;
  /** Destinations whose traffic goes to the exempt classes: IPv4 or IPv6 prefixes. */
  readonly exemptPrefixes: readonly string[];
}

export const DEFAULT_MINOR = 0xfffe;
const FIRST_SLIVER_MINOR = 0x100;
/** HTB refuses a rate under 8 bit/s; the classes' floor. */
const MIN_RATE_BIT = 8;
/** Bytes of quantum per share: HTB divides spare bandwidth by quantum, and only roughly
 * so near one packet's size, so each share is worth well over a full-size packet. */
const QUANTUM_PER_SHARE = 20_000;
const QUANTUM_MAX = 2_000_000;

/** The largest uid range the class numbering can hold (two minors per uid below 0xfffe). */
export const MAX_SHAPED_UIDS = Math.floor((DEFAULT_MINOR - FIRST_SLIVER_MINOR) / 2);

export function sliverClassMinors(layout: ShapingLayout, uid: number): { main: number; exempt: number } {
  if (uid < layout.uidMin || uid > layout.uidMax) throw new Error(`uid ${uid} is outside the shaped range ${layout.uidMin}-${layout.uidMax}`);
  const offset = uid - layout.uidMin;
  if (offset >= MAX_SHAPED_UIDS) throw new Error(`uid ${uid} is more than ${MAX_SHAPED_UIDS} above ${layout.uidMin}: no class number is left for it`);
  return { main: FIRST_SLIVER_MINOR + 2 * offset, exempt: FIRST_SLIVER_MINOR + 2 * offset + 1 };
}

const hex = (n: number) => n.toString(16);
const rate = (kbit: number) => `${Math.max(MIN_RATE_BIT, Math.round(kbit * 1000))}bit`;
const quantum = (share: number) => Math.min(QUANTUM_MAX, Math.max(1, share) * QUANTUM_PER_SHARE);

/** One class's parameters; the same line serves to add it and (with "change") to update it. */
export interface ClassSpec {
  readonly minor: number;
  readonly parent: number | null;
  readonly rateBit: string;
  readonly ceilBit: string;
  readonly quantum: number;
  /** A leaf gets a pfifo of its own (the only leaf queue this kernel has besides bfifo). */
  readonly leaf: boolean;
}

export function classLine(layout: ShapingLayout, verb: 'add' | 'change', spec: ClassSpec): string {
  const parent = spec.parent === null ? `${layout.major}:` : `${layout.major}:${hex(spec.parent)}`;
  return `class ${verb} dev ${layout.device} parent ${parent} classid ${layout.major}:${hex(spec.minor)} htb rate ${spec.rateBit} ceil ${spec.ceilBit} quantum ${spec.quantum}`;
}

/** The fixed classes: link, node cap, exempt cap, and the default class. */
function nodeClasses(layout: ShapingLayout): ClassSpec[] {
  const cap = Math.min(layout.nodeCapKbit, layout.linkRateKbit);
  const exempt = Math.min(layout.exemptCapKbit, layout.linkRateKbit);
  return [
    { minor: 0x1, parent: null, rateBit: rate(layout.linkRateKbit), ceilBit: rate(layout.linkRateKbit), quantum: QUANTUM_MAX, leaf: false },
    { minor: 0x10, parent: 0x1, rateBit: rate(cap), ceilBit: rate(cap), quantum: QUANTUM_MAX, leaf: false },
    { minor: 0x20, parent: 0x1, rateBit: rate(exempt), ceilBit: rate(exempt), quantum: QUANTUM_MAX, leaf: false },
    { minor: DEFAULT_MINOR, parent: 0x10, rateBit: rate(0), ceilBit: rate(cap), quantum: quantum(1), leaf: true },
  ];
}

/** A sliver's two classes; `ceilings` overrides the ceilings (a byte cap throttling it). */
export function sliverClasses(
  layout: ShapingLayout,
  sliver: SliverShaping,
  ceilings: { mainKbit?: number; exemptKbit?: number } = {},
): [ClassSpec, ClassSpec] {
  const { main, exempt } = sliverClassMinors(layout, sliver.uid);
  const cap = Math.min(layout.nodeCapKbit, layout.linkRateKbit);
  const exemptCap = Math.min(layout.exemptCapKbit, layout.linkRateKbit);
  const mainCeil = Math.min(cap, ceilings.mainKbit ?? sliver.maxRateKbit);
  const exemptCeil = Math.min(exemptCap, ceilings.exemptKbit ?? sliver.exemptMaxRateKbit);
  return [
    { minor: main, parent: 0x10, rateBit: rate(Math.min(sliver.minRateKbit, mainCeil)), ceilBit: rate(mainCeil), quantum: quantum(sliver.share), leaf: true },
    { minor: exempt, parent: 0x20, rateBit: rate(Math.min(sliver.exemptMinRateKbit, exemptCeil)), ceilBit: rate(exemptCeil), quantum: quantum(sliver.share), leaf: true },
  ];
}

/** The whole tree from nothing: what `tc -batch` runs after the root qdisc is added. */
export function buildTreeBatch(layout: ShapingLayout, classes: readonly ClassSpec[]): string {
  const lines = [`qdisc add dev ${layout.device} root handle ${layout.major}: htb default ${hex(DEFAULT_MINOR)}`];
  for (const spec of [...nodeClasses(layout), ...classes]) {
    lines.push(classLine(layout, 'add', spec));
    if (spec.leaf) lines.push(`qdisc add dev ${layout.device} parent ${layout.major}:${hex(spec.minor)} handle ${hex(spec.minor)}: pfifo limit 1000`);
  }
  return lines.join('\n') + '\n';
}

/** Every class of the tree, the fixed ones and the slivers', by minor. */
export function treeClasses(layout: ShapingLayout, classes: readonly ClassSpec[]): Map<number, ClassSpec> {
  return new Map([...nodeClasses(layout), ...classes].map((spec) => [spec.minor, spec]));
}

/**
 * The lines that take the tree from `current` classes to `desired` (both by minor); with `current`
 * null, the whole tree from nothing.
 */
export function updateTreeBatch(layout: ShapingLayout, current: ReadonlyMap<number, ClassSpec> | null, desired: readonly ClassSpec[]): string {
  if (current === null) return buildTreeBatch(layout, desired);
  const lines: string[] = [];
  const wanted = treeClasses(layout, desired);
  for (const spec of wanted.values()) {
    const have = current.get(spec.minor);
    if (!have) {
      lines.push(classLine(layout, 'add', spec));
      if (spec.leaf) lines.push(`qdisc add dev ${layout.device} parent ${layout.major}:${hex(spec.minor)} handle ${hex(spec.minor)}: pfifo limit 1000`);
    } else if (have.rateBit !== spec.rateBit || have.ceilBit !== spec.ceilBit || have.quantum !== spec.quantum) {
      lines.push(classLine(layout, 'change', spec));
    }
  }
  // Only sliver classes go (the fixed ones are always wanted); each takes its leaf queue with it.
  for (const minor of current.keys()) {
    if (!wanted.has(minor)) lines.push(`class del dev ${layout.device} classid ${layout.major}:${hex(minor)}`);
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}

const NFT_TABLE = 'nodemgr';

/**
 * The nftables table, whole: re-loading it replaces the previous one atomically (nft applies a
 * file as one transaction), and no other table is touched.
 */
export function classifierScript(layout: ShapingLayout, slivers: readonly SliverShaping[]): string {
  const entries = (pick: 'main' | 'exempt') =>
    slivers.map((s) => `${s.uid} : ${layout.major}:${hex(sliverClassMinors(layout, s.uid)[pick])}`).join(', ');
  const map = (name: string, pick: 'main' | 'exempt') =>
    [`  map ${name} {`, '    type uid : classid', ...(slivers.length ? [`    elements = { ${entries(pick)} }`] : []), '  }'];
  const v4 = layout.exemptPrefixes.filter((p) => !p.includes(':'));
  const v6 = layout.exemptPrefixes.filter((p) => p.includes(':'));
  const device = JSON.stringify(layout.device);
  return [
    // Declaring then deleting makes the load work whether or not the table exists yet.
    `table inet ${NFT_TABLE} {}`,
    `delete table inet ${NFT_TABLE}`,
    `table inet ${NFT_TABLE} {`,
    ...map('sliver_class', 'main'),
    ...map('sliver_exempt_class', 'exempt'),
    '  chain classify {',
    '    type filter hook postrouting priority mangle; policy accept;',
    // A uid with no entry leaves the rule without effect, and the next rule is tried.
    ...(v4.length ? [`    oifname ${device} ip daddr { ${v4.join(', ')} } meta priority set meta skuid map @sliver_exempt_class accept`] : []),
    ...(v6.length ? [`    oifname ${device} ip6 daddr { ${v6.join(', ')} } meta priority set meta skuid map @sliver_exempt_class accept`] : []),
    `    oifname ${device} meta priority set meta skuid map @sliver_class`,
    '  }',
    '}',
  ].join('\n') + '\n';
}

export const CLASSIFIER_TABLE = NFT_TABLE;
