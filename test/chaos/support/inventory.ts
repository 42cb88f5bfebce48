// Every kind of object a node's daemon makes on the host, listed from the host itself (never from
// the daemon's own bookkeeping), so that a test can count what a crash left behind: accounts,
// homes, run files, cgroups, traffic classes and their classifier, libvirt domains, guest
// directories, address leases and container root mounts.
import { readdir, readFile, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { readDatabaseSnapshot } from '../../../src/db/store.js';
import type { NodeDatabase } from '../../../src/db/types.js';
import { createSliverCgroups } from '../../../src/limits/cgroups.js';
import { sliverClassMinors, treeClasses, type ShapingLayout } from '../../../src/limits/shaping.js';
import { parseClassifierListing, parseClassListing } from '../../../src/limits/tc.js';
import { readDomainDetails } from '../../../src/runtimes/libvirt/domain-xml.js';
import { LXC_ROOTS_DIR } from '../../../src/runtimes/libvirt/lxc-root.js';
import { run } from '../../system/support/host.js';

export interface NodeLayout {
  readonly stateDir: string;
  readonly runDir: string;
  readonly homeBase: string;
  readonly uidMin: number;
  readonly uidMax: number;
  readonly cgroupParent: string;
  /** The layout of the shaped device (and its network namespace, null: the host's); null: the node shapes nothing. */
  readonly shaping: { readonly netns: string | null; readonly layout: ShapingLayout } | null;
  /** The daemon's guest_dir and libvirt URI; null: no guests looked for. */
  readonly guests: { readonly dir: string; readonly uri: string } | null;
}

/** Object kind -> the names (or uids, as text) of what exists of that kind. */
export type Inventory = Record<string, string[]>;

export interface NodeState {
  readonly inventory: Inventory;
  /** The database as on disk; reading it validates it. */
  readonly database: NodeDatabase;
}

const sorted = (values: Iterable<string | number>) => [...values].map(String).sort();

async function accounts(node: NodeLayout): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  for (const line of (await readFile('/etc/passwd', 'utf8')).split('\n')) {
    const [name, , uid, , gecos] = line.split(':');
    const n = Number(uid);
    if (name && /^nodemgr (sliver|delegate)$/.test(gecos ?? '') && n >= node.uidMin && n <= node.uidMax) found.set(name, n);
  }
  return found;
}

/**
 * The other account files' entries of the range: groups with a gid in it, and the shadow and
 * gshadow lines of those groups' and of the range's accounts' names. A batch killed between its
 * renames must leave none without its account once the node has converged.
 */
async function accountFileEntries(node: NodeLayout, accountNames: ReadonlySet<string>): Promise<{ groups: string[]; shadowLines: string[] }> {
  const groups: string[] = [];
  for (const line of (await readFile('/etc/group', 'utf8')).split('\n')) {
    const [name, , gid] = line.split(':');
    const n = Number(gid);
    if (name && gid !== undefined && n >= node.uidMin && n <= node.uidMax) groups.push(name);
  }
  const ours = new Set([...accountNames, ...groups]);
  const shadowLines: string[] = [];
  for (const file of ['/etc/shadow', '/etc/gshadow']) {
    for (const line of (await readFile(file, 'utf8').catch(() => '')).split('\n')) {
      const name = line.split(':', 1)[0]!;
      if (ours.has(name)) shadowLines.push(`${name} (${file})`);
    }
  }
  return { groups: sorted(groups), shadowLines: sorted(shadowLines) };
}

/** Directories in the home base owned by a uid of the node's range. */
async function homes(node: NodeLayout): Promise<string[]> {
  const names: string[] = [];
  for (const name of await readdir(node.homeBase).catch(() => [] as string[])) {
    const st = await lstat(join(node.homeBase, name)).catch(() => null);
    if (st?.isDirectory() && st.uid >= node.uidMin && st.uid <= node.uidMax) names.push(name);
  }
  return names;
}

async function inNetns(netns: string | null, args: string[]): Promise<string> {
  return (await (netns === null ? run(args[0]!, args.slice(1)) : run('ip', ['netns', 'exec', netns, ...args]))).stdout;
}

