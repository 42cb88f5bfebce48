// Crash consistency: the daemon is killed with SIGKILL at a random moment while it creates slivers,
// destroys them, re-applies limits after a SetLoans, and adds an image; after each restart the node
// converges to the document with nothing left over on the host (accounts, homes, run files,
// cgroups, traffic classes, classifier entries) and a database that validates. As root, with a
// real daemon whose traffic classes shape a veth pair of the test's own (connected to nothing).
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { readImageIndex } from '../../src/images/store.js';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import { createSliverCgroups } from '../../src/limits/cgroups.js';
import { SHAPING_MAJOR } from '../../src/limits/host-limits.js';
import { sliverClassMinors, type ShapingLayout } from '../../src/limits/shaping.js';
import { parseClassListing } from '../../src/limits/tc.js';
import { sliverLimits } from '../../src/limits/sliver-limits.js';
import { desiredState } from '../../src/reconcile/desired.js';
import {
  accountPrefix, isRoot, leaseTestUids, removeAccounts, run, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess, waitFor,
  type DaemonProcess, type DocumentServer, type Sandbox, type UidLease,
} from '../system/support/host.js';
import { slicesXml, type TestSlice } from '../system/support/slices.js';
import { differences, nodeState, objectCount, uidsOf, type Inventory, type NodeLayout } from './support/inventory.js';
import { scaled } from './support/scale.js';

const SLIVERS = scaled(20, 100);
const TRIALS = scaled(2, 20);
// One range for the file: each test's node meets the slivers (of the same names) the one before left.
let uids: UidLease | null = null;
const DEVICE = `nmc${randomBytes(3).toString('hex')}`;

const prefix = accountPrefix();
const cleanups: Array<() => Promise<unknown>> = [];
const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('crash consistency: needs root (real accounts, cgroups, a network namespace)', () => undefined);

/** Trials, and objects counted after each restart, for the summary. */
const figures: string[] = [];

test.before(async () => {
  if (!isRoot) return;
  // A veth pair of its own (this kernel has no dummy device), in the host's namespace, where the
  // daemon sees the cgroups too (`ip netns exec` would remount /sys without them).
  await run('ip', ['link', 'add', DEVICE, 'type', 'veth', 'peer', 'name', `${DEVICE}p`]);
  await run('ip', ['link', 'set', DEVICE, 'up']);
  uids = await leaseTestUids(200, 'test/chaos/crash.test.ts');
});

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (!isRoot) return;
  await removeAccounts(prefix);
  await uids?.release();
  await run('ip', ['link', 'del', DEVICE]).catch(() => undefined);
  // The classifier's table: the host's nft by its path (npm's PATH has another program of that name).
  await run('/usr/sbin/nft', ['delete', 'table', 'inet', 'nodemgr']).catch(() => undefined);
  for (const line of figures) console.log(`crash consistency: ${line}`);
});

const name = (i: number) => `${prefix}_${String(i).padStart(3, '0')}`;
const random = (below: number) => Math.floor(Math.random() * below);

function documentOf(timestamp: number, count: number): string {
  const slices: TestSlice[] = Array.from({ length: count }, (_, i) => ({
    name: name(i), resources: { cpu_share: 4, net_max_rate: 8_000, initscript: '#!/bin/sh\nsleep 3600 &\n' },
  }));
  return slicesXml(timestamp, slices);
}

interface CrashNode {
  box: Sandbox;
  layout: NodeLayout;
  server: DocumentServer;
  daemon: DaemonProcess | null;
  timestamp: number;
  start(): DaemonProcess;
  kill(): Promise<void>;
}

