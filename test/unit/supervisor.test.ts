import test from 'ava';
import { createLimiter } from '../../src/accounts/limiter.js';
import type { LifecycleHook } from '../../src/accounts/hooks.js';
import { createSupervisors } from '../../src/accounts/supervisor.js';
import type { AccountReport } from '../../src/db/types.js';
import { memoryLogger } from '../../src/log.js';
import { planReconcile } from '../../src/reconcile/plan.js';
import type { AccountRuntime } from '../../src/runtimes/types.js';
import { waitFor } from '../support/wait.js';
import { memoryRuntime } from './support/memory-runtime.js';
import { desiredOf, sliverRecord } from './support/records.js';

const record = (name: string) => sliverRecord(name, { initscript: 'true', keys: [] });

// The supervisors' retry timers do not keep a process alive (the daemon must be able to exit):
// while a test awaits a retry, nothing else may be left to, and the worker would end with the
// test unresolved. This keeps the worker alive until the tests are done.
const keepAlive = setInterval(() => undefined, 60_000);
test.after.always(() => clearInterval(keepAlive));

function setup(runtime: AccountRuntime, slots = 4) {
  const reports: AccountReport[] = [];
  const logger = memoryLogger();
  const supervisors = createSupervisors({
    runtime, hooks: [], limiter: createLimiter(slots), logger, retryInitialMs: 5, retryMaxMs: 20, opTimeoutMs: 2000,
    report: (r) => reports.push(r),
  });
  return { supervisors, reports, logger };
}

async function planFor(host: ReturnType<typeof memoryRuntime>, names: string[]) {
  return planReconcile({ desired: desiredOf(names.map(record)), host: await host.runtime.observe(), accounts: {} }).ops;
}

test('each account runs its operations in order and ends running', async (t) => {
  const host = memoryRuntime();
  const { supervisors, reports } = setup(host.runtime);
  supervisors.submit(await planFor(host, ['a_one', 'a_two']));
  await supervisors.idle();
  t.deepEqual(host.calls.filter((c) => c.endsWith('a_one')), ['create a_one', 'configure a_one', 'start a_one']);
  const last = reports.filter((r) => r.name === 'a_one').at(-1)!;
  t.is(last.state, 'running');
  t.true(reports.some((r) => r.name === 'a_one' && r.state === 'creating'));
  t.true(reports.some((r) => r.name === 'a_one' && typeof r.appliedHash === 'string'));
});

test('a failing operation is retried with backoff and its reason is reported', async (t) => {
  const host = memoryRuntime();
  host.failures.set('create:a_bad', 2);
  const { supervisors, reports } = setup(host.runtime);
  supervisors.submit(await planFor(host, ['a_bad']));
  await supervisors.idle();
  const failed = reports.filter((r) => r.state === 'failed');
  t.is(failed.length, 2);
  t.is(failed[0]!.reason, 'create failed: simulated failure of create:a_bad');
  t.is(failed[1]!.attempts, 2);
  t.is(reports.at(-1)!.state, 'running');
  t.is(reports.at(-1)!.attempts, 0);
});

test('a failing account never delays the others', async (t) => {
  const host = memoryRuntime();
  host.failures.set('create:a_bad', 1_000_000);
  const { supervisors, reports } = setup(host.runtime, 1);
  supervisors.submit(await planFor(host, ['a_bad', 'a_good1', 'a_good2']));
  // wait until the good ones are running while the bad one keeps failing
  await waitFor('the good ones to run', () => reports.filter((r) => r.state === 'running').length >= 2, { timeoutMs: 5_000, intervalMs: 5 });
  t.deepEqual(reports.filter((r) => r.state === 'running').map((r) => r.name).sort(), ['a_good1', 'a_good2']);
  t.deepEqual(supervisors.busy(), ['a_bad']);
  // a new plan that removes the failing sliver does not wait out its backoff
  host.failures.delete('create:a_bad');
  supervisors.submit([{ account: 'a_bad', kind: 'sliver', action: 'destroy', runtime: 'unix', spec: null, why: 'gone' }]);
  await supervisors.idle();
  t.is(reports.at(-1)!.state, 'absent');
  await supervisors.stop();
});

test('creates and destroys across the node are bounded by the limiter', async (t) => {
  let running = 0;
  let peak = 0;
  const host = memoryRuntime();
  const slow: AccountRuntime = {
    ...host.runtime,
    async create(spec) {
      running++;
      peak = Math.max(peak, running);
      // Not a wait for something: a create that takes a while, so that creates would overlap.
      await new Promise((r) => setTimeout(r, 10));
      running--;
      return host.runtime.create(spec);
    },
  };
  const { supervisors } = setup(slow, 2);
  supervisors.submit(await planFor(host, ['a_1', 'a_2', 'a_3', 'a_4', 'a_5', 'a_6']));
  await supervisors.idle();
  t.is(peak, 2);
  t.is(host.accounts.size, 6);
});

