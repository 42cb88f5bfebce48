// A node that lost its database (or never had one) while the authority is unreachable destroys
// nothing: it adopts the accounts it finds, says so, and converges once a document arrives. As
// root, against real accounts and a real daemon process.
import test from 'ava';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import type { NodeDatabase } from '../../src/db/types.js';
import {
  accountPrefix, isRoot, leaseTestUids, nodemgr, passwdEntries, removeAccounts, sandbox, serveDocument, startDaemonProcess,
  stopDaemonProcess, waitFor, writeWorkFiles, type DaemonProcess, type DocumentServer, type Sandbox, type UidLease,
} from './support/host.js';
import { publicKeys, slicesXml, type TestSlice } from './support/slices.js';

const prefix = accountPrefix();
// One range for the file: every test's node finds the accounts the tests before it left, as
// marked accounts of its own range.
let uids: UidLease | null = null;
const cleanups: Array<() => Promise<unknown>> = [];
let keys: string[] = [];

const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('careful start: needs root (real accounts, homes and a real daemon)', () => undefined);

test.before(async () => {
  if (!isRoot) return;
  keys = await publicKeys(1);
  uids = await leaseTestUids(200, 'test/system/careful-start.test.ts');
});

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (isRoot) await removeAccounts(prefix);
  await uids?.release();
});

const name = (suffix: string) => `${prefix}_${suffix}`;
const NAMES = ['one', 'two', 'three'].map(name);
const dbOf = (box: Sandbox): Promise<NodeDatabase> => readDatabaseSnapshot(join(box.stateDir, 'nodemgr.json'));

function start(box: Sandbox): DaemonProcess {
  const daemon = startDaemonProcess(box.config);
  cleanups.push(() => stopDaemonProcess(daemon, 'SIGKILL'));
  return daemon;
}

function documentOf(timestamp: number, names: readonly string[]): string {
  const slices: TestSlice[] = names.map((n) => ({ name: n, users: { 1: keys[0]! } }));
  return slicesXml(timestamp, slices);
}

// Failing fetches are retried every second (fetch_backoff_max = 1), and every attempt is followed
// by a converge pass: three failed attempts are three poll periods of a node whose authority is down.
const SETTINGS = { poll_period: 10, fetch_backoff_initial: 1, fetch_backoff_max: 1 };

/** A running node of three slivers, each with a file of its user's in its home. */
async function runningNode(): Promise<{ server: DocumentServer; box: Sandbox; homes: Map<string, string> }> {
  const server = await serveDocument(documentOf(1000, NAMES));
  const box = await sandbox({ authority_url: server.url, ...SETTINGS }, { uids: uids! });
  cleanups.push(() => server.close(), () => box.cleanup());
  const daemon = start(box);
  await waitFor(`three running slivers\n${daemon.output().slice(-2000)}`, async () => {
    const db = await dbOf(box);
    return NAMES.every((n) => db.accounts[n]?.state === 'running');
  });
  await stopDaemonProcess(daemon);
  return { server, box, homes: await writeWorkFiles(prefix) };
}

/** Failed fetches, each followed by a converge pass (which logs only when its plan changed). */
const failedPolls = (daemon: DaemonProcess) => daemon.output().split('\n').filter((line) => line.includes('authority unreachable')).length;

async function assertEverythingKept(t: import('ava').ExecutionContext, homes: Map<string, string>) {
  const entries = await passwdEntries(prefix);
  t.deepEqual(entries.map((e) => e.name).sort(), [...NAMES].sort(), 'every account is still there');
  for (const [account, file] of homes) {
    t.is(await readFile(file, 'utf8'), `the work of ${account}\n`, `${account}'s files are intact`);
  }
}

/** Starts the daemon on what is left, with the authority down, and checks three passes destroy nothing. */
async function startWithAuthorityDown(t: import('ava').ExecutionContext, box: Sandbox, server: DocumentServer, homes: Map<string, string>) {
  server.fail(true);
  const daemon = start(box);
  await waitFor('three failed polls', async () => failedPolls(daemon) >= 3, 90_000)
    .catch((error: Error) => Promise.reject(new Error(`${error.message}\n${daemon.output().slice(-3000)}`)));
  await assertEverythingKept(t, homes);
  t.regex(daemon.output(), /converge planned trigger=poll document=none ops=0/);
  t.notRegex(daemon.output(), /op=destroy/, 'no destroy was even planned');
  t.regex(daemon.output(), /account adopted, awaiting a document/);

  const db = await dbOf(box);
  for (const n of NAMES) {
    const adopted = db.records[`adopted_${n}`];
    t.is(adopted?.type, 'adopted', `${n} is recorded as adopted`);
    t.is(db.accounts[n]?.state, 'running', `${n} is shown as the host has it`);
  }
  const status = await nodemgr(['status', '--config', box.config]);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /document in force: none — nothing is created or destroyed/);
  t.regex(status.stdout, new RegExp(`${NAMES[0]}\\s+sliver\\s+unix\\s+running, adopted`));
  t.regex(status.stdout, /3 adopted, awaiting a document/);
  return daemon;
}