async function crashNode(settings: Record<string, string | number> = {}): Promise<CrashNode> {
  const server = await serveDocument(documentOf(1, 0));
  const box = await sandbox({
    authority_url: server.url, shaping_device: DEVICE, ...settings,
  }, { uids: uids! });
  cleanups.push(() => server.close(), () => box.cleanup());
  const config = await readFile(box.config, 'utf8');
  const setting = (key: string) => new RegExp(`^${key} = (.*)$`, 'm').exec(config)![1]!;
  const shapingLayout: ShapingLayout = {
    device: DEVICE, major: SHAPING_MAJOR, uidMin: box.uids.min, uidMax: box.uids.max, linkRateKbit: 1_000_000, nodeCapKbit: 1_000_000,
    exemptCapKbit: 1_000_000, exemptPrefixes: [],
  };
  const node: CrashNode = {
    box, server, daemon: null, timestamp: 1,
    layout: {
      stateDir: box.stateDir, runDir: setting('run_dir'), homeBase: '/home', uidMin: box.uids.min, uidMax: box.uids.max,
      cgroupParent: setting('cgroup_parent'), shaping: { netns: null, layout: shapingLayout }, guests: null,
    },
    start() {
      const daemon = startDaemonProcess(box.config);
      node.daemon = daemon;
      cleanups.push(() => stopDaemonProcess(daemon, 'SIGKILL'));
      return daemon;
    },
    async kill() {
      if (!node.daemon) return;
      node.daemon.child.kill('SIGKILL');
      await node.daemon.exited;
      node.daemon = null;
    },
  };
  return node;
}

/** Resolves once the daemon listens for SIGHUP (before that, the signal's default would end it). */
async function started(daemon: DaemonProcess): Promise<void> {
  await waitFor('the daemon to start', async () => daemon.output().includes('daemon starting') || daemon.child.exitCode !== null);
  if (daemon.child.exitCode !== null) throw new Error(`the daemon exited: ${daemon.output().slice(-2000)}`);
}

/** Serves a document of `count` slivers and has the running daemon sync at once. */
function serve(node: CrashNode, count: number): void {
  node.server.set(documentOf(++node.timestamp, count));
  node.daemon?.child.kill('SIGHUP');
}

/** waitFor, with the daemon's last lines in the error when the time runs out. */
function waitOn<T>(node: CrashNode, what: string, check: () => Promise<T | null | false | undefined>): Promise<T> {
  return waitFor(what, check, 120_000).catch((error: Error) => {
    throw new Error(`${error.message}\n${node.daemon?.output().split('\n').slice(-30).join('\n') ?? ''}`);
  });
}

async function accountCount(): Promise<number> {
  const text = await readFile('/etc/passwd', 'utf8');
  return text.split('\n').filter((l) => l.startsWith(`${prefix}_`)).length;
}

/** What a node converged on `count` slivers holds: each object kind names exactly those slivers. */
async function expectedInventory(node: CrashNode, count: number): Promise<Inventory> {
  const names = Array.from({ length: count }, (_, i) => name(i));
  const uids = await uidsOf(node.layout);
  const uidList = names.map((n) => String(uids.get(n) ?? `uid of ${n}`)).sort();
  return {
    accounts: names, groups: names, shadowLines: [...names.map((n) => `${n} (/etc/shadow)`), ...names.map((n) => `${n} (/etc/gshadow)`)].sort(),
    homes: names, runFiles: names, cgroups: names, trafficClassUids: uidList, strayTrafficClasses: [],
    classifiedUids: uidList, addressLeases: [],
  };
}

/**
 * Waits (up to two minutes) until the node holds exactly the document's `count` slivers, all
 * running; returns what still differs then (nothing, once converged) and the objects counted.
 */
async function settle(node: CrashNode, count: number): Promise<{ differences: string[]; objects: number }> {
  let last: string[] = ['nothing read yet'];
  let objects = 0;
  await waitFor('convergence', async () => {
    const state = await nodeState(node.layout);
    objects = objectCount(state.inventory);
    last = differences(state.inventory, await expectedInventory(node, count));
    if (state.database.records['timestamp']?.timestamp !== node.timestamp) last.push('the document is not in force yet');
    const running = Object.values(state.database.accounts).filter((a) => a.state === 'running').length;
    if (running !== count || Object.keys(state.database.accounts).length !== count) last.push(`${running} of ${count} running in the database`);
    return last.length === 0;
  }, 120_000).catch(() => undefined);
  return { differences: last, objects };
}

/** Asserts that the node converged on `count` slivers with nothing left over; the objects counted. */
async function assertConverged(t: ExecutionContext, node: CrashNode, count: number, what: string): Promise<number> {
  const { differences: found, objects } = await settle(node, count);
  if (found.length > 0) t.log(node.daemon?.output().split('\n').slice(-40).join('\n'));
  t.deepEqual(found, [], what);
  return objects;
}

