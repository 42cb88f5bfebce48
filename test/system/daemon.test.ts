// The daemon end to end, as root, against the real host: an authority document served over HTTP on
// loopback becomes real accounts, and the host follows every change of the document.
import test from 'ava';
import { readFile, stat, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import type { NodeDatabase, SyncStatus } from '../../src/db/types.js';
import { readSyncStatus, syncStatusPath } from '../../src/sync/sync-status.js';
import {
  accountPrefix, isRoot, leaseTestUids, nodemgr, passwdEntries, processesOf, removeAccounts, run, sandbox, serveDocument,
  startDaemonProcess, stopDaemonProcess, waitFor, type DaemonProcess, type Sandbox, type UidLease,
} from './support/host.js';
import { publicKeys, slicesXml, type TestSlice } from './support/slices.js';

const prefix = accountPrefix();
// One range for the file, as each test's daemon may meet what the tests before it left: 100
// slivers of one test and the few of the others.
let uids: UidLease | null = null;
let keys: string[] = [];
const cleanups: Array<() => Promise<unknown>> = [];

// systemd-analyze is looked for once, before any test is declared, so that a host without it
// reports its test as skipped.
const systemdAnalyze = (await run('sh', ['-c', 'command -v systemd-analyze || true'])).stdout.trim();

if (!isRoot) test.skip('the daemon end to end: needs root (real accounts and a real daemon)', () => undefined);

const serial = isRoot ? test.serial : test.skip;

test.before(async () => {
  if (!isRoot) return;
  keys = await publicKeys(4);
  uids = await leaseTestUids(200, 'test/system/daemon.test.ts');
});

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (isRoot) await removeAccounts(prefix);
  await uids?.release();
});

const name = (suffix: string) => `${prefix}_${suffix}`;
const dbOf = (box: Sandbox): Promise<NodeDatabase> => readDatabaseSnapshot(join(box.stateDir, 'nodemgr.json'));
const syncOf = (box: Sandbox): Promise<SyncStatus | null> => readSyncStatus(syncStatusPath(box.stateDir));

async function setup(document: string, settings: Record<string, string | number> = {}) {
  const server = await serveDocument(document);
  const box = await sandbox({ authority_url: server.url, ...settings }, { uids: uids! });
  cleanups.push(() => server.close(), () => box.cleanup());
  return { server, box };
}

function start(box: Sandbox): DaemonProcess {
  const daemon = startDaemonProcess(box.config);
  cleanups.push(() => stopDaemonProcess(daemon, 'SIGKILL'));
  return daemon;
}

/** Waits until the daemon has applied a document of `timestamp` and every listed account is in `state`. */
async function converged(box: Sandbox, timestamp: number, expected: Record<string, string>, daemon?: DaemonProcess) {
  let last: NodeDatabase | null = null;
  // On a timeout: which accounts were not there yet, and the end of the daemon's log file.
  const describe = async () => {
    const behind = Object.entries(expected)
      .filter(([account, state]) => (last?.accounts[account]?.state ?? 'absent') !== state)
      .map(([account]) => `${account}: ${JSON.stringify(last?.accounts[account] ?? 'absent')}`);
    const log = daemon ? await readFile(join(box.dir, 'log', 'nodemgr.log'), 'utf8').catch(() => '') : '';
    return [
      `accounts ${JSON.stringify(expected)} at document ${timestamp}`,
      `database at timestamp ${String(last?.records['timestamp']?.timestamp)}; ${behind.length} not yet:`,
      ...behind.slice(0, 10),
      ...(daemon ? [log.slice(-6000), daemon.output().slice(-2000)] : []),
    ].join('\n');
  };
  return waitFor(describe, async () => {
    const db = (last = await dbOf(box));
    if (db.records['timestamp']?.timestamp !== timestamp) return null;
    for (const [account, state] of Object.entries(expected)) {
      if ((db.accounts[account]?.state ?? 'absent') !== state) return null;
    }
    return db;
  });
}

async function sync(daemon: DaemonProcess) {
  daemon.child.kill('SIGHUP');
}

