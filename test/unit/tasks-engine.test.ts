// The task engine (tasks/engine.ts, runner.ts): a task's way through its states, its end in every
// way it can end, ownership, the capacity budget, expiry and a restart, over the real database and
// real staging (loopback HTTP, files), with the guests kept in memory (support/fake-task-guests.ts).
import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { openDatabase, type DatabaseStore } from '../../src/db/store.js';
import type { TaskRecord } from '../../src/db/types.js';
import { memoryLogger } from '../../src/log.js';
import { createTaskEngine, TaskRequestError, type EngineDeps, type Requester, type TaskEngine } from '../../src/tasks/engine.js';
import { taskBook } from '../../src/tasks/task-book.js';
import { TASK_TIMES } from '../../src/tasks/states.js';
import { xsdlJob } from '../support/xsdl.js';
import { waitFor } from '../support/wait.js';
import { fakeTaskGuests, guestFile, type FakeTaskGuests } from './support/fake-task-guests.js';

const ALICE: Requester = { owner: 'uid:1000', root: false };
const BOB: Requester = { owner: 'subject:/OU=Persons/CN=bob', root: false };
const ROOT: Requester = { owner: 'root', root: true };
const GiB = 1024 ** 3;

interface Node {
  dir: string;
  store: DatabaseStore;
  guests: FakeTaskGuests;
  engine: TaskEngine;
  deps: EngineDeps;
  logger: ReturnType<typeof memoryLogger>;
  /** A new engine over the same database and guests (a restart). */
  restart(): Promise<TaskEngine>;
}

