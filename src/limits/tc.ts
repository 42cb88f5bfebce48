// The bandwidth adapter: puts the HTB tree of shaping.ts on the uplink with `tc -batch`, loads the
// nftables classifier with `nft -f`, and reads the classes back (limits in force, byte counters).
//
// Ownership: the tree is ours when the device's root qdisc is an htb with our major number. A
// device with any other root qdisc that someone made (a handle other than 0:) is left alone and
// shaping is reported as refused; the kernel's own default qdisc (handle 0:) is replaced.
import { CommandError, runCommand, type CommandResult } from '../host/exec.js';
import {
  CLASSIFIER_TABLE, classifierScript, sliverClasses, treeClasses, updateTreeBatch,
  type ClassSpec, type ShapingLayout, type SliverShaping,
} from './shaping.js';
import { describeError } from '../util/errors.js';

// A fixed PATH: the daemon may be started by npm, whose PATH puts node_modules/.bin (where a
// package of the same name as `nft` lives) before the system's tools.
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const TOOL_TIMEOUT_MS = 30_000;
/** The Debian package of each tool, for an operator whose host lacks one. */
const TOOL_PACKAGES: Readonly<Record<string, string>> = { tc: 'iproute2', ip: 'iproute2', nft: 'nftables' };

/** A class as the kernel shows it. Rates are as tc prints them (rounded to 3-4 digits). */
export interface KernelClass {
  readonly minor: number;
  readonly parentMinor: number | null;
  readonly rateBit: number;
  readonly ceilBit: number;
  readonly quantum: number | null;
  readonly sentBytes: number;
}

const UNIT: Record<string, number> = { bit: 1, Kbit: 1e3, Mbit: 1e6, Gbit: 1e9, Tbit: 1e12 };

/** "5Mbit" -> 5000000; tc prints SI multiples of bits per second. */
export function parseTcRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(bit|Kbit|Mbit|Gbit|Tbit)$/.exec(text);
  if (!m) throw new Error(`not a tc rate: ${JSON.stringify(text)}`);
  return Math.round(Number(m[1]) * UNIT[m[2]!]!);
}

/** The classes of `major` in the output of `tc -s -d class show dev D`, by minor number. */
export function parseClassListing(text: string, major: string): Map<number, KernelClass> {
  const classes = new Map<number, KernelClass>();
  // Each class starts at "class htb"; its statistics ("Sent N bytes") follow on the next lines.
  for (const block of text.split(/^(?=class )/m)) {
    const head = /^class htb ([0-9a-f]+):([0-9a-f]+) (?:root|parent ([0-9a-f]+):([0-9a-f]+))/.exec(block);
    if (!head || head[1] !== major) continue;
    const rate = /\brate (\S+)/.exec(block);
    const ceil = /\bceil (\S+)/.exec(block);
    if (!rate || !ceil) throw new Error(`tc class listing: no rate or ceil for class ${head[1]}:${head[2]}`);
    const quantum = /\bquantum (\d+)/.exec(block);
    const sent = /\bSent (\d+) bytes/.exec(block);
    const minor = parseInt(head[2]!, 16);
    classes.set(minor, {
      minor,
      parentMinor: head[4] === undefined ? null : parseInt(head[4], 16),
      rateBit: parseTcRate(rate[1]!),
      ceilBit: parseTcRate(ceil[1]!),
      quantum: quantum ? Number(quantum[1]) : null,
      sentBytes: sent ? Number(sent[1]) : 0,
    });
  }
  return classes;
}

/** uid -> class minor, as the nftables classifier maps a sliver's traffic. */
export interface ClassifierReading {
  readonly main: ReadonlyMap<number, number>;
  readonly exempt: ReadonlyMap<number, number>;
}

/**
 * The classifier as `nft -j list table inet nodemgr` shows it: the uid maps, or why traffic is not
 * classified (a table without the rule that uses the map classifies nothing). Pure.
 */
export function parseClassifierListing(json: string, major: string): ClassifierReading | { problem: string } {
  const items = (JSON.parse(json) as { nftables?: Array<Record<string, unknown>> }).nftables ?? [];
  const maps = new Map<string, Map<number, number>>();
  let hooked = false;
  for (const item of items) {
    const map = item['map'] as { name?: string; elem?: unknown[] } | undefined;
    if (map?.name) {
      const entries = new Map<number, number>();
      for (const elem of map.elem ?? []) {
        if (!Array.isArray(elem) || typeof elem[0] !== 'number' || typeof elem[1] !== 'string') continue;
        const classid = /^([0-9a-f]+):([0-9a-f]+)$/.exec(elem[1]);
        if (classid && classid[1] === major) entries.set(elem[0], parseInt(classid[2]!, 16));
      }
      maps.set(map.name, entries);
    }
    if (item['rule'] && JSON.stringify(item['rule']).includes('"@sliver_class"')) hooked = true;
  }
  const main = maps.get('sliver_class');
  if (!main || !hooked) return { problem: `the nftables classifier (table inet ${CLASSIFIER_TABLE}) is incomplete: no rule maps uids to classes` };
  return { main, exempt: maps.get('sliver_exempt_class') ?? new Map() };
}

