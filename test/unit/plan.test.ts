import test from 'ava';
import type { AccountStatus, SliverRecord } from '../../src/db/types.js';
import { desiredAccounts, planReconcile, specHash, type Op } from '../../src/reconcile/plan.js';
import type { AccountSpec, HostSnapshot } from '../../src/runtimes/types.js';
import { memoryRuntime } from './support/memory-runtime.js';

function record(name: string, extra: Partial<SliverRecord> = {}): SliverRecord {
  return {
    record_key: `sliver_${name}`, type: 'sliver', name, slice_id: 1, timestamp: 1, expiry: null,
    rspec: {}, initscript: null, vref: null, guest: { runtime: null, kernel: null, initrd: null, size: null }, keys: ['ssh-ed25519 AAAA x@y'], controllers: [], loans: [],
    instantiation: 'plc-instantiated', node_state: { stopped: false, created: false },
    unknown_resources: {}, ...extra,
  };
}

const summary = (ops: readonly Op[]) => ops.map((o) => `${o.action} ${o.account}`);

/** Applies a plan to the in-memory host the way the supervisors would, recording applied hashes. */
async function apply(ops: readonly Op[], host: ReturnType<typeof memoryRuntime>, accounts: Record<string, AccountStatus>) {
  for (const op of ops) {
    if (op.action === 'create') await host.runtime.create(op.spec!);
    if (op.action === 'configure') {
      await host.runtime.configure(op.spec!);
      accounts[op.account] = { name: op.account, kind: op.kind, state: 'stopped', reason: null, since: '', appliedHash: specHash(op.spec!), uid: null, attempts: 0 };
    }
    if (op.action === 'start') await host.runtime.start(op.spec!);
    if (op.action === 'stop') await host.runtime.stop(op.account, op.kind);
    if (op.action === 'destroy') {
      await host.runtime.destroy(op.account, op.kind);
      delete accounts[op.account];
    }
  }
}

async function converge(specs: readonly AccountSpec[], host: ReturnType<typeof memoryRuntime>, accounts: Record<string, AccountStatus>) {
  const plan = planReconcile({ desired: specs, host: await host.runtime.observe(), accounts });
  await apply(plan.ops, host, accounts);
  return plan;
}

test('new slivers are created, configured and started; a disabled one is not started', async (t) => {
  const { specs } = desiredAccounts([record('a_on'), record('a_off', { rspec: { enabled: 0 } })], []);
  const plan = planReconcile({ desired: specs, host: { owned: [], foreign: new Set() }, accounts: {} });
  t.deepEqual(summary(plan.ops), ['create a_off', 'configure a_off', 'create a_on', 'configure a_on', 'start a_on']);
});

test('planning again after the plan was carried out plans nothing', async (t) => {
  const host = memoryRuntime();
  const accounts: Record<string, AccountStatus> = {};
  const { specs } = desiredAccounts([record('a_one'), record('a_two', { rspec: { enabled: 0 } })], [
    { record_key: 'delegate_del_x', type: 'delegate', name: 'del_x', timestamp: 1, expiry: null, keys: [] },
  ]);
  const first = await converge(specs, host, accounts);
  t.true(first.ops.length > 0);
  const second = await converge(specs, host, accounts);
  t.deepEqual(second.ops, []);
  t.deepEqual(second.refusals, []);
});

test('changes in keys or rspec reconfigure; enabled=0 stops; removal destroys', async (t) => {
  const host = memoryRuntime();
  const accounts: Record<string, AccountStatus> = {};
  await converge(desiredAccounts([record('a_one'), record('a_two'), record('a_three')], []).specs, host, accounts);

  const changed = desiredAccounts([
    record('a_one', { keys: ['ssh-ed25519 BBBB new@y'] }),
    record('a_two', { rspec: { enabled: 0 } }),
  ], []).specs;
  const plan = await converge(changed, host, accounts);
  t.deepEqual(summary(plan.ops), ['configure a_one', 'start a_one', 'configure a_two', 'stop a_two', 'destroy a_three']);
  t.deepEqual(host.accounts.get('a_one')!.keys, ['ssh-ed25519 BBBB new@y']);
  t.false(host.accounts.get('a_two')!.loginEnabled);
  t.false(host.accounts.has('a_three'));
  t.deepEqual((await converge(changed, host, accounts)).ops, []);
});