async function node(t: ExecutionContext, settings: Partial<EngineDeps['settings']> = {}, host = { vcpus: 2, memoryBytes: 4 * GiB }): Promise<Node> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-engine-'));
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: join(dir, 'db.json'), lockPath: join(dir, 'db.lock'), logger });
  const guests = fakeTaskGuests(dir);
  const deps: EngineDeps = {
    book: taskBook(store), guests, leasesOf: (guest) => [{ mac: '52:54:00:00:00:01', ip: '10.0.0.2', prefix: 24, iface: 0, sliver: guest, since: '' }],
    cachedFile: () => null, logger, now: () => new Date(),
    settings: {
      taskDir: join(dir, 'tasks'), startTimeoutMs: 1000, silenceTimeoutMs: 200, wallTimeLimitMs: 60_000, reservationTtlMs: 600_000,
      stageMaxBytes: 1 << 20, defaultVcpus: 1, defaultMemoryBytes: 512 * 1024 ** 2, xsdlMaxBytes: 1 << 20, pollMs: 10, ...settings,
    },
    host: () => host, factors: { cpu: 1, memory: 1 }, sliverUses: () => [], tickMs: 20,
  };
  const engines: TaskEngine[] = [];
  const start = async () => {
    const engine = createTaskEngine(deps);
    engines.push(engine);
    await engine.start();
    return engine;
  };
  const engine = await start();
  t.teardown(async () => {
    for (const e of engines) await e.stop();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  return {
    dir, store, guests, engine, deps, logger,
    async restart() {
      await engine.stop();
      return start();
    },
  };
}

async function served(t: ExecutionContext, body: string, stall = false): Promise<string> {
  const server: Server = createServer((req, res) => {
    if (stall) {
      res.writeHead(200, { 'content-length': String(1 << 20) });
      res.write('x'.repeat(1024));
      return;
    }
    res.writeHead(200).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/input.txt`;
}

const doneOf = async (n: Node, ticket: string): Promise<TaskRecord> => {
  await waitFor('the task to be done', () => ['Finished', 'Failed', 'Terminated'].includes(n.deps.book.byTicket(ticket)?.state ?? ''), { timeoutMs: 10_000, intervalMs: 10 });
  return n.deps.book.byTicket(ticket)!;
};

const stateOf = (n: Node, ticket: string) => n.deps.book.byTicket(ticket)?.state;

test('a task stages in over HTTP, runs, stages out to a file, and is Finished with every time of its way', async (t) => {
  const n = await node(t);
  const input = await served(t, 'hello tasks\n');
  const target = join(n.dir, 'result.txt');
  n.guests.job = {
    polls: 2, exitCode: 0,
    effect: async (root) => writeFile(join(root, 'work', 'out.txt'), (await readFile(join(root, 'work', 'in.txt'), 'utf8')).toUpperCase()),
  };
  // Root's: only root's tasks may name the node's files (file: URLs).
  const submitted = await n.engine.submit(ROOT, xsdlJob({
    // A container's files go through its agent (a virtual machine's through staging disks: test/system/tasks.test.ts).
    runtime: 'lxc', executable: '/usr/bin/tr', args: ['a-z', 'A-Z'], image: 'base', stageIn: [{ name: 'in.txt', uri: input }],
    stageOut: [{ name: 'out.txt', uri: pathToFileURL(target).href }],
  }));
  t.is(submitted.owner, 'root');
  const task = await doneOf(n, submitted.ticket);
  t.is(task.state, 'Finished', task.reason ?? '');
  t.is(task.exit_code, 0);
  t.is(task.signal, null);
  t.is(await readFile(target, 'utf8'), 'HELLO TASKS\n');
  const expected = ['submit', 'confirm', 'stage-in-start', 'instance-start', 'execution-start', 'execution-done', 'instance-stop', 'stage-out-start', 'finished'];
  t.deepEqual(Object.keys(task.times).sort((a, b) => TASK_TIMES.indexOf(a as never) - TASK_TIMES.indexOf(b as never)), expected);
  t.is(n.guests.guests.size, 0, 'the guest is removed');
  t.deepEqual(n.guests.calls.filter((c) => !c.startsWith('exec /bin/mkdir')), [
    `create ${task.guest}`, `start ${task.guest}`, 'put /work/in.txt', 'exec /bin/sh', 'get /work/out.txt', `destroy ${task.guest}`,
  ]);
  await n.engine.idle();
  t.false(existsSync(join(n.deps.settings.taskDir, 'spool', task.task_id, 'in')), 'what was fetched is gone');
  t.true(existsSync(join(n.deps.settings.taskDir, 'spool', task.task_id, 'out', '0')), 'the output stays until removal');
  const [removed] = await n.engine.status(ROOT, submitted.ticket, true);
  t.is(removed!.state, 'Finished');
  t.false(existsSync(join(n.deps.settings.taskDir, 'spool', task.task_id)));
  await t.throwsAsync(n.engine.status(ROOT, submitted.ticket, false), { instanceOf: TaskRequestError, message: /no ticket/ });
});

test('an upload that fails makes the task Failed with the reason, and the output stays in the spool', async (t) => {
  const n = await node(t);
  n.guests.job = { effect: async (root) => writeFile(join(root, 'work', 'out.txt'), 'result\n') };
  const missingDir = pathToFileURL(join(n.dir, 'no', 'such', 'dir', 'out.txt')).href;
  const task = await doneOf(n, (await n.engine.submit(ROOT, xsdlJob({ runtime: 'lxc', image: 'base', output: 'out.txt', stageOut: [{ name: 'out.txt', uri: missingDir }] }))).ticket);
  t.is(task.state, 'Failed');
  t.regex(task.reason!, /^stage-out of \/work\/out\.txt failed: file:\/\/\/.*\/no\/such\/dir\/out\.txt: no such file; the file is kept in the task's spool until it is removed$/i);
  t.truthy(task.times['stage-out-start']);
  t.is(await readFile(join(n.deps.settings.taskDir, 'spool', task.task_id, 'out', '0'), 'utf8'), 'result\n');
});

test("the node's own files (file: URLs) are root's: any other owner's task or instance naming one is refused, and nothing is kept", async (t) => {
  const n = await node(t);
  const secret = pathToFileURL(join(n.dir, 'secret.txt')).href;
  const elsewhere = pathToFileURL(join(n.dir, 'written.txt')).href;
  const jobs = {
    'a stage-in source': xsdlJob({ runtime: 'lxc', image: 'base', stageIn: [{ name: 'in.txt', uri: secret }] }),
    'a stage-out target': xsdlJob({ runtime: 'lxc', image: 'base', output: 'out.txt', stageOut: [{ name: 'out.txt', uri: elsewhere }] }),
    'a kernel': xsdlJob({ kernel: secret }),
  };
  for (const who of [ALICE, BOB]) {
    for (const [what, xsdl] of Object.entries(jobs)) {
      const refused = await t.throwsAsync(n.engine.submit(who, xsdl), { instanceOf: TaskRequestError }, `${who.owner}: ${what}`);
      t.is((refused as TaskRequestError).problem, 'owner');
      t.regex(refused!.message, /file: URLs name the node's own files, which only root may have the node read or write/);
      t.true(refused!.message.includes(JSON.stringify(what === 'a stage-out target' ? elsewhere : secret)), refused!.message);
    }
    const launch = { image: secret, kernel: null, initrd: null, size: 'small' as const, count: 1, runtime: 'qemu' as const, sshKey: null };
    await t.throwsAsync(n.engine.launch(who, launch), { instanceOf: TaskRequestError, message: /only root may/ });
    await t.throwsAsync(n.engine.launch(who, { ...launch, image: 'base', kernel: 'FILE:///boot/vmlinuz' }), { instanceOf: TaskRequestError, message: /only root may/ });
  }
  t.deepEqual(n.deps.book.all(), [], 'no reservation or instance is kept');
  t.deepEqual(n.guests.calls, [], 'no guest was made');
  // Root's may, as before.
  const task = await n.engine.submit(ROOT, jobs['a stage-out target']);
  t.is(task.state, 'Pending:Confirmed');
});

test('a job that exits 3 is Finished with exit code 3; one killed by a signal says which', async (t) => {
  const n = await node(t);
  n.guests.job = { exitCode: 3 };
  const three = await doneOf(n, (await n.engine.submit(ALICE, xsdlJob({ image: 'base' }))).ticket);
  t.like(three, { state: 'Finished', exit_code: 3, signal: null });
  n.guests.job = { signal: 15 };
  const killed = await doneOf(n, (await n.engine.submit(ALICE, xsdlJob({ image: 'base' }))).ticket);
  t.like(killed, { state: 'Finished', exit_code: null, signal: 'SIGTERM' });
});

test('an agent that does not answer fails the task with the reason and leaves no guest', async (t) => {
  const n = await node(t);
  n.guests.startFails = 'instance agent did not answer within 1 s';
  const task = await doneOf(n, (await n.engine.submit(ALICE, xsdlJob({ image: 'base' }))).ticket);
  t.like(task, { state: 'Failed', reason: 'instance agent did not answer within 1 s' });
  t.truthy(task.times['instance-stop'], 'through Running:Instance-Stopping');
  t.is(n.guests.guests.size, 0);
});

test('the wall-time limit kills the job; an agent silent too long fails the task', async (t) => {
  const n = await node(t);
  n.guests.job = { forever: true };
  const walled = await doneOf(n, (await n.engine.submit(ALICE, xsdlJob({ image: 'base', wallTimeSeconds: 1 }))).ticket);
  t.like(walled, { state: 'Failed', reason: 'wall time limit of 1 s reached: the job was killed' });
  t.true(n.guests.calls.includes('exec /bin/kill'));
  const silent = await n.engine.submit(ALICE, xsdlJob({ image: 'base' }));
  await waitFor('the state awaited', () => stateOf(n, silent.ticket) === 'Running:Executing');
  n.guests.silent = true;
  const failed = await doneOf(n, silent.ticket);
  t.is(failed.state, 'Failed');
  t.regex(failed.reason!, /^instance agent silent for \d+ s/);
});

test('terminate in Running:Stage-In cancels the download; in Running:Executing it stops the guest', async (t) => {
  const n = await node(t);
  const stalled = await served(t, '', true);
  const staging = await n.engine.submit(ALICE, xsdlJob({ image: 'base', stageIn: [{ name: 'big', uri: stalled }] }));
  await waitFor('the state awaited', () => stateOf(n, staging.ticket) === 'Running:Stage-In');
  await n.engine.terminate(ALICE, staging.ticket, 'changed my mind');
  const ended = await doneOf(n, staging.ticket);
  t.like(ended, { state: 'Terminated', reason: 'changed my mind' });
  t.is(n.guests.calls.filter((c) => c.startsWith('create')).length, 0, 'no guest was made');

  n.guests.job = { forever: true };
  const running = await n.engine.submit(ALICE, xsdlJob({ image: 'base' }));
  await waitFor('the state awaited', () => stateOf(n, running.ticket) === 'Running:Executing' && n.guests.calls.includes('exec /bin/sh'));
  await n.engine.terminate(ROOT, running.ticket, '');
  const stopped = await doneOf(n, running.ticket);
  t.like(stopped, { state: 'Terminated', reason: 'terminated by root' });
  t.truthy(stopped.times['instance-stop']);
  t.is(n.guests.guests.size, 0);
  t.true(n.guests.calls.includes(`stop ${stopped.guest}`), 'asked to shut down first');
  await t.throwsAsync(n.engine.terminate(ALICE, running.ticket, ''), { message: /is already Terminated/ });
});

test("another owner's ticket is refused, and status \"all\" lists the caller's own", async (t) => {
  const n = await node(t);
  const { ticket } = await n.engine.reserve(ALICE);
  await n.engine.reserve(BOB);
  for (const attempt of [n.engine.confirm(BOB, ticket, xsdlJob({ image: 'base' })), n.engine.terminate(BOB, ticket, 'mine'), n.engine.status(BOB, ticket, false)]) {
    const error = await t.throwsAsync(attempt, { instanceOf: TaskRequestError });
    t.is(error!.problem, 'owner');
  }
  t.deepEqual((await n.engine.status(ALICE, 'all', false)).map((x) => x.ticket), [ticket]);
  t.is((await n.engine.status(ROOT, 'all', false)).length, 2);
  t.is((await t.throwsAsync(n.engine.confirm(ALICE, 'nope', ''), { instanceOf: TaskRequestError }))!.problem, 'unknown');
});

test('an invalid document is refused with its line and element, and the reservation stays', async (t) => {
  const n = await node(t);
  const { ticket } = await n.engine.reserve(ALICE);
  const error = await t.throwsAsync(n.engine.confirm(ALICE, ticket, xsdlJob({ image: 'base' }).replace('<jsdl:Resources>', '<jsdl:Resources><jsdl:Bogus/>')), { instanceOf: TaskRequestError });
  t.is(error!.problem, 'invalid');
  t.regex(error!.message, /line \d+ column \d+: jsdl:Bogus: /);
  t.is(stateOf(n, ticket), 'Pending:Reserved');
  await t.throwsAsync(n.engine.submit(ALICE, '<not-xsdl/>'), { instanceOf: TaskRequestError });
  t.is((await n.engine.status(ALICE, 'all', false)).length, 1, 'a refused Submit leaves no reservation');
});

test('a confirm or launch that does not fit is refused with the numbers, and a launch is all or nothing', async (t) => {
  const n = await node(t, {}, { vcpus: 2, memoryBytes: 2 * GiB });
  n.guests.job = { forever: true };
  await n.engine.submit(ALICE, xsdlJob({ image: 'base', cpus: 1, memoryBytes: GiB }));
  const { ticket } = await n.engine.reserve(ALICE);
  const refused = await t.throwsAsync(n.engine.confirm(ALICE, ticket, xsdlJob({ image: 'base', cpus: 2, memoryBytes: GiB })), { instanceOf: TaskRequestError });
  t.is(refused!.message, 'does not fit on this node: needs 2 vCPU / 1 GiB, free 1 vCPU / 1 GiB (of 2 vCPU / 2 GiB with cpu_overcommit and mem_overcommit)');
  const launch = await t.throwsAsync(n.engine.launch(BOB, { image: 'base', kernel: null, initrd: null, size: 'small', count: 3, runtime: 'qemu', sshKey: null }), { instanceOf: TaskRequestError });
  t.is(launch!.problem, 'capacity');
  t.deepEqual(n.engine.instances(ROOT), [], 'none of the three was made');
  t.is(n.engine.budget().used.vcpus, 1);
});

test('an unconfirmed reservation expires', async (t) => {
  const n = await node(t, { reservationTtlMs: 50 });
  const { ticket } = await n.engine.reserve(ALICE);
  const task = await doneOf(n, ticket);
  t.like(task, { state: 'Terminated', reason: 'reservation expired: not confirmed within 0 s' });
});

test('after a restart a running job is asked about again and its task finishes', async (t) => {
  const n = await node(t);
  n.guests.job = { polls: 1_000_000 };
  const { ticket } = await n.engine.submit(ALICE, xsdlJob({ image: 'base' }));
  await waitFor('the state awaited', () => stateOf(n, ticket) === 'Running:Executing' && n.deps.book.byTicket(ticket)!.job_pid !== null);
  const pid = n.deps.book.byTicket(ticket)!.job_pid;
  const engine = await n.restart();
  t.is(stateOf(n, ticket), 'Running:Executing', 'a stopping daemon changes no task');
  n.guests.job = { polls: 0, exitCode: 0 };
  const task = await doneOf(n, ticket);
  t.like(task, { state: 'Finished', exit_code: 0, job_pid: pid });
  t.is(n.guests.calls.filter((c) => c === 'exec /bin/sh').length, 1, 'the job ran once');
  await engine.stop();
});

test('instances: launched with a key, listed, one powered off from inside ends, the rest terminated and removed', async (t) => {
  const n = await node(t, {}, { vcpus: 4, memoryBytes: 4 * GiB });
  const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmHbDE7U6FBPa0JnL1BqQm3eQnmRBpFE0cT5d8bGGgX user@host';
  const launched = await n.engine.launch(ALICE, { image: 'base', kernel: null, initrd: null, size: 'small', count: 3, runtime: 'qemu', sshKey: key });
  t.is(launched.length, 3);
  await waitFor('the state awaited', () => n.engine.instances(ALICE).every((i) => i.state === 'Running:Executing'));
  const rows = n.engine.instances(ALICE);
  t.true(rows.every((r) => r.address === '10.0.0.2' && r.vnc === '127.0.0.1:5901'));
  t.is(await guestFile(n.guests.guests.get(rows[0]!.guest)!, '/root/.ssh/authorized_keys'), `${key}\n`);
  t.deepEqual(n.engine.instances(BOB), []);
  n.guests.guests.get(rows[0]!.guest)!.running = false;
  await waitFor('the state awaited', () => n.deps.book.get(rows[0]!.task_id)?.state === 'Finished');
  t.like(n.deps.book.get(rows[0]!.task_id), { reason: 'the guest powered off from inside', address: null, vnc: null });
  t.false(n.guests.guests.has(rows[0]!.guest), 'its disk is removed with it');
  await t.throwsAsync(n.engine.terminateInstances(BOB, [rows[1]!.task_id]), { message: /belongs to another owner/ });
  const ended = await n.engine.terminateInstances(ALICE, [rows[1]!.task_id, rows[2]!.task_id]);
  t.is(ended.length, 2);
  t.deepEqual(n.engine.instances(ALICE).map((r) => r.task_id), [rows[0]!.task_id]);
  t.is(n.guests.guests.size, 0);
});
