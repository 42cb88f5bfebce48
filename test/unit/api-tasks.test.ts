// The task and instance methods through the API's dispatcher (api/task-methods.ts): who may call
// them, the faults a refusal gets (102, 103, 104, 105, 108), the checks of LaunchInstances' request,
// and the status struct as XenBEE's clients read it. The engine is real; its guests are kept in
// memory (support/fake-task-guests.ts).
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiFault } from '../../src/api/faults.js';
import type { Caller } from '../../src/api/identity.js';
import { createApiMethods } from '../../src/api/methods.js';
import { recordWriter } from '../../src/db/record-writer.js';
import { openDatabase } from '../../src/db/store.js';
import { memoryLogger } from '../../src/log.js';
import { createTaskEngine } from '../../src/tasks/engine.js';
import { taskBook } from '../../src/tasks/task-book.js';
import { xsdlJob } from '../support/xsdl.js';
import { fakeTaskGuests } from './support/fake-task-guests.js';

const ROOT: Caller = { uid: 0, kind: 'root', name: null };
const ALICE: Caller = { uid: 1000, kind: 'nobody', name: null };
const BOB: Caller = { uid: 1001, kind: 'nobody', name: null };
const NOBODY: Caller = { uid: 65534, kind: 'nobody', name: null };
const GiB = 1024 ** 3;

