// The central loop without root: createConverger over the in-memory host, with a real database
// store in a temp directory and real supervisors, wired as the daemon wires them. Records become
// accounts, a record that goes takes its account with a reason, nothing is destroyed while no
// document is in force, foreign names are refused on the record, and the bookkeeping follows the
// host after a crash.
import test, { type ExecutionContext } from 'ava';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLimiter } from '../../src/accounts/limiter.js';
import { createSupervisors } from '../../src/accounts/supervisor.js';
import { parseConfig } from '../../src/config/config.js';
import { recordAccountReport } from '../../src/db/accounts.js';
import { openDatabase, readDatabaseSnapshot } from '../../src/db/store.js';
import type { AccountStatus, DelegateRecord, SliverRecord } from '../../src/db/types.js';
import { memoryLogger } from '../../src/log.js';
import { notInDocument } from '../../src/reconcile/plan.js';
import type { AccountRuntime } from '../../src/runtimes/types.js';
import { createConverger } from '../../src/sync/converge.js';
import { createDocumentSync } from '../../src/sync/document.js';
import { createSyncStatusFile, syncStatusPath } from '../../src/sync/sync-status.js';
import { ed25519KeyLine } from '../support/ssh-keys.js';
import { slicesXml } from '../system/support/slices.js';
import { memoryRuntime } from './support/memory-runtime.js';
import { delegateRecord, recordsOf, sliverRecord } from './support/records.js';
import { recordWriter } from '../../src/db/record-writer.js';
import { desiredOfRecords } from '../../src/reconcile/desired.js';

interface NodeOptions {
  foreign?: string[];
  now?: () => Date;
  afterPass?: () => Promise<void>;
  runtime?: (host: AccountRuntime) => AccountRuntime;
}

/** A node as the daemon wires it, on the in-memory host; torn down when the test ends. */
async function node(t: ExecutionContext, options: NodeOptions = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-converge-'));
  const logger = memoryLogger();
  const now = options.now ?? (() => new Date());
  const { store } = await openDatabase({ path: join(dir, 'nodemgr.json'), lockPath: join(dir, 'nodemgr.lock'), coalesceMs: 1, logger });
  const host = memoryRuntime(options.foreign ?? []);
  const runtime = options.runtime ? options.runtime(host.runtime) : host.runtime;
  const supervisors = createSupervisors({
    runtime, hooks: [], limiter: createLimiter(4), logger, retryInitialMs: 5, retryMaxMs: 20, opTimeoutMs: 5_000,
    report: (report) => store.update((db) => recordAccountReport(db, report, now().toISOString())),
  });
  const records = recordWriter(store, logger);
  const converger = createConverger({
    store, records, runtime, supervisors, logger, now, desired: desiredOfRecords('unix'),
    ...(options.afterPass ? { afterPass: options.afterPass } : {}),
  });
  t.teardown(async () => {
    await supervisors.stop();
    await store.close();
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  });
  return {
    dir, store, records, host, supervisors, converger, logger,
    /** Replaces the records: these, under a document in force of timestamp `document` (null: none). */
    setRecords(slivers: SliverRecord[], delegates: DelegateRecord[], document: number | null) {
      store.update((db) => ({ ...db, records: recordsOf([...slivers, ...delegates], document).records }));
    },
    /** One converge pass, and the work it handed to the supervisors done. */
    async pass() {
      const plan = await converger.converge('test');
      await supervisors.idle();
      return plan;
    },
    account: (name: string): AccountStatus | undefined => store.data.accounts[name],
  };
}

const opsOf = (plan: { ops: readonly { action: string; account: string }[] }) => plan.ops.map((op) => `${op.action} ${op.account}`);
const WEB_KEY = ed25519KeyLine(1, 'web@example.org');
const CTL_KEY = ed25519KeyLine(2, 'ctl@example.org');

test('the records of a document in force become accounts, and a second pass changes nothing', async (t) => {
  const n = await node(t);
  n.setRecords(
    [sliverRecord('a_web', { keys: [WEB_KEY], initscript: '#!/bin/sh\necho up\n' }), sliverRecord('a_db')],
    [delegateRecord('a_ctl', [CTL_KEY])],
    100,
  );
  const first = await n.pass();
  t.deepEqual(opsOf(first), [
    'create a_ctl', 'configure a_ctl', 'start a_ctl',
    'create a_db', 'configure a_db', 'start a_db',
    'create a_web', 'configure a_web', 'start a_web',
  ]);
  t.true(first.ops.every((op) => op.why === 'new'));
  t.deepEqual([...n.host.accounts.keys()].sort(), ['a_ctl', 'a_db', 'a_web']);
  t.is(n.host.accounts.get('a_ctl')!.kind, 'delegate');
  t.deepEqual(n.host.accounts.get('a_web')!.keys, [WEB_KEY]);
  t.deepEqual(n.host.accounts.get('a_ctl')!.keys, [CTL_KEY]);
  t.is(n.host.accounts.get('a_web')!.initscriptRuns, 1);

  const hashes = n.converger.desired().hashes;
  for (const name of ['a_ctl', 'a_db', 'a_web']) {
    t.like(n.account(name), { state: 'running', reason: null, uid: n.host.accounts.get(name)!.uid, appliedHash: hashes.get(name), attempts: 0 });
  }

  const calls = n.host.calls.length;
  const second = await n.pass();
  t.deepEqual(second.ops, [], 'nothing to do on a converged host');
  t.deepEqual(second.refusals, []);
  t.is(n.host.calls.length, calls, 'the runtime was not asked for anything');

  // What the database says is on disk, as a restarted daemon would read it.
  await n.store.flush();
  t.deepEqual((await readDatabaseSnapshot(join(n.dir, 'nodemgr.json'))).accounts, n.store.data.accounts);
});