/** uids that have traffic classes, and classes that belong to no uid of the range nor to the tree. */
async function trafficClasses(node: NodeLayout): Promise<{ uids: string[]; stray: string[]; classified: string[] }> {
  if (!node.shaping) return { uids: [], stray: [], classified: [] };
  const { netns, layout } = node.shaping;
  const listing = await inNetns(netns, ['/usr/sbin/tc', '-d', 'class', 'show', 'dev', layout.device]).catch(() => '');
  const classes = parseClassListing(listing, layout.major);
  const owner = new Map<number, number>();
  for (let uid = node.uidMin; uid <= node.uidMax; uid++) {
    const minors = sliverClassMinors(layout, uid);
    owner.set(minors.main, uid);
    owner.set(minors.exempt, uid);
  }
  const fixed = new Set(treeClasses(layout, []).keys());
  const uids = new Set<number>();
  const stray: number[] = [];
  for (const minor of classes.keys()) {
    const uid = owner.get(minor);
    if (uid !== undefined) uids.add(uid);
    else if (!fixed.has(minor)) stray.push(minor);
  }
  const table = await inNetns(netns, ['/usr/sbin/nft', '-j', 'list', 'table', 'inet', 'nodemgr']).catch(() => null);
  const classifier = table === null ? null : parseClassifierListing(table, layout.major);
  const classified = classifier && !('problem' in classifier) ? [...classifier.main.keys()] : [];
  return { uids: sorted(uids), stray: sorted(stray.map((m) => m.toString(16))), classified: sorted(classified) };
}

async function guestObjects(node: NodeLayout): Promise<Inventory> {
  if (!node.guests) return {};
  const { dir, uri } = node.guests;
  const names = (await run('virsh', ['-c', uri, 'list', '--all', '--name']).catch(() => ({ stdout: '' }))).stdout
    .split('\n').map((l) => l.trim()).filter(Boolean);
  const domains: string[] = [];
  for (const name of names) {
    const xml = await run('virsh', ['-c', uri, 'dumpxml', name]).then((r) => r.stdout, () => '');
    if (xml && readDomainDetails(xml).marker?.guestDir === dir) domains.push(name);
  }
  const guestDirs = (await readdir(dir).catch(() => [] as string[])).filter((n) => n !== LXC_ROOTS_DIR);
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')
    .filter((line) => / - overlay /.test(line))
    .map((line) => line.split(' ')[4]!)
    .filter((mountPoint) => mountPoint.startsWith(`${dir}/`));
  const bases = (await readdir(join(dir, LXC_ROOTS_DIR)).catch(() => [] as string[]));
  return { domains: sorted(domains), guestDirs: sorted(guestDirs), lxcMounts: sorted(mounts), lxcBases: sorted(bases) };
}

/** What the node holds on the host now, by kind, and its database (validated as it is read). */
export async function nodeState(node: NodeLayout): Promise<NodeState> {
  const database = await readDatabaseSnapshot(join(node.stateDir, 'nodemgr.json'));
  const owned = await accounts(node);
  const cgroups = await createSliverCgroups({ parent: node.cgroupParent }).then((c) => c.list(), () => [] as string[]);
  const runFiles = (await readdir(join(node.runDir, 'initscripts')).catch(() => [] as string[])).map((f) => f.split('.')[0]!);
  const tc = await trafficClasses(node);
  const leases = Object.values(database.addresses).map((l) => l.sliver);
  return {
    database,
    inventory: {
      accounts: sorted(owned.keys()),
      ...(await accountFileEntries(node, new Set(owned.keys()))),
      homes: sorted(await homes(node)),
      runFiles: sorted(new Set(runFiles)),
      cgroups: sorted(cgroups),
      trafficClassUids: tc.uids,
      strayTrafficClasses: tc.stray,
      classifiedUids: tc.classified,
      addressLeases: sorted(new Set(leases)),
      ...(await guestObjects(node)),
    },
  };
}

/** The uids of accounts by name, as the host has them. */
export async function uidsOf(node: NodeLayout): Promise<Map<string, number>> {
  return accounts(node);
}

/**
 * What differs from a node that holds exactly `expected` (kind -> names): objects left over and
 * objects missing, in words ("cgroups: left over nt1_a"); empty when they agree.
 */
export function differences(inventory: Inventory, expected: Inventory): string[] {
  const out: string[] = [];
  for (const kind of new Set([...Object.keys(inventory), ...Object.keys(expected)])) {
    const have = new Set(inventory[kind] ?? []);
    const want = new Set(expected[kind] ?? []);
    const extra = [...have].filter((x) => !want.has(x));
    const missing = [...want].filter((x) => !have.has(x));
    if (extra.length > 0) out.push(`${kind}: left over ${extra.join(', ')}`);
    if (missing.length > 0) out.push(`${kind}: missing ${missing.join(', ')}`);
  }
  return out;
}

/** Objects counted in an inventory, over every kind. */
export function objectCount(inventory: Inventory): number {
  return Object.values(inventory).reduce((sum, names) => sum + names.length, 0);
}