serial('a node that lost its database and last good document while the authority is down destroys nothing; the document then decides', async (t) => {
  const { server, box, homes } = await runningNode();
  await rm(join(box.stateDir, 'nodemgr.json'));
  await rm(join(box.stateDir, 'authority'), { recursive: true, force: true });

  const daemon = await startWithAuthorityDown(t, box, server, homes);

  // The authority returns, without one of the slices: that one goes, and only that one.
  server.set(documentOf(2000, NAMES.slice(0, 2)));
  server.fail(false);
  daemon.child.kill('SIGHUP');
  await waitFor(`${NAMES[2]} destroyed by the document\n${daemon.output().slice(-2000)}`, async () => {
    const db = await dbOf(box);
    return db.records['timestamp']?.timestamp === 2000 && db.accounts[NAMES[2]!] === undefined &&
      !(await passwdEntries(prefix)).some((e) => e.name === NAMES[2]);
  });
  t.regex(daemon.output(), new RegExp(`op=destroy why="no record of it in the document in force \\(timestamp 2000\\)"`));
  const left = await passwdEntries(prefix);
  t.deepEqual(left.map((e) => e.name).sort(), NAMES.slice(0, 2).sort());
  for (const n of NAMES.slice(0, 2)) t.is(await readFile(homes.get(n)!, 'utf8'), `the work of ${n}\n`);
  const db = await dbOf(box);
  t.deepEqual(Object.keys(db.records).filter((k) => k.startsWith('adopted_')), [], 'the document replaced every adoption');
  t.is(db.accounts[NAMES[0]!]?.state, 'running');
  await stopDaemonProcess(daemon);
});

serial('a corrupt database moved aside leads to the same careful start', async (t) => {
  const { server, box, homes } = await runningNode();
  await writeFile(join(box.stateDir, 'nodemgr.json'), '{"version": 1, "records": {"sliver_x": ');
  await rm(join(box.stateDir, 'authority'), { recursive: true, force: true });

  const daemon = await startWithAuthorityDown(t, box, server, homes);
  t.regex(daemon.output(), /database rebuilt/);
  const aside = (await readdir(box.stateDir)).filter((f) => f.startsWith('nodemgr.json.corrupt'));
  t.is(aside.length, 1, 'the corrupt database is kept aside for the operator');
  await stopDaemonProcess(daemon);
});

serial('a re-install (a fresh state directory) over marked accounts destroys none of them', async (t) => {
  const { server, box, homes } = await runningNode();
  // A new state directory for the same node and uid range, on the same boot (the run directory,
  // which says what was started since boot, is the same): the accounts carry the marker of a
  // daemon that this one is, but it has no record of them.
  const fresh = await sandbox({ authority_url: server.url, ...SETTINGS, run_dir: join(box.dir, 'run') }, { uids: uids! });
  cleanups.push(() => fresh.cleanup());
  const daemon = await startWithAuthorityDown(t, fresh, server, homes);

  // An explicit Destroy by root is the one reason, without a document, to remove an adopted account.
  const destroyed = await nodemgr(['call', 'Destroy', NAMES[1]!, '--config', fresh.config]);
  t.is(destroyed.code, 0, destroyed.stderr);
  const done = new RegExp(`operation done account=${NAMES[1]} .*op=destroy why="Destroy was called through the API by root`);
  await waitFor(`${NAMES[1]} destroyed on root's Destroy`, async () => done.test(daemon.output()));
  t.false((await passwdEntries(prefix)).some((e) => e.name === NAMES[1]));
  t.deepEqual((await passwdEntries(prefix)).map((e) => e.name).sort(), [NAMES[0]!, NAMES[2]!].sort());
  await waitFor('the adopted record of the destroyed account to go', async () => (await dbOf(fresh)).records[`adopted_${NAMES[1]}`] === undefined);
  await stopDaemonProcess(daemon);
});