test('a record the document in force no longer holds takes its account with it, and the reason is named', async (t) => {
  const n = await node(t);
  const web = sliverRecord('a_web', { keys: [WEB_KEY] });
  const lazy = sliverRecord('a_lazy', { instantiation: 'delegated', node_state: { stopped: false, created: true, destroyed: false } });
  n.setRecords([web, sliverRecord('a_db'), lazy], [delegateRecord('a_ctl')], 100);
  await n.pass();
  t.deepEqual([...n.host.accounts.keys()].sort(), ['a_ctl', 'a_db', 'a_lazy', 'a_web']);

  // The next document drops a_db and the delegate; a_lazy's controller called Destroy.
  const destroyed = { ...lazy, node_state: { stopped: false, created: false, destroyed: true } };
  n.setRecords([web, destroyed], [], 200);
  const plan = await n.pass();
  t.deepEqual(opsOf(plan).sort(), ['destroy a_ctl', 'destroy a_db', 'destroy a_lazy']);
  const why = new Map(plan.ops.map((op) => [op.account, op.why]));
  t.is(why.get('a_db'), 'no record of it in the document in force (timestamp 200)');
  t.is(why.get('a_db'), notInDocument(200));
  t.is(why.get('a_ctl'), notInDocument(200));
  t.is(why.get('a_lazy'), 'Destroy was called through the API');

  t.deepEqual([...n.host.accounts.keys()], ['a_web'], 'only the account still asked for is left');
  for (const gone of ['a_ctl', 'a_db', 'a_lazy']) t.is(n.account(gone), undefined, `${gone} is no longer in the bookkeeping`);
  t.is(n.account('a_web')?.state, 'running');
  t.true(n.logger.lines.some((l) => l.startsWith('info operation done account=a_db kind=sliver op=destroy why="no record of it in the document in force (timestamp 200)"')),
    'the log names the reason of the destroy');
  t.true(n.logger.lines.some((l) => l.startsWith('info operation done account=a_lazy kind=sliver op=destroy why="Destroy was called through the API"')));
});

test('with no document in force nothing is created or destroyed: accounts found are adopted as they are', async (t) => {
  const n = await node(t);
  // What a daemon that lost its database finds: its marked accounts, started or not.
  n.host.add('a_old');
  n.host.add('a_idle', { started: false });
  n.host.add('a_ctl', { kind: 'delegate' });
  // Records without a document in force (say, a sliver delivered by a ticket): not made either.
  n.setRecords([sliverRecord('a_new')], [], null);

  const plan = await n.pass();
  t.deepEqual(plan.ops, [], 'no operation at all');
  t.deepEqual(plan.adopt.map((a) => a.name).sort(), ['a_ctl', 'a_idle', 'a_old']);
  t.deepEqual(plan.held.map((h) => h.account), ['a_new']);
  t.deepEqual(n.host.calls, [], 'the host was not touched');
  t.deepEqual([...n.host.accounts.keys()].sort(), ['a_ctl', 'a_idle', 'a_old']);

  const adopted = [['a_old', 'sliver', 'running'], ['a_idle', 'sliver', 'stopped'], ['a_ctl', 'delegate', 'running']] as const;
  for (const [name, kind] of adopted) {
    t.like(n.store.data.records[`adopted_${name}`], { type: 'adopted', name, kind, runtime: 'unix', uid: n.host.accounts.get(name)!.uid, destroy_requested_by: null });
  }
  t.is(n.logger.lines.filter((l) => l.startsWith('warn account adopted, awaiting a document')).length, 3);
  t.true(n.logger.lines.includes('warn accounts not created: no document in force accounts=a_new'));

  // Passes go on (the authority is down): still nothing is destroyed, the adoptions stand, and
  // the bookkeeping shows the adopted accounts as the host has them.
  const again = await n.pass();
  t.deepEqual(again.ops, []);
  t.deepEqual(again.adopt, [], 'adopted once');
  t.deepEqual(n.host.calls, []);
  for (const [name, kind, state] of adopted) {
    t.like(n.account(name), { kind, state, reason: null, uid: n.host.accounts.get(name)!.uid });
  }

  // The document arrives: it decides. What it lists is kept (and configured), the rest goes.
  n.setRecords([sliverRecord('a_old', { keys: [WEB_KEY] }), sliverRecord('a_new')], [], 300);
  const decided = await n.pass();
  t.deepEqual(opsOf(decided).sort(), [
    'configure a_new', 'configure a_old', 'create a_new', 'destroy a_ctl', 'destroy a_idle', 'start a_new', 'start a_old',
  ]);
  t.true(decided.ops.filter((op) => op.action === 'destroy').every((op) => op.why === notInDocument(300)));
  t.deepEqual([...n.host.accounts.keys()].sort(), ['a_new', 'a_old']);
  t.deepEqual(n.host.accounts.get('a_old')!.keys, [WEB_KEY], 'the adopted account is now configured by its record');
  t.false(n.host.calls.includes('create a_old'), 'the adopted account was kept, not made again');
  t.deepEqual(Object.keys(n.store.data.records).filter((k) => k.startsWith('adopted_')), []);
});