serial(`kill -9 while ${SLIVERS} slivers are created and while they are destroyed: after each restart, nothing left over`, async (t) => {
  const node = await crashNode();
  await started(node.start());
  let objects = 0;
  for (let trial = 1; trial <= TRIALS; trial++) {
    // Created: killed once a random number of the accounts exist.
    const createdAtKill = 1 + random(SLIVERS - 1);
    serve(node, SLIVERS);
    await waitOn(node, `${createdAtKill} accounts made`, async () => (await accountCount()) >= createdAtKill);
    await node.kill();
    const made = await accountCount();
    node.start();
    objects += await assertConverged(t, node, SLIVERS, `trial ${trial}: ${SLIVERS} slivers after a kill at ${made} made`);

    // Destroyed: killed once a random number of them are gone.
    const goneAtKill = 1 + random(SLIVERS - 1);
    serve(node, 0);
    await waitOn(node, `${goneAtKill} accounts removed`, async () => (await accountCount()) <= SLIVERS - goneAtKill);
    await node.kill();
    const left = await accountCount();
    node.start();
    objects += await assertConverged(t, node, 0, `trial ${trial}: no slivers after a kill at ${left} left`);
    t.log(`trial ${trial}: killed at ${made}/${SLIVERS} created and at ${left}/${SLIVERS} left; both converged with 0 orphans`);
  }
  figures.push(`create and destroy of ${SLIVERS} slivers: ${TRIALS} + ${TRIALS} kills, 0 orphans (${objects} objects counted after the restarts)`);
  await stopDaemonProcess(node.daemon!);
});

const xmlrpc = createRequire(import.meta.url)('xmlrpc') as typeof import('xmlrpc');

/** One API call as root over the node's Unix socket; the result, or the error. */
function call(node: CrashNode, method: string, params: unknown[]): Promise<unknown> {
  const client = xmlrpc.createClient({ socketPath: join(node.layout.runDir, 'api.sock'), path: '/RPC2' } as Parameters<typeof xmlrpc.createClient>[0]);
  return new Promise((resolve, reject) => client.methodCall(method, params, (error: unknown, value: unknown) => (error ? reject(error) : resolve(value))));
}

/**
 * What the kernel must hold for the records in force: each sliver's cpu shares and ordinary
 * ceiling, from the same pure arithmetic the daemon uses; what differs, in words.
 */
async function limitsDiffer(node: CrashNode): Promise<string[]> {
  const db = await readDatabaseSnapshot(join(node.layout.stateDir, 'nodemgr.json'));
  const uids = await uidsOf(node.layout);
  const targets = desiredState(db, 'unix').specs.flatMap((s) => (uids.has(s.name) ? [{ name: s.name, uid: uids.get(s.name)!, rspec: s.rspec }] : []));
  const cgroups = await createSliverCgroups({ parent: node.layout.cgroupParent });
  const classes = parseClassListing((await run('/usr/sbin/tc', ['-d', 'class', 'show', 'dev', DEVICE])).stdout, SHAPING_MAJOR);
  const out: string[] = [];
  for (const l of sliverLimits(targets, availableParallelism())) {
    const shares = (await cgroups.read(l.name))?.limits.cpuShares ?? null;
    if (shares !== l.cgroup.cpuShares) out.push(`${l.name}: cpu shares ${shares}, records say ${l.cgroup.cpuShares}`);
    const ceil = classes.get(sliverClassMinors(node.layout.shaping!.layout, l.uid).main)?.ceilBit ?? 0;
    // tc prints rates rounded to a few digits
    if (Math.abs(ceil - l.shaping.maxRateKbit * 1000) > l.shaping.maxRateKbit * 10) out.push(`${l.name}: ceiling ${ceil} bit/s, records say ${l.shaping.maxRateKbit} kbit/s`);
  }
  return out;
}