serial('a document becomes accounts, and the host follows every change of it', async (t) => {
  const initscript = '#!/bin/sh\nid -u > "$HOME/initscript.uid"\nsleep 600 &\n';
  const slices: TestSlice[] = [
    { name: name('web'), users: { 1: keys[0]!, 2: keys[1]! }, resources: { cpu_share: 32, initscript }, controllers: [name('ctl')] },
    { name: name('seed'), users: { 3: keys[2]! }, resources: { nm_cpu_share: 5, nm_net_max_rate: 2000 } },
    { name: name('gone'), users: { 1: keys[0]! } },
    { name: name('other'), nodes: [2], users: { 1: keys[0]! } },
  ];
  const { server, box } = await setup(slicesXml(1000, slices, [{ name: name('ctl'), keys: [keys[3]!] }]));
  const daemon = start(box);
  await converged(box, 1000, { [name('web')]: 'running', [name('seed')]: 'running', [name('gone')]: 'running', [name('ctl')]: 'running' }, daemon);

  // Accounts exist with the ownership marker, in the configured range; the other node's slice does not.
  const entries = await passwdEntries(prefix);
  t.deepEqual(entries.map((e) => e.name).sort(), [name('ctl'), name('gone'), name('seed'), name('web')]);
  for (const e of entries) {
    t.true(e.uid >= uids!.min && e.uid <= uids!.max, `${e.name} uid ${e.uid} in range`);
    t.regex(e.gecos, /^nodemgr (sliver|delegate)$/);
  }
  const web = entries.find((e) => e.name === name('web'))!;
  t.is(web.gecos, 'nodemgr sliver');
  t.is(entries.find((e) => e.name === name('ctl'))!.gecos, 'nodemgr delegate');
  t.is(await readFile(join(web.home, '.ssh/authorized_keys'), 'utf8'), `${keys[0]}\n${keys[1]}\n`);

  // The initscript ran as the sliver's user and its process lives on.
  const uidFile = join(web.home, 'initscript.uid');
  await waitFor('the initscript to write its uid', async () => (await readFile(uidFile, 'utf8').catch(() => '')).trim());
  t.is((await readFile(uidFile, 'utf8')).trim(), String(web.uid));
  t.true((await processesOf(name('web'))).some((p) => p.includes('sleep 600')));

  // status shows the slivers with their effective rspecs, in both eras' names.
  const status = JSON.parse((await nodemgr(['status', '--json', '--config', box.config])).stdout);
  const seedLine = status.accounts.find((a: { name: string }) => a.name === name('seed'));
  t.is(seedLine.rspec.cpu_share, 5);
  t.is(seedLine.rspec.net_max_rate, 2000);
  t.is(status.lastSync.outcome, 'applied');

  // Change the document: a user leaves web, seed is disabled, gone is removed, fresh is added.
  slices[0] = { ...slices[0]!, users: { 2: keys[1]! }, resources: { cpu_share: 64, initscript } };
  slices[1] = { ...slices[1]!, resources: { nm_cpu_share: 5, enabled: 0 } };
  slices.splice(2, 1, { name: name('fresh'), users: { 3: keys[2]! } });
  server.set(slicesXml(2000, slices, [{ name: name('ctl'), keys: [keys[3]!] }]));
  await sync(daemon);
  await converged(box, 2000, { [name('web')]: 'running', [name('seed')]: 'stopped', [name('gone')]: 'absent', [name('fresh')]: 'running' }, daemon);
  await waitFor('gone to leave /etc/passwd', async () => !(await passwdEntries(prefix)).some((e) => e.name === name('gone')));

  t.is(await readFile(join(web.home, '.ssh/authorized_keys'), 'utf8'), `${keys[1]}\n`, 'the removed user\'s key is gone');
  const after = await passwdEntries(prefix);
  const seed = after.find((e) => e.name === name('seed'))!;
  t.is(seed.shell, '/usr/sbin/nologin', 'a disabled sliver cannot log in');
  t.deepEqual(await processesOf(name('seed')), []);
  t.truthy(after.find((e) => e.name === name('fresh')));
  await t.throwsAsync(stat(`/home/${name('gone')}`), { code: 'ENOENT' }, 'a destroyed sliver leaves no home');
  t.is(after.find((e) => e.name === name('web'))!.uid, web.uid, 'an updated sliver keeps its account');
  const db = await dbOf(box);
  t.is(db.accounts[name('web')]!.reason, null);

  // A slice that expires is removed at the next sync after its expiry.
  const expiry = Math.floor(Date.now() / 1000) + 3;
  slices.push({ name: name('brief'), expiry, users: { 1: keys[0]! } });
  server.set(slicesXml(3000, slices, [{ name: name('ctl'), keys: [keys[3]!] }]));
  await sync(daemon);
  await converged(box, 3000, { [name('brief')]: 'running' }, daemon);
  // Not a wait for something the daemon does: the slice's expiry has to pass on the wall clock,
  // which the daemon reads, before the sync that is to remove it.
  await new Promise((r) => setTimeout(r, Math.max(0, expiry * 1000 - Date.now() + 1000)));
  await sync(daemon);
  await converged(box, 3000, { [name('brief')]: 'absent' }, daemon);
  t.false(Object.keys((await dbOf(box)).records).includes(`sliver_${name('brief')}`));

  // A malformed document and an older one change nothing.
  const before = await passwdEntries(prefix);
  server.set('<slices><slice id="1" name="broken"></slices>');
  await sync(daemon);
  const rejected = await waitFor('the malformed document to be rejected', async () => {
    const s = await syncOf(box);
    return s?.outcome === 'rejected' ? s : null;
  });
  t.regex(rejected.detail, /line \d+/);
  server.set(slicesXml(1500, [], []));
  await sync(daemon);
  await waitFor('the older document to be ignored', async () => (await syncOf(box))?.outcome === 'older');
  t.is((await dbOf(box)).records['timestamp']!.timestamp, 3000);
  t.deepEqual((await passwdEntries(prefix)).map((e) => e.name).sort(), before.map((e) => e.name).sort());

  t.is(await stopDaemonProcess(daemon), 0, 'SIGTERM stops the daemon cleanly');
});