test('a record naming an account the daemon does not own is refused, on the record and in the log, and the account is not touched', async (t) => {
  const n = await node(t, { foreign: ['a_theirs'] });
  n.setRecords([sliverRecord('a_theirs'), sliverRecord('a_ours')], [], 100);
  const reason = 'an account named "a_theirs" exists on this host and is not managed by nodemgr';
  const plan = await n.pass();
  t.deepEqual(plan.refusals, [{ account: 'a_theirs', kind: 'sliver', reason }]);
  t.deepEqual(opsOf(plan), ['create a_ours', 'configure a_ours', 'start a_ours']);
  t.false(n.host.calls.some((c) => c.endsWith(' a_theirs')), 'no operation on the foreign account');
  t.like(n.account('a_theirs'), { kind: 'sliver', state: 'failed', reason: `refused: ${reason}`, attempts: 0 });
  t.is(n.account('a_ours')?.state, 'running');
  t.true(n.logger.lines.some((l) => l.startsWith('warn account refused account=a_theirs kind=sliver')));

  // Every pass refuses it again; the bookkeeping says the same and is not rewritten.
  const before = n.store.data;
  const again = await n.pass();
  t.deepEqual(again.refusals, plan.refusals);
  t.is(n.store.data, before, 'the database is unchanged');
  t.false(n.host.calls.some((c) => c.endsWith(' a_theirs')));
});

test('after a crash the bookkeeping follows the host: a start and a destroy it did not record, an account it never recorded', async (t) => {
  const n = await node(t);
  n.setRecords([sliverRecord('a_started'), sliverRecord('a_unknown')], [], 100);
  const hash = n.converger.desired().hashes.get('a_started')!;
  // The host as a killed daemon left it, and the database as it had last written it.
  n.host.add('a_started'); // created, configured and started; only "creating" was written
  n.host.add('a_unknown'); // made by a run whose every write was lost
  n.host.add('a_stray'); // no record asks for it
  const status = (name: string, state: AccountStatus['state'], appliedHash: string | null): AccountStatus =>
    ({ name, kind: 'sliver', state, reason: null, since: new Date(0).toISOString(), appliedHash, uid: null, attempts: 0 });
  n.store.update((db) => ({
    ...db,
    accounts: { a_started: status('a_started', 'creating', hash), a_gone: status('a_gone', 'destroying', null) },
  }));
  // As the daemon does at start: the supervisors learn what the host holds.
  n.supervisors.seed((await n.host.runtime.observe()).owned);

  const plan = await n.pass();
  t.deepEqual(opsOf(plan), ['configure a_unknown', 'start a_unknown', 'destroy a_stray']);
  t.is(plan.ops.find((op) => op.account === 'a_unknown')!.why, 'not configured yet');
  t.is(plan.ops.find((op) => op.account === 'a_stray')!.why, notInDocument(100));

  t.like(n.account('a_started'), { state: 'running', reason: null, uid: n.host.accounts.get('a_started')!.uid, appliedHash: hash },
    'the start the database missed is recorded, and nothing is redone for it');
  t.is(n.account('a_gone'), undefined, 'an account neither asked for nor on the host is forgotten');
  t.like(n.account('a_unknown'), { state: 'running', appliedHash: n.converger.desired().hashes.get('a_unknown') });
  t.false(n.host.accounts.has('a_stray'));
  t.is(n.account('a_stray'), undefined);
  t.false(n.host.calls.some((c) => c.startsWith('create ')), 'no account was made a second time');
  t.deepEqual([...n.host.accounts.keys()].sort(), ['a_started', 'a_unknown']);

  // The next pass has nothing to do, and records what only the host knew (a_unknown's uid: no
  // create reported it).
  t.deepEqual((await n.pass()).ops, []);
  t.like(n.account('a_unknown'), { state: 'running', reason: null, uid: n.host.accounts.get('a_unknown')!.uid });
});

