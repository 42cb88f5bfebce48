// Syncing: a no-change sync of 10,000 records, a new document to 200 and 1,000 new Unix slivers
// all running and a document without them to all removed (beside serial useradd/userdel for 200
// accounts, measured in the same run), the daemon's memory with 10,000 records, and the daemon
// itself on 10,000 real slivers (about ten minutes). Prints figures only; no thresholds.
//
//   node --import tsx bench/sync.ts [nochange] [slivers] [rss] [scale]   (as root for the slivers' and scale figures;
//   BENCH_LOG=file keeps the daemon's log of it; BENCH_SLIVERS=200 runs fewer sizes, BENCH_NO_PEER=1 skips useradd)
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultConfig } from '../src/config/config.js';
import { createLimiter } from '../src/accounts/limiter.js';
import { createSupervisors } from '../src/accounts/supervisor.js';
import { startDaemon } from '../src/app/daemon.js';
import { createRuntime } from '../src/app/factories.js';
import { databasePath, lockPath } from '../src/app/paths.js';
import { openDatabase } from '../src/db/store.js';
import { createLogger } from '../src/log.js';
import { createConverger } from '../src/sync/converge.js';
import { createDocumentSync } from '../src/sync/document.js';
import { createSyncStatusFile, syncStatusPath } from '../src/sync/sync-status.js';
import { disabledSlices, generateSlicesXml } from './lib/generate-slices.js';
import { daemonAtScale } from './lib/daemon-at-scale.js';
import { daemonFlags } from './lib/daemon-flags.js';
import { nodeOfRecords, unexpiring } from './lib/node-of-records.js';
import { desiredOfRecords } from '../src/reconcile/desired.js';
import { recordWriter } from '../src/db/record-writer.js';
import { runCommand } from '../src/host/exec.js';
import { median } from './lib/median.js';

const here = dirname(fileURLToPath(import.meta.url));
const execFileAsync = promisify(execFile);

async function timeRuns(runs: number, task: () => Promise<unknown>): Promise<{ median: number; min: number }> {
  for (let i = 0; i < 3; i++) await task();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    await task();
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return { median: median(times), min: Math.min(...times) };
}

const fmt = (t: { median: number; min: number }) => `${t.median.toFixed(1)} ms (min ${t.min.toFixed(1)})`;

/**
 * The daemon's own path, as its poller runs it: the document sync (conditional fetch, parse,
 * apply, database update) and the converger (expire, observe, plan, bookkeeping) on a store
 * that holds 10,000 records, with the host's account files as the runtime left them.
 */
async function noChangeSync() {
  const node = nodeOfRecords(10_000);
  const file = join(node.dir, 'slices.xml');
  writeFileSync(file, node.xml);
  const logger = createLogger({ console: false });
  const config = { ...node.config, authorityUrl: new URL(`file://${file}`).href, stateDir: join(node.dir, 'state') };
  mkdirSync(config.stateDir, { recursive: true });
  const { store } = await openDatabase({ path: databasePath(config), lockPath: lockPath(config), coalesceMs: config.dbCoalesceMs, logger });
  store.update(() => node.database);
  await store.flush();
  const now = () => new Date();
  const supervisors = createSupervisors({
    runtime: node.runtime, hooks: [], limiter: createLimiter(1), logger, retryInitialMs: 1000, retryMaxMs: 1000, opTimeoutMs: 60_000,
    report: () => { throw new Error('a no-change sync ran an operation'); },
  });
  const syncStatus = createSyncStatusFile(syncStatusPath(config.stateDir), null, logger);
  const records = recordWriter(store, logger);
  const documents = createDocumentSync({ config, store, records, syncStatus, logger, now });
  const converger = createConverger({ store, records, runtime: node.runtime, supervisors, logger, now, desired: desiredOfRecords(config.defaultRuntime) });
  const converge = async () => {
    const plan = await converger.converge('bench');
    if (plan.ops.length !== 0) throw new Error(`a no-change sync planned ${plan.ops.length} operations`);
  };
  await documents.fetchAndApply(); // the first fetch: the same records, and the validators to send

  const notModified = await timeRuns(20, async () => {
    await documents.fetchAndApply();
    if (syncStatus.current?.detail !== 'not modified since the last fetch') throw new Error('expected not-modified');
    await converge();
  });
  let bump = 0;
  const refetched = await timeRuns(10, async () => {
    utimesSync(file, new Date(), new Date(Date.now() + ++bump * 1000)); // a new mtime: a new validator, a full read
    await documents.fetchAndApply();
    if (syncStatus.current?.outcome !== 'unchanged' || syncStatus.current.detail.startsWith('not modified')) {
      throw new Error(`expected the document read again and unchanged, got ${syncStatus.current?.detail}`);
    }
    await converge();
  });
  const convergeOnly = await timeRuns(20, converge);
  const flushStart = process.hrtime.bigint();
  store.update((db) => ({ ...db })); // what one database write of 10,000 records costs, when one is due
  await store.flush();
  const writeMs = Number(process.hrtime.bigint() - flushStart) / 1e6;
  await supervisors.stop();
  await store.close();
  await syncStatus.flush();
  rmSync(node.dir, { recursive: true, force: true });
  return { notModified, refetched, convergeOnly, writeMs, bytes: node.xml.length };
}