serial('an account the daemon does not own is refused and left alone', async (t) => {
  const foreign = name('foreign');
  await run('useradd', ['-M', '-c', 'someone else', foreign]);
  const { box } = await setup(slicesXml(100, [{ name: foreign, users: { 1: keys[0]! } }, { name: name('fine') }]));
  const daemon = start(box);
  const db = await converged(box, 100, { [name('fine')]: 'running', [foreign]: 'failed' }, daemon);
  t.regex(db.accounts[foreign]!.reason!, /refused: .*not managed by nodemgr/);
  const entry = (await passwdEntries(prefix)).find((e) => e.name === foreign)!;
  t.is(entry.gecos, 'someone else', 'the foreign account is untouched');
  const status = await nodemgr(['status', '--config', box.config]);
  t.regex(status.stdout, new RegExp(`${foreign}\\s+sliver\\s+unix\\s+failed.*refused`));
  await stopDaemonProcess(daemon);
});

serial('a second daemon on the same state refuses to start', async (t) => {
  const { box } = await setup(slicesXml(100, []));
  const first = start(box);
  await converged(box, 100, {}, first);
  const second = startDaemonProcess(box.config);
  t.is(await second.exited, 1);
  t.regex(second.output(), new RegExp(`another nodemgr \\(pid ${first.child.pid}\\) holds`));
  await stopDaemonProcess(first);
});

serial('kill -9 during a sync of 100 slivers, then a restart, converges with no orphans', async (t) => {
  const many = Array.from({ length: 100 }, (_, i) => ({ name: name(`m${i}`), users: { 1: keys[0]! } }));
  const { server, box } = await setup(slicesXml(500, many));
  const first = start(box);
  // Accounts are made in batches (many entries appear at once); their homes and keys follow one by one.
  await waitFor('the daemon to be part-way through creating', async () => (await passwdEntries(`${prefix}_m`)).length >= 15);
  first.child.kill('SIGKILL');
  await first.exited;
  const made = await passwdEntries(`${prefix}_m`);
  const keyed = (await Promise.all(made.map((e) => stat(join(e.home, '.ssh/authorized_keys')).then(() => 1, () => 0)))).reduce<number>((a, b) => a + b, 0);
  t.true(keyed < 100, `killed part-way (${made.length} of 100 accounts existed, ${keyed} configured)`);

  const second = start(box);
  await converged(box, 500, Object.fromEntries(many.map((s) => [s.name, 'running'])), second);
  const entries = await passwdEntries(`${prefix}_m`);
  t.is(entries.length, 100);
  t.is(new Set(entries.map((e) => e.uid)).size, 100, 'no duplicated accounts');
  for (const e of entries) {
    t.true((await stat(join(e.home, '.ssh/authorized_keys'))).isFile(), `${e.name} is configured`);
  }

  // and removing them all leaves nothing behind, homes included
  server.set(slicesXml(600, []));
  second.child.kill('SIGHUP');
  // The entries go first (nobody can log in any more), then each account's processes and home.
  const homesLeft = async () => (await readdir('/home')).filter((d) => d.startsWith(`${prefix}_m`));
  await waitFor('all slivers to be destroyed', async () => (await passwdEntries(`${prefix}_m`)).length === 0 && (await homesLeft()).length === 0, 120_000);
  t.deepEqual(await homesLeft(), []);
  await stopDaemonProcess(second);
});