test('a record that expires goes at the first pass after its expiry, and its account with it', async (t) => {
  let seconds = 1_000_000;
  const n = await node(t, { now: () => new Date(seconds * 1000) });
  n.setRecords([sliverRecord('a_brief', { expiry: 1_000_100 }), sliverRecord('a_stays')], [], 100);
  await n.pass();
  seconds = 1_000_099;
  t.deepEqual((await n.pass()).ops, [], 'not before its expiry');
  t.true(n.host.accounts.has('a_brief'));

  seconds = 1_000_100;
  const plan = await n.pass();
  t.deepEqual(opsOf(plan), ['destroy a_brief']);
  t.is(plan.ops[0]!.why, notInDocument(100));
  t.is(n.store.data.records['sliver_a_brief'], undefined);
  t.true(n.logger.lines.includes('info records changed source=expiry records=sliver_a_brief'));
  t.deepEqual([...n.host.accounts.keys()], ['a_stays']);
});

test('the limits follow every pass; a failure of theirs is logged and does not fail the pass; passes never overlap', async (t) => {
  let refreshes = 0;
  let observing = 0;
  let overlapped = false;
  const n = await node(t, {
    afterPass: async () => {
      refreshes++;
      if (refreshes === 2) throw new Error('the cgroup parent is gone');
    },
    runtime: (host) => ({
      ...host,
      async observe(options) {
        observing++;
        if (observing > 1) overlapped = true;
        await new Promise((resolve) => setImmediate(resolve));
        observing--;
        return host.observe(options);
      },
    }),
  });
  n.setRecords([sliverRecord('a_web')], [], 100);
  const plans = await Promise.all([1, 2, 3].map((i) => n.converger.converge(`trigger ${i}`)));
  await n.supervisors.idle();
  t.is(plans.length, 3, 'every pass resolved, the one whose refresh failed too');
  t.is(refreshes, 3);
  t.false(overlapped, 'one pass at a time');
  t.true(n.logger.lines.includes('error limits not refreshed error="the cgroup parent is gone"'), n.logger.lines.join('\n'));
  t.is(n.account('a_web')?.state, 'running');
});

test('the central loop end to end: documents fetched over http become accounts, a newer one removes what it drops, a malformed one changes nothing', async (t) => {
  let body = '';
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/xml' }).end(body));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/slices.xml`;

  const n = await node(t);
  const config = parseConfig(`node_id = 1\nauthority_url = ${url}\nstate_dir = ${n.dir}\n`, join(n.dir, 'nodemgr.conf'));
  const syncStatus = createSyncStatusFile(syncStatusPath(n.dir), null, n.logger);
  t.teardown(() => syncStatus.flush());
  const documents = createDocumentSync({ config, store: n.store, records: n.records, syncStatus, logger: n.logger, now: () => new Date() });
  const sync = async () => {
    const fetched = await documents.fetchAndApply();
    return { fetched, plan: await n.pass() };
  };

  body = slicesXml(1000, [
    { name: 'a_web', users: { 1: WEB_KEY } },
    { name: 'a_db', users: { 1: WEB_KEY } },
    { name: 'a_elsewhere', nodes: [2] },
  ], [{ name: 'a_ctl', keys: [CTL_KEY] }]);
  const first = await sync();
  t.true(first.fetched);
  t.deepEqual([...n.host.accounts.keys()].sort(), ['a_ctl', 'a_db', 'a_web'], 'this node\'s slices only');
  t.deepEqual(n.host.accounts.get('a_web')!.keys, [WEB_KEY]);

  body = slicesXml(2000, [{ name: 'a_web', users: { 1: WEB_KEY } }], [{ name: 'a_ctl', keys: [CTL_KEY] }]);
  const second = await sync();
  t.deepEqual(opsOf(second.plan), ['destroy a_db']);
  t.is(second.plan.ops[0]!.why, notInDocument(2000));
  t.deepEqual([...n.host.accounts.keys()].sort(), ['a_ctl', 'a_web']);

  body = '<slices><slice id="1" name="broken"></slices>';
  const third = await sync();
  t.false(third.fetched, 'a malformed document counts as a failed fetch');
  t.deepEqual(third.plan.ops, [], 'and changes nothing');
  t.is(syncStatus.current?.outcome, 'rejected');
  t.is(n.store.data.records['timestamp']?.timestamp, 2000);
  t.deepEqual([...n.host.accounts.keys()].sort(), ['a_ctl', 'a_web']);
  await syncStatus.flush();
});