interface SliverFigures {
  readonly createMs: number;
  readonly running: number;
  readonly records: number;
  /** Slivers the document disables (nm_enabled 0): made, and stopped rather than running. */
  readonly disabled: number;
  readonly destroyMs: number;
}

/**
 * The daemon's own path from a new document with `count` Unix slivers to all of them running, and
 * from a document without them to all of them gone (accounts, homes, operations done).
 */
async function sliversFromDocument(count: number): Promise<SliverFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'nodemgr-bench-'));
  chmodSync(dir, 0o755);
  const doc = join(dir, 'slices.xml');
  const text = unexpiring(generateSlicesXml({ slices: count, nodeId: 1, onNodeFraction: 1, seed: 11, namePrefix: 'nb_' }));
  writeFileSync(doc, text);
  const disabled = disabledSlices(text);
  const config = {
    ...defaultConfig(), nodeId: 1, authorityUrl: new URL(`file://${doc}`).href, stateDir: join(dir, 'state'),
    runDir: join(dir, 'run'), logDir: join(dir, 'log'), homeBase: join(dir, 'home'), apiSocket: join(dir, 'run', 'api.sock'),
    sliverUidMin: SLIVER_UIDS.min, sliverUidMax: SLIVER_UIDS.max, apiPort: 0, metricsPort: 0,
  };
  mkdirSync(config.homeBase, { mode: 0o755 });
  const logger = process.env.BENCH_LOG ? createLogger({ console: false, file: process.env.BENCH_LOG }) : createLogger({ console: false });
  const start = Date.now();
  const daemon = await startDaemon(config, logger);
  await daemon.settled();
  const createMs = Date.now() - start;
  const states = Object.values(daemon.store.data.accounts);
  const running = states.filter((a) => a.state === 'running').length;
  // The authority drops them all: the same daemon destroys them, as it would in service.
  const runtime = createRuntime(config, logger);
  const remaining = async () => (await runtime.observe({ readOnly: true })).owned.filter((a) => a.name.startsWith('nb_')).length;
  writeFileSync(doc, `<slices timestamp="${Math.floor(Date.now() / 1000)}"></slices>\n`);
  const destroyStart = Date.now();
  daemon.syncNow();
  // Gone from the account files, and every destroy done (homes and run files removed too).
  while ((await remaining()) > 0 || Object.keys(daemon.store.data.accounts).length > 0) await new Promise((resolve) => setTimeout(resolve, 20));
  await daemon.settled();
  const destroyMs = Date.now() - destroyStart;
  await daemon.stop();
  rmSync(dir, { recursive: true, force: true });
  return { createMs, running, records: states.length, disabled, destroyMs };
}

/** The peer: what shadow-utils' own tools take for the same accounts, one call each, in a row. */
async function serialShadowUtils(count: number): Promise<{ createMs: number; destroyMs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'nodemgr-bench-'));
  chmodSync(dir, 0o755);
  const names = Array.from({ length: count }, (_, i) => `nbp_${i}`);
  const range = ['-K', `UID_MIN=${PEER_UIDS.min}`, '-K', `UID_MAX=${PEER_UIDS.max}`, '-K', `GID_MIN=${PEER_UIDS.min}`, '-K', `GID_MAX=${PEER_UIDS.max}`];
  let start = Date.now();
  for (const name of names) {
    await runCommand('useradd', ['-m', '-d', join(dir, name), '-c', 'nodemgr bench peer', '-s', '/bin/bash', '-p', '*', '-U', ...range, '-l', name]);
  }
  const createMs = Date.now() - start;
  start = Date.now();
  for (const name of names) await runCommand('userdel', ['-r', name]);
  const destroyMs = Date.now() - start;
  rmSync(dir, { recursive: true, force: true });
  return { createMs, destroyMs };
}

// BENCH_SLIVERS=200 (a comma-separated list) measures fewer.
const SLIVER_COUNTS = (process.env.BENCH_SLIVERS ?? '200,1000').split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0 && n <= 1500);

// Fixed ranges outside the tests' uid pool (test/system/support/uid-leases.ts).
const SLIVER_UIDS = { min: 76_000, max: 77_499 };
const PEER_UIDS = { min: 77_500, max: 77_999 };