/** What shapes the slivers' traffic, as the kernel holds it. */
export interface ShapingReading {
  /** Why no sliver's traffic is shaped (tree or classifier missing); null when both are in place. */
  readonly problem: string | null;
  readonly classes: ReadonlyMap<number, KernelClass>;
  readonly classifier: ClassifierReading;
}

/** Refused because the device is shaped by someone else; nothing was changed. */
export class ShapingRefusedError extends Error {
  override readonly name = 'ShapingRefusedError';
}

/** Ceilings a byte cap imposes, kbit/s, by uid. */
export type CeilingOverrides = ReadonlyMap<number, { mainKbit?: number; exemptKbit?: number }>;

export interface TrafficShaper {
  readonly layout: ShapingLayout;
  /**
   * Brings the tree and the classifier in line with the slivers; only what changed is sent.
   * `nodeCapKbit` is the node's cap (the bwcap record); null: the link rate.
   */
  apply(slivers: readonly SliverShaping[], ceilings: CeilingOverrides, nodeCapKbit: number | null): Promise<{ tcLines: number; classifierLoaded: boolean }>;
  /** Our classes as the kernel has them, with their byte counters; empty when the tree is absent. */
  read(): Promise<Map<number, KernelClass>>;
  /** The tree and the classifier as the kernel holds them, for the limits in force. */
  inspect(): Promise<ShapingReading>;
  /** Removes our root qdisc and our nftables table (at uninstall; the daemon's stop keeps them). */
  remove(): Promise<void>;
}

export interface TrafficShaperOptions {
  readonly layout: ShapingLayout;
  /** Run tc and nft inside this network namespace (`ip netns exec`); null: the daemon's own. */
  readonly netns?: string | null;
  /** Where tc, ip and nft are looked up; default the system's directories. */
  readonly path?: string;
}

type Tool = (file: string, args: string[], input?: string) => Promise<CommandResult>;