test('a loan changes the effective rspec and so reconfigures both slivers', async (t) => {
  const host = memoryRuntime();
  const accounts: Record<string, AccountStatus> = {};
  const records = [record('a_one', { rspec: { cpu_share: 10 } }), record('a_two')];
  await converge(desiredAccounts(records, []).specs, host, accounts);
  const withLoan = [{ ...records[0]!, loans: [{ recipient: 'a_two', resource: 'cpu_share', amount: 4 }] }, records[1]!];
  const desired = desiredAccounts(withLoan, []);
  t.is(desired.specs.find((s) => s.name === 'a_two')!.rspec['cpu_share'], 5);
  const plan = await converge(desired.specs, host, accounts);
  t.deepEqual(summary(plan.ops).filter((s) => s.startsWith('configure')), ['configure a_one', 'configure a_two']);
});

test('an existing account the daemon does not own is refused, never touched', (t) => {
  const { specs } = desiredAccounts([record('someone')], []);
  const host: HostSnapshot = { owned: [], foreign: new Set(['someone']) };
  const plan = planReconcile({ desired: specs, host, accounts: {} });
  t.deepEqual(plan.ops, []);
  t.regex(plan.refusals[0]!.reason, /exists on this host and is not managed by nodemgr/);
});

test('an account of the wrong kind is destroyed and re-created', async (t) => {
  const plan = planReconcile({
    desired: desiredAccounts([record('a_one')], []).specs,
    host: { owned: [{ name: 'a_one', kind: 'delegate', runtime: 'unix', uid: 70001, loginEnabled: true, started: true }], foreign: new Set() },
    accounts: {},
  });
  t.deepEqual(summary(plan.ops), ['destroy a_one', 'create a_one', 'configure a_one', 'start a_one']);
  t.is(plan.ops[0]!.kind, 'delegate');
});

test('a delegate that shares a sliver name is left out: the sliver wins', (t) => {
  const { specs } = desiredAccounts([record('a_one')], [
    { record_key: 'delegate_a_one', type: 'delegate', name: 'a_one', timestamp: 1, expiry: null, keys: [] },
  ]);
  t.deepEqual(specs.map((s) => `${s.kind} ${s.name}`), ['sliver a_one']);
});

test('a sliver enabled but not started since boot is started again (its initscript re-runs)', (t) => {
  const { specs } = desiredAccounts([record('a_one')], []);
  const plan = planReconcile({
    desired: specs,
    host: { owned: [{ name: 'a_one', kind: 'sliver', runtime: 'unix', uid: 70001, loginEnabled: true, started: false }], foreign: new Set() },
    accounts: { a_one: { name: 'a_one', kind: 'sliver', state: 'running', reason: null, since: '', appliedHash: specHash(specs[0]!), uid: 70001, attempts: 0 } },
  });
  t.deepEqual(summary(plan.ops), ['start a_one']);
});

test('a sliver whose runtime changes is destroyed and made again on the new one', (t) => {
  const guest = { runtime: 'qemu' as const, kernel: 'vmlinuz', initrd: null, size: null };
  const { specs } = desiredAccounts([record('a_one', { guest, vref: 'base.qcow2' })], []);
  t.is(specs[0]!.runtime, 'qemu');
  t.deepEqual(specs[0]!.guest, { image: 'base.qcow2', kernel: 'vmlinuz', initrd: null, size: 'small' });
  const plan = planReconcile({
    desired: specs,
    host: { owned: [{ name: 'a_one', kind: 'sliver', runtime: 'unix', uid: 70001, loginEnabled: true, started: true }], foreign: new Set() },
    accounts: {},
  });
  t.deepEqual(summary(plan.ops), ['destroy a_one', 'create a_one', 'configure a_one', 'start a_one']);
  t.regex(plan.ops[0]!.why, /runs on unix, must run on qemu/);
});

test('a slice that names no runtime gets the node default', (t) => {
  t.is(desiredAccounts([record('a_one')], [], 'lxc').specs[0]!.runtime, 'lxc');
  t.is(desiredAccounts([record('a_one')], []).specs[0]!.runtime, 'unix');
  t.is(desiredAccounts([record('a_one')], []).specs[0]!.guest, null);
});