async function methods(t: ExecutionContext) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-api-tasks-'));
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: join(dir, 'db.json'), lockPath: join(dir, 'db.lock'), logger });
  const guests = fakeTaskGuests(dir);
  guests.job = { forever: true };
  const engine = createTaskEngine({
    book: taskBook(store), guests, leasesOf: () => [], cachedFile: () => null, logger, now: () => new Date(),
    settings: {
      taskDir: join(dir, 'tasks'), startTimeoutMs: 1000, silenceTimeoutMs: 60_000, wallTimeLimitMs: 60_000, reservationTtlMs: 600_000,
      stageMaxBytes: 1 << 20, defaultVcpus: 1, defaultMemoryBytes: 512 * 1024 ** 2, xsdlMaxBytes: 1 << 20, pollMs: 10,
    },
    host: () => ({ vcpus: 2, memoryBytes: 2 * GiB }), factors: { cpu: 1, memory: 1 }, sliverUses: () => [], tickMs: 50,
  });
  await engine.start();
  t.teardown(async () => {
    await engine.stop();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  const refuse = async (): Promise<never> => {
    throw new Error('not in these tests');
  };
  const api = createApiMethods({
    store, records: recordWriter(store, logger), logger, now: () => new Date(), authorityDelegate: null, defaultRuntime: 'unix',
    converge: refuse, submit: refuse, observe: refuse, verifyTicket: () => refuse() as never, verifyPush: refuse, acceptDocument: refuse, tasks: engine,
  });
  return {
    call: (caller: Caller, method: string, ...args: unknown[]) => api.call(caller, method, args),
    async fault(caller: Caller, method: string, ...args: unknown[]) {
      try {
        await api.call(caller, method, args);
      } catch (error) {
        if (error instanceof ApiFault) return { code: error.code, message: error.message };
        throw error;
      }
      throw new Error(`${method} answered`);
    },
  };
}

test('a user reserves and confirms; the status struct has every field, nil where there is none', async (t) => {
  const api = await methods(t);
  const { ticket, task_id } = (await api.call(ALICE, 'Reserve')) as { ticket: string; task_id: string };
  const confirmed = (await api.call(ALICE, 'Confirm', ticket, xsdlJob({ image: 'base' }))) as Record<string, unknown>;
  t.deepEqual(Object.keys(confirmed).sort(), ['address', 'exit_code', 'kind', 'owner', 'reason', 'signal', 'state', 'task_id', 'times', 'vnc']);
  t.like(confirmed, { task_id, state: 'Pending:Confirmed', owner: 'uid:1000', exit_code: null, signal: null, reason: null });
  t.deepEqual(Object.keys(confirmed.times as object), ['submit', 'confirm']);
});

test('refusals: nobody 108, an invalid document 102 with its place, no ticket 103, a state 104, no room 105, not yours 108', async (t) => {
  const api = await methods(t);
  t.is((await api.fault(NOBODY, 'Reserve')).code, 108);
  const { ticket } = (await api.call(ALICE, 'Reserve')) as { ticket: string };
  const invalid = await api.fault(ALICE, 'Confirm', ticket, '<jsdl:JobDefinition xmlns:jsdl="http://schemas.ggf.org/jsdl/2005/11/jsdl"/>');
  t.is(invalid.code, 102);
  t.regex(invalid.message, /XSDL line 1 column \d+: jsdl:JobDefinition: /);
  t.deepEqual(await api.fault(ALICE, 'TaskStatus', 'f00d'), { code: 103, message: 'no ticket "f00d" on this node' });
  t.is((await api.fault(BOB, 'Terminate', ticket, 'mine now')).code, 108);
  await api.call(ALICE, 'Confirm', ticket, xsdlJob({ image: 'base', cpus: 1 }));
  t.is((await api.fault(ALICE, 'Confirm', ticket, xsdlJob({ image: 'base' }))).code, 104);
  t.is((await api.fault(ALICE, 'TaskStatus', ticket, true)).code, 104, 'a task that is not done is not removed');
  const big = await api.fault(BOB, 'Submit', xsdlJob({ image: 'base', cpus: 2 }));
  t.is(big.code, 105);
  t.regex(big.message, /needs 2 vCPU \/ 512 MiB, free 1 vCPU \/ 1.5 GiB/);
  t.deepEqual(await api.call(BOB, 'TaskStatus', 'all'), [], "Bob's refused Submit left nothing");
});

test('LaunchInstances checks its request member by member', async (t) => {
  const api = await methods(t);
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{}, /request\.image\): missing/],
    [{ image: 'base', size: 'huge' }, /request\.size\): "huge" is not one of small, medium, large/],
    [{ image: 'base', count: 0 }, /request\.count\): expected a whole number from 1 to 100/],
    [{ image: 'base', runtime: 'xen' }, /request\.runtime\): "xen" is not one of qemu, lxc/],
    [{ image: 'base', ssh_key: 'not a key' }, /request\.ssh_key\): not one public key/],
    [{ image: 'base', colour: 'blue' }, /unknown member "colour"/],
    // A path is no image of the caller's: a task's spool, climbed out of, or any file of the host.
    [{ image: '/var/lib/nodemgr/tasks/spool/../../../../etc/shadow' }, /request\.image\): the value ".*etc\/shadow" is neither an image name \(.*\) nor an http, https or file URI/],
    [{ image: 'base', kernel: '/boot/vmlinuz' }, /request\.kernel\): the value "\/boot\/vmlinuz" is neither an image name/],
    [{ image: 'base', initrd: '../initrd.img' }, /request\.initrd\): the value "\.\.\/initrd\.img" is neither an image name/],
  ];
  for (const [request, message] of cases) {
    const fault = await api.fault(ALICE, 'LaunchInstances', request);
    t.is(fault.code, 102, JSON.stringify(request));
    t.regex(fault.message, message);
  }
  const rows = (await api.call(ALICE, 'LaunchInstances', { image: 'base', count: 2 })) as Array<Record<string, unknown>>;
  t.is(rows.length, 2);
  t.like(rows[0], { owner: 'uid:1000', image: 'base', size: 'small' });
  t.is(((await api.call(BOB, 'ListInstances')) as unknown[]).length, 0);
  t.is(((await api.call(ROOT, 'ListInstances')) as unknown[]).length, 2);
  t.deepEqual(await api.fault(BOB, 'TerminateInstances', [rows[0]!.id]), { code: 108, message: `instance ${String(rows[0]!.id)} belongs to another owner` });
  t.is((await api.fault(ALICE, 'TerminateInstances', ['nope'])).code, 103);
  const info = (await api.call(ALICE, 'GetNodeInfo')) as { budget: { used: { vcpus: number }; uses: unknown[] }; classad: string };
  t.is(info.budget.used.vcpus, 2);
  t.is(info.budget.uses.length, 2);
  t.is(info.classad, 'CACHED_IMAGES = ""');
});