serial('kill -9 while a SetLoans is re-applied: after the restart the kernel holds what the records say, and an answered SetLoans is kept', async (t) => {
  const count = 6;
  const trials = scaled(3, 20);
  const node = await crashNode();
  await started(node.start());
  serve(node, count);
  t.deepEqual((await settle(node, count)).differences, [], 'the node runs its slivers');
  // How long a SetLoans takes to be answered here: the kills land within twice that.
  let started_ = Date.now();
  await call(node, 'SetLoans', [name(0), [[name(1), 'cpu_share', 1]]]);
  const answerMs = Date.now() - started_;
  let answered = 0;
  for (let trial = 1; trial <= trials; trial++) {
    const lender = name(random(count));
    const recipient = name((Number(lender.slice(-3)) + 1 + random(count - 1)) % count);
    const loans = [[recipient, 'cpu_share', 1 + random(3)], [recipient, 'net_max_rate', 1_000 * (1 + random(7))]];
    started_ = Date.now();
    const pending = call(node, 'SetLoans', [lender, loans]).then(() => true, () => false);
    // Not a wait for something: the kill comes at a random moment of the SetLoans.
    await new Promise((r) => setTimeout(r, random(2 * answerMs + 1)));
    await node.kill();
    const wasAnswered = await pending;
    if (wasAnswered) answered++;
    node.start();
    t.deepEqual((await settle(node, count)).differences, [], `trial ${trial}: the node converged`);
    let differ: string[] = [];
    await waitFor('the limits of the records', async () => (differ = await limitsDiffer(node)).length === 0, 60_000).catch(() => undefined);
    t.deepEqual(differ, [], `trial ${trial}: the kernel holds what the records say`);
    const kept = (await readDatabaseSnapshot(join(node.layout.stateDir, 'nodemgr.json'))).records[`sliver_${lender}`];
    if (wasAnswered) {
      t.deepEqual(kept?.type === 'sliver' ? kept.loans : null, loans.map(([r, res, a]) => ({ recipient: r, resource: res, amount: a })),
        `trial ${trial}: a SetLoans that was answered survived the kill`);
    }
  }
  t.log(`${trials} kills during SetLoans (answered in ${answerMs} ms here; ${answered} answered before the kill, each kept)`);
  figures.push(`SetLoans re-apply: ${trials} kills (${answered} after the answer), the kernel matched the records after each restart`);
  await stopDaemonProcess(node.daemon!);
});

serial('kill -9 during an image add: after the restart the cache holds the image whole or not at all, and no stray file', async (t) => {
  const trials = scaled(2, 20);
  const image = randomBytes(24 * 1024 * 1024);
  const sha256 = createHash('sha256').update(image).digest('hex');
  // Served at about 8 MiB/s, so that a download takes some 3 s and a kill lands in it.
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': image.length });
    let at = 0;
    const timer = setInterval(() => {
      if (at >= image.length || res.destroyed) {
        clearInterval(timer);
        res.end();
        return;
      }
      res.write(image.subarray(at, at + 256 * 1024));
      at += 256 * 1024;
    }, 31);
    res.on('close', () => clearInterval(timer));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => { server.closeAllConnections(); server.close(() => r(undefined)); }));
  const uri = `http://127.0.0.1:${(server.address() as { port: number }).port}/base.img`;

  const node = await crashNode();
  const cacheDir = join(node.box.dir, 'images');
  await started(node.start());
  let whole = 0;
  for (let trial = 1; trial <= trials; trial++) {
    void call(node, 'AddImage', [uri, 'image', 'crash test']).catch(() => undefined);
    // Not a wait for something: the kill comes at a random moment of the download.
    await new Promise((r) => setTimeout(r, 100 + random(3_000)));
    await node.kill();
    await started(node.start());
    // Whatever was cut off is gone; an entry that is listed is whole.
    const entries = await readImageIndex(cacheDir);
    const files = (await readdir(cacheDir)).filter((f) => f !== 'index.json').sort();
    t.deepEqual(files, entries.map((e) => e.path.slice(cacheDir.length + 1)).sort(), `trial ${trial}: no stray file in the cache`);
    for (const e of entries) {
      t.is(createHash('sha256').update(await readFile(e.path)).digest('hex'), e.sha256, `trial ${trial}: ${e.name} is whole`);
      whole++;
    }
    // The image can be added after the restart, and is then whole.
    await call(node, 'AddImage', [uri, 'image', 'crash test']);
    const [entry] = await readImageIndex(cacheDir);
    t.is(entry?.sha256, sha256);
    await call(node, 'RemoveImage', ['base.img']);
  }
  t.log(`${trials} kills during a 24 MiB image add; ${whole} found whole after the restart, the others gone`);
  figures.push(`image add: ${trials} kills, no partial file left, every listed entry whole`);
  await stopDaemonProcess(node.daemon!);
});