async function sliverFigures(): Promise<string[]> {
  if (process.getuid?.() !== 0) return ['  skipped (needs root: it creates real accounts)'];
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const lines: string[] = [];
  const peer = process.env.BENCH_NO_PEER ? null : await serialShadowUtils(200);
  for (const count of SLIVER_COUNTS) {
    const f = await sliversFromDocument(count);
    lines.push(`  ${String(count).padStart(5)} slivers: new document -> all running ${s(f.createMs)} (${f.running} of ${f.records} running, ${f.disabled} disabled by the document); ` +
      `document without them -> all removed ${s(f.destroyMs)}`);
  }
  if (peer) {
    lines.push(`  peer, serial useradd / userdel for 200 accounts: ${s(peer.createMs)} / ${s(peer.destroyMs)} ` +
      `(${(peer.createMs / 200).toFixed(1)} / ${(peer.destroyMs / 200).toFixed(1)} ms per account)`);
  }
  return lines;
}

const SCALE = 10_000;

async function scaleFigures(): Promise<string> {
  if (process.getuid?.() !== 0) return 'skipped (needs root: it creates real accounts)';
  const f = await daemonAtScale(SCALE, { node: process.execPath, flags: daemonFlags(join(here, '..')), cli: join(here, '..', 'dist', 'src', 'cli', 'main.js') });
  const settled = f.idleMb.slice(-6);
  return `new document to every enabled sliver running (${f.enabled}) ${f.runningSeconds.toFixed(0)} s, RSS at most ${f.peakMb.toFixed(0)} MB meanwhile; ` +
    `idle afterwards, every 10 s: ${f.idleMb.map((mb) => mb.toFixed(0)).join(' ')} MB (the last minute: ${Math.min(...settled).toFixed(0)}–${Math.max(...settled).toFixed(0)} MB); ` +
    `document without them to all removed ${f.removedSeconds.toFixed(0)} s`;
}

async function daemonRss(): Promise<string> {
  execFileSync('npx', ['tsc', '-p', join(here, '..', 'tsconfig.json')], { stdio: 'ignore' });
  const probe = join(here, '..', 'dist', 'bench', 'lib', 'rss-probe.js');
  // Each probe watches an idle process for minutes: they run side by side.
  const measure = async (flags: string[], count: number) => {
    const { stdout } = await execFileAsync(process.execPath, [...flags, probe, String(count)], { encoding: 'utf8' });
    const [start, settled, after, used, committed] = stdout.trim().split(' ');
    return `${start} MB right after the start, ${settled} MB settled (after ${after} s; heap ${used} MB used of ${committed} MB)`;
  };
  const flags = daemonFlags(join(here, '..'));
  const small = ['--max-semi-space-size=2'];
  const [records, none, smallYoung] = await Promise.all([measure(flags, 10_000), measure(flags, 0), measure(small, 10_000)]);
  return `with 10,000 records: ${records}\n  with none (Node's own floor): ${none}\n` +
    `  with 10,000 records and the young generation held to 2 MB (${small.join(' ')}): ${smallYoung}`;
}

// Parts to run: any of nochange, slivers, rss, scale (all when none is named).
const parts = new Set(process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['nochange', 'slivers', 'rss', 'scale']);
console.log(`machine: ${cpus()[0]?.model ?? 'unknown cpu'}, ${cpus().length} cores, node ${process.version}`);
if (parts.has('nochange')) {
  const sync = await noChangeSync();
  console.log(`\nno-change sync, 10,000 records (document ${(sync.bytes / 1e6).toFixed(2)} MB), median of runs:`);
  console.log(`  conditional fetch answered "not modified" + converge pass: ${fmt(sync.notModified)}`);
  console.log(`  the same document fetched again, parsed, applied + converge pass: ${fmt(sync.refetched)}`);
  console.log(`  converge pass alone (expire, observe 10,000 accounts, plan):     ${fmt(sync.convergeOnly)}`);
  console.log(`  one durable database write of the 10,000 records (when one is due): ${sync.writeMs.toFixed(1)} ms`);
  console.log(`  (the original node manager has no comparable figure: it re-ran every account's setup each sync)`);
}
if (parts.has('slivers')) console.log(`\nUnix slivers from a new document (the daemon, batched account files) beside shadow-utils' tools:\n${(await sliverFigures()).join('\n')}`);
if (parts.has('scale')) console.log(`\nthe daemon itself (its command, every service) with ${SCALE.toLocaleString('en')} real Unix slivers:\n  ${await scaleFigures()}`);
if (parts.has('rss')) console.log(`\ndaemon RSS (compiled code, database opened from disk, host observed and planned, then idle as between polls):\n  ${await daemonRss()}`);