test('configures and starts across the node are bounded by the light limiter, apart from creates', async (t) => {
  const peaks = { configure: 0, start: 0 };
  let running = 0;
  const host = memoryRuntime();
  const overlapping = async <T>(name: 'configure' | 'start', then: () => Promise<T>) => {
    running++;
    peaks[name] = Math.max(peaks[name], running);
    // Not a wait for something: an operation that takes a while, so that they would overlap.
    await new Promise((r) => setTimeout(r, 10));
    running--;
    return then();
  };
  const slow: AccountRuntime = {
    ...host.runtime,
    configure: (spec) => overlapping('configure', () => host.runtime.configure(spec)),
    start: (spec, context) => overlapping('start', () => host.runtime.start(spec, context)),
  };
  const reports: AccountReport[] = [];
  const supervisors = createSupervisors({
    runtime: slow, hooks: [], limiter: createLimiter(8), lightLimiter: createLimiter(3), logger: memoryLogger(),
    retryInitialMs: 5, retryMaxMs: 20, opTimeoutMs: 2000, report: (r) => reports.push(r),
  });
  const names = Array.from({ length: 12 }, (_, i) => `a_${i}`);
  supervisors.submit(await planFor(host, names));
  await supervisors.idle();
  t.true(peaks.configure <= 3 && peaks.start <= 3, `at most 3 at once, saw ${JSON.stringify(peaks)}`);
  t.is(Math.max(peaks.configure, peaks.start), 3, 'the 3 slots were used');
  t.deepEqual(names.map((n) => reports.filter((r) => r.name === n).at(-1)?.state), names.map(() => 'running'));
});

test('an operation that hangs is reported failed after the timeout', async (t) => {
  const host = memoryRuntime();
  const hanging: AccountRuntime = { ...host.runtime, create: () => new Promise(() => undefined) };
  const reports: AccountReport[] = [];
  const supervisors = createSupervisors({
    runtime: hanging, hooks: [], limiter: createLimiter(1), logger: memoryLogger(), retryInitialMs: 10_000, retryMaxMs: 10_000,
    opTimeoutMs: 20, report: (r) => reports.push(r),
  });
  supervisors.submit(await planFor(host, ['a_hang']));
  await waitFor('the create to time out', () => reports.some((r) => r.state === 'failed'), { timeoutMs: 5_000, intervalMs: 5 });
  t.is(reports.find((r) => r.state === 'failed')!.reason, 'create failed: create timed out after 20 ms');
  await supervisors.stop();
});

test('a permanent failure parks the account as failed, not retried, until its spec changes', async (t) => {
  const host = memoryRuntime();
  host.permanent.add('create:a_bad');
  const { supervisors, reports, logger } = setup(host.runtime);
  const plan = await planFor(host, ['a_bad', 'a_good']);
  supervisors.submit(plan);
  await supervisors.idle(); // parked is idle: nothing waits for a retry
  t.deepEqual(host.calls.filter((c) => c.endsWith('a_bad')), ['create a_bad']);
  t.is(reports.filter((r) => r.name === 'a_bad').at(-1)!.reason,
    'create failed: simulated permanent failure of create:a_bad (not retried until the slice changes)');
  t.deepEqual(supervisors.busy(), []);
  t.true(logger.lines.some((l) => l.includes('operation failed; parked until its spec changes')));

  // The same plan again (every converge pass hands it over) changes nothing.
  // Not a wait for something to happen: past the retry backoff of 5-20 ms, a retry (which must
  // not come) would have been made.
  await new Promise((r) => setTimeout(r, 50));
  supervisors.submit(plan);
  await supervisors.idle();
  t.deepEqual(host.calls.filter((c) => c.endsWith('a_bad')), ['create a_bad']);

  // A changed spec is a new request: tried at once.
  host.permanent.delete('create:a_bad');
  const changed = plan.filter((op) => op.account === 'a_bad').map((op) => ({ ...op, spec: op.spec && { ...op.spec, keys: ['ssh-ed25519 AAAA new@x'] } }));
  supervisors.submit(changed);
  await supervisors.idle();
  t.is(reports.filter((r) => r.name === 'a_bad').at(-1)!.state, 'running');
  await supervisors.stop();
});