/** tc, ip or nft, in the namespace and with the PATH of the options; a missing one names its package. */
function shapingTool(options: TrafficShaperOptions): Tool {
  const netns = options.netns ?? null;
  const env = options.path === undefined ? TOOL_ENV : { ...TOOL_ENV, PATH: options.path };
  return (file, args, input) =>
    (netns === null
      ? runCommand(file, args, { env, input, timeoutMs: TOOL_TIMEOUT_MS })
      : runCommand('ip', ['netns', 'exec', netns, file, ...args], { env, input, timeoutMs: TOOL_TIMEOUT_MS })
    ).catch((error: unknown) => {
      // `ip netns exec` reports a missing program on stderr ('exec of "nft" failed: ...').
      const missing = error instanceof CommandError &&
        (error.missing || (netns !== null && /exec of "[^"]*" failed: No such file or directory/.test(error.stderr)));
      if (missing) throw new CommandError(`${file} is not installed (Debian package ${TOOL_PACKAGES[file] ?? file})`, file, args, null, null, '', '', true);
      throw error;
    });
}

export function createTrafficShaper(options: TrafficShaperOptions): TrafficShaper {
  const { layout } = options;
  const tool = shapingTool(options);

  // What the last successful apply left, class by class; null: unknown (first apply, or a batch
  // failed half-way, since tc applies a batch line by line), so the next apply re-sends everything.
  let applied: Map<number, ClassSpec> | null = null;
  let loadedClassifier: string | null = null;

  /** Our root qdisc: 'ours', 'default' (the kernel's, replaceable) or a description of a foreign one. */
  const rootQdisc = async (): Promise<'ours' | 'default' | string> => {
    const { stdout } = await tool('tc', ['-j', 'qdisc', 'show', 'dev', layout.device]);
    const qdiscs = JSON.parse(stdout) as Array<{ kind: string; handle: string; root?: boolean }>;
    const root = qdiscs.find((q) => q.root);
    if (!root || root.handle === '0:') return 'default';
    if (root.kind === 'htb' && root.handle === `${layout.major}:`) return 'ours';
    return `${root.kind} ${root.handle}`;
  };

  const syncTree = async (layout: ShapingLayout, desired: readonly ClassSpec[]): Promise<number> => {
    let batch: string;
    if (applied === null) {
      const root = await rootQdisc();
      if (root === 'default') {
        batch = updateTreeBatch(layout, null, desired);
      } else if (root === 'ours') {
        // After a restart the kernel's classes are ours but their exact values unknown (tc prints
        // rates rounded): every class present is changed to what it must be, the rest added or
        // deleted. A change keeps the class's counters.
        const present = await parseClassListing((await tool('tc', ['-d', 'class', 'show', 'dev', layout.device])).stdout, layout.major);
        const unknown = new Map<number, ClassSpec>(
          [...present.keys()].map((minor) => [minor, { minor, parent: null, rateBit: '?', ceilBit: '?', quantum: 0, leaf: false }]),
        );
        batch = updateTreeBatch(layout, unknown, desired);
      } else {
        throw new ShapingRefusedError(
          `${layout.device} has a root qdisc (${root}) that nodemgr did not make; bandwidth is not shaped there until it is removed`,
        );
      }
    } else {
      batch = updateTreeBatch(layout, applied, desired);
    }
    const next = treeClasses(layout, desired);
    if (batch === '') {
      applied = next;
      return 0;
    }
    applied = null;
    await tool('tc', ['-batch', '-'], batch);
    applied = next;
    return batch.split('\n').length - 1;
  };

  return {
    layout,
    async apply(slivers, ceilings, nodeCapKbit) {
      const now = { ...layout, nodeCapKbit: nodeCapKbit ?? layout.linkRateKbit };
      const desired = slivers.flatMap((s) => sliverClasses(now, s, ceilings.get(s.uid) ?? {}));
      const tcLines = await syncTree(now, desired);
      const script = classifierScript(layout, slivers);
      let classifierLoaded = false;
      if (script !== loadedClassifier) {
        loadedClassifier = null;
        await tool('nft', ['-f', '-'], script);
        loadedClassifier = script;
        classifierLoaded = true;
      }
      return { tcLines, classifierLoaded };
    },

    async read() {
      if ((await rootQdisc()) !== 'ours') return new Map();
      const { stdout } = await tool('tc', ['-s', '-d', 'class', 'show', 'dev', layout.device]);
      return parseClassListing(stdout, layout.major);
    },

    async inspect() {
      const unshaped = (problem: string, classes: ReadonlyMap<number, KernelClass> = new Map()): ShapingReading =>
        ({ problem, classes, classifier: { main: new Map(), exempt: new Map() } });
      let root: string;
      try {
        root = await rootQdisc();
      } catch (error) {
        return unshaped(`the traffic classes on ${layout.device} cannot be read: ${describeError(error)}`);
      }
      if (root === 'default') return unshaped(`nodemgr's HTB tree is not on ${layout.device} (its root qdisc is the kernel's default)`);
      if (root !== 'ours') return unshaped(`${layout.device} has a root qdisc (${root}) that nodemgr did not make`);
      const classes = parseClassListing((await tool('tc', ['-s', '-d', 'class', 'show', 'dev', layout.device])).stdout, layout.major);
      let listing: string;
      try {
        listing = (await tool('nft', ['-j', 'list', 'table', 'inet', CLASSIFIER_TABLE])).stdout;
      } catch (error) {
        const missingTable = error instanceof CommandError && !error.missing && /No such file or directory/.test(error.stderr);
        return unshaped(missingTable
          ? `the nftables classifier (table inet ${CLASSIFIER_TABLE}) is not loaded, so no traffic reaches the slivers' classes`
          : `the slivers' traffic is not classified: ${describeError(error)}`, classes);
      }
      const classifier = parseClassifierListing(listing, layout.major);
      if ('problem' in classifier) return unshaped(classifier.problem, classes);
      return { problem: null, classes, classifier };
    },

    async remove() {
      if ((await rootQdisc()) === 'ours') await tool('tc', ['qdisc', 'del', 'dev', layout.device, 'root']);
      await tool('nft', ['-f', '-'], `table inet ${CLASSIFIER_TABLE} {}\ndelete table inet ${CLASSIFIER_TABLE}\n`);
      applied = null;
      loadedClassifier = null;
    },
  };
}


/** The device of the IPv4 default route, or null when there is none. */
export async function defaultRouteDevice(): Promise<string | null> {
  const { stdout } = await runCommand('ip', ['-j', 'route', 'show', 'default'], { env: TOOL_ENV, timeoutMs: TOOL_TIMEOUT_MS });
  const routes = JSON.parse(stdout || '[]') as Array<{ dev?: string }>;
  return routes.find((r) => typeof r.dev === 'string')?.dev ?? null;
}