serial('after a restart with the authority down, the last good document keeps the slivers; a corrupt database is rebuilt', async (t) => {
  const { server, box } = await setup(slicesXml(700, [{ name: name('keep'), users: { 1: keys[0]! } }]));
  const first = start(box);
  await converged(box, 700, { [name('keep')]: 'running' }, first);
  await stopDaemonProcess(first);

  server.fail(true);
  const dbFile = join(box.stateDir, 'nodemgr.json');
  await writeFile(dbFile, '{"version": 1, "records": {trunc');
  const second = start(box);
  const db = await converged(box, 700, { [name('keep')]: 'running' }, second);
  const lastSync = await syncOf(box);
  t.is(lastSync?.outcome, 'unreachable');
  t.regex(lastSync?.detail ?? '', /503/);
  t.truthy(db.records[`sliver_${name('keep')}`], 'records rebuilt from the last good document');
  const aside = (await readdir(box.stateDir)).filter((f) => f.startsWith('nodemgr.json.corrupt-'));
  t.is(aside.length, 1, 'the corrupt database is kept aside, not deleted');
  t.is(await readFile(join(box.stateDir, aside[0]!), 'utf8'), '{"version": 1, "records": {trunc');
  t.truthy((await passwdEntries(prefix)).find((e) => e.name === name('keep')), 'the sliver was never destroyed');
  await stopDaemonProcess(second);
});

serial('nodemgr plan shows what a sync would change and changes nothing', async (t) => {
  const { box } = await setup(slicesXml(800, [{ name: name('planned') }]));
  const doc = join(box.dir, 'next.xml');
  await writeFile(doc, slicesXml(900, [{ name: name('planned') }, { name: name('extra') }]));
  const plan = await nodemgr(['plan', '--config', box.config, '--document', doc]);
  t.is(plan.code, 0, plan.stderr);
  t.regex(plan.stdout, new RegExp(`create\\s+sliver\\s+${name('extra')}`));
  t.regex(plan.stdout, new RegExp(`add: .*sliver_${name('extra')}`));
  t.deepEqual(await passwdEntries(name('extra')), [], 'plan created nothing');
  await t.throwsAsync(stat(join(box.stateDir, 'nodemgr.json')), { code: 'ENOENT' }, 'plan wrote no database');
});

const verifyTitle = 'the systemd unit passes systemd-analyze verify';
(systemdAnalyze ? test : test.skip)(systemdAnalyze ? verifyTitle : `${verifyTitle} (skipped: systemd-analyze is not installed here)`, async (t) => {
  const box = await sandbox({});
  cleanups.push(() => box.cleanup());
  // verify checks that ExecStart exists, so point it at this checkout's build
  const unit = (await readFile(join(import.meta.dirname, '../../systemd/nodemgr.service'), 'utf8'))
    .replace('ExecStart=nodemgr ', `ExecStart=${process.execPath} ${join(import.meta.dirname, '../../dist/src/cli/main.js')} `);
  const file = join(box.dir, 'nodemgr.service');
  await writeFile(file, unit);
  const result = await run('systemd-analyze', ['verify', file]).catch((e) => e);
  const complaints = `${result.stdout ?? ''}${result.stderr ?? ''}`.split('\n').filter((l: string) => l.includes('nodemgr.service'));
  t.deepEqual(complaints, []);
});