test('a recoverable failure is retried with backoff while a permanent one is not', async (t) => {
  const host = memoryRuntime();
  host.failures.set('create:a_flaky', 3);
  host.permanent.add('create:a_wrong');
  const { supervisors } = setup(host.runtime);
  supervisors.submit(await planFor(host, ['a_flaky', 'a_wrong']));
  await supervisors.idle();
  t.is(host.calls.filter((c) => c === 'create a_flaky').length, 4, 'three failures, then the create that worked');
  t.is(host.calls.filter((c) => c === 'create a_wrong').length, 1);
  await supervisors.stop();
});

test('lifecycle hooks run around the runtime\'s calls, in order, and a failing hook fails the operation with its name', async (t) => {
  const host = memoryRuntime();
  const calls: string[] = [];
  const traced: AccountRuntime = {
    ...host.runtime,
    configure: async (spec) => void calls.push(`runtime configure ${spec.name}`),
    start: async (spec, context) => void calls.push(`runtime start ${spec.name} in ${context.cgroupProcFiles.join(',')}`),
    destroy: async (name) => void calls.push(`runtime destroy ${name}`),
  };
  let failConfigure = true;
  const hook: LifecycleHook = {
    name: 'limits',
    async beforeConfigure(spec) {
      calls.push(`hook before configure ${spec.name}`);
      if (failConfigure) {
        failConfigure = false;
        throw new Error('cgroup not writable');
      }
    },
    startContext: (spec) => ({ cgroupProcFiles: [`/groups/${spec.name}/cgroup.procs`] }),
    beforeStop: async (account) => void calls.push(`hook before stop ${account.name} (${account.runtime})`),
    afterDestroy: async (account) => void calls.push(`hook after destroy ${account.name}`),
  };
  const reports: AccountReport[] = [];
  const supervisors = createSupervisors({
    runtime: traced, hooks: [hook], limiter: createLimiter(1), logger: memoryLogger(), retryInitialMs: 5, retryMaxMs: 5,
    opTimeoutMs: 2000, report: (r) => reports.push(r),
  });
  supervisors.submit((await planFor(host, ['a_one'])).filter((op) => op.action !== 'create'));
  await supervisors.idle();
  t.is(reports.find((r) => r.state === 'failed')?.reason, 'configure failed: limits: cgroup not writable');
  t.deepEqual(calls, [
    'hook before configure a_one', // failed: the runtime was not asked
    'hook before configure a_one',
    'runtime configure a_one',
    'runtime start a_one in /groups/a_one/cgroup.procs',
  ]);
  calls.length = 0;
  supervisors.submit([{ account: 'a_one', kind: 'sliver', action: 'destroy', runtime: 'unix', spec: null, why: 'gone' }]);
  await supervisors.idle();
  t.deepEqual(calls, ['hook before stop a_one (unix)', 'runtime destroy a_one', 'hook after destroy a_one']);
  await supervisors.stop();
});

test('a plan submitted again while its create runs does not create the account twice', async (t) => {
  const host = memoryRuntime();
  let releaseCreate!: () => void;
  const createHeld = new Promise<void>((resolve) => (releaseCreate = resolve));
  const held: AccountRuntime = {
    ...host.runtime,
    async create(spec) {
      await createHeld;
      return host.runtime.create(spec);
    },
  };
  const { supervisors } = setup(held);
  const plan = await planFor(host, ['a_once']);
  supervisors.submit(plan);
  // Passes that run while the create is under way see no account yet and plan the same again.
  supervisors.submit(await planFor(host, ['a_once']));
  supervisors.submit(await planFor(host, ['a_once']));
  t.deepEqual(supervisors.busy(), ['a_once']);
  releaseCreate();
  await supervisors.idle();
  t.deepEqual(host.calls.filter((c) => c.endsWith('a_once')), ['create a_once', 'configure a_once', 'start a_once']);
  t.deepEqual(supervisors.busy(), []);
});

test('busy() and idle() follow every account as its work comes and goes', async (t) => {
  const host = memoryRuntime();
  host.failures.set('create:a_late', 2);
  const { supervisors } = setup(host.runtime);
  const names = Array.from({ length: 50 }, (_, i) => `a_${i}`);
  supervisors.submit(await planFor(host, [...names, 'a_late']));
  t.is(supervisors.busy().length, 51);
  await supervisors.idle();
  t.deepEqual(supervisors.busy(), []);
  t.is(host.accounts.size, 51, 'the one that failed twice was retried until it was made');
  // then all of them removed: idle again once the last destroy is done
  supervisors.submit([...names, 'a_late'].map((account) => ({ account, kind: 'sliver' as const, action: 'destroy' as const, runtime: 'unix' as const, spec: null, why: 'gone' })));
  await supervisors.idle();
  t.is(host.accounts.size, 0);
  t.deepEqual(supervisors.busy(), []);
});
