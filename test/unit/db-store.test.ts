import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { acquireLock, LockHeldError } from '../../src/db/lock.js';
import {
  DatabaseFileError,
  DatabaseFormatError,
  openDatabase,
  readDatabaseSnapshot,
  validateDatabase,
} from '../../src/db/store.js';
import { emptyDatabase, type NodeDatabase, type SliverRecord } from '../../src/db/types.js';
import { memoryLogger } from '../../src/log.js';
import { stateForStep } from '../fixtures/db-kill-states.js';
import { waitFor } from '../support/wait.js';

const projectRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Sandbox {
  dir: string;
  path: string;
  lockPath: string;
}

async function sandbox(t: { teardown(fn: () => Promise<void>): void }): Promise<Sandbox> {
  const root = await mkdtemp(join(tmpdir(), 'nodemgr-db-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  // A state directory that does not exist yet: opening creates it.
  const dir = join(root, 'state');
  return { dir, path: join(dir, 'nodemgr.json'), lockPath: join(dir, 'nodemgr.lock') };
}

function sliver(name: string, extra: Partial<SliverRecord> = {}): SliverRecord {
  return {
    record_key: `sliver_${name}`, type: 'sliver', name, slice_id: 7, timestamp: 1700000000, expiry: null,
    rspec: { cpu_share: 32, net_max_rate: 1000 }, initscript: null, vref: null, guest: { runtime: null, kernel: null, initrd: null, size: null }, keys: ['ssh-ed25519 AAAA a@b'],
    controllers: ['pl_ctl'], loans: [{ recipient: 'site_other', resource: 'cpu_share', amount: 4 }],
    instantiation: 'plc-instantiated', node_state: { stopped: false, created: false, destroyed: false },
    unknown_resources: { colour: 'blue' }, ...extra,
  };
}

function sampleDatabase(): NodeDatabase {
  return {
    version: 1,
    records: {
      sliver_site_one: sliver('site_one'),
      delegate_pl_ctl: { record_key: 'delegate_pl_ctl', type: 'delegate', name: 'pl_ctl', timestamp: 5, expiry: 99, keys: [] },
      timestamp: { record_key: 'timestamp', type: 'timestamp', timestamp: 1700000000, expiry: null },
      bwcap: { record_key: 'bwcap', type: 'bwcap', timestamp: 1700000000, expiry: null, cap_kbit: 100000 },
    },
    accounts: {
      site_one: {
        name: 'site_one', kind: 'sliver', state: 'running', reason: null, since: '2026-01-01T00:00:00.000Z',
        appliedHash: 'abc', uid: 70001, attempts: 0,
      },
    },
    addresses: {
      '52:54:00:00:00:01': { mac: '52:54:00:00:00:01', ip: '192.0.2.10', prefix: 24, sliver: 'site_one', iface: 0, since: '2026-01-01T00:00:00.000Z' },
    },
    tasks: {
      a1b2c3d4: {
        task_id: 'a1b2c3d4', ticket: '0f'.repeat(16), kind: 'task', owner: 'subject:/OU=Persons/CN=test user 1', state: 'Finished',
        times: { submit: '2026-01-01T00:00:00.000Z', confirm: '2026-01-01T00:00:01.000Z', finished: '2026-01-01T00:01:00.000Z' },
        reason: null, exit_code: 3, signal: null, runtime: 'qemu', guest: 'task.a1b2c3d4', xsdl: '<JobDefinition/>',
        image: null, kernel: null, initrd: null, size: null, ssh_key: null, vcpus: 1, memory_bytes: 536870912, address: null, vnc: null, expires: null,
        job_pid: 412, terminating: null,
      },
    },
    clusters: {
      'vc-one': {
        name: 'vc-one', owner: 'uid:1000', image: 'centos7', base_image: 'vc-centos7.img', state: 'running', created: '2026-01-01T00:00:00.000Z',
        reason: null, network: { name: 'nodemgr-vc-one', bridge: 'nmvc1a2b3c4d', subnet: '10.1.0.0/16', mtu: 1500 },
        nodes: [
          { name: 'frontend', role: 'frontend', guest: 'vc.vc-one.frontend', vcpus: 1, memory_kib: 1048576, private_ip: '10.1.0.1', private_mac: '52:54:00:aa:00:01', public_ip: '192.0.2.40' },
          { name: 'compute-0', role: 'compute', guest: 'vc.vc-one.compute-0', vcpus: 2, memory_kib: 1048576, private_ip: '10.1.0.2', private_mac: '52:54:00:aa:00:02', public_ip: null },
        ],
      },
    },
  };
}

const writesIn = (lines: string[]) => lines.filter((l) => l.startsWith('debug database written')).length;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

async function exitedPid(): Promise<number> {
  const child = spawn('true');
  const pid = child.pid!;
  await once(child, 'exit');
  return pid;
}

test('what is written is read back, the file is private and the directory is created', async (t) => {
  const box = await sandbox(t);
  const logger = memoryLogger();
  const first = await openDatabase({ path: box.path, lockPath: box.lockPath, logger });
  t.is(first.recovered, null);
  t.deepEqual(first.store.data, emptyDatabase());
  first.store.update(() => sampleDatabase());
  t.deepEqual(first.store.data, sampleDatabase(), 'the update is visible at once');
  await first.store.close();

  t.is((await stat(box.path)).mode & 0o777, 0o600);
  t.is((await stat(box.dir)).mode & 0o777, 0o700);
  t.deepEqual(await readDatabaseSnapshot(box.path), sampleDatabase());
  const second = await openDatabase({ path: box.path, lockPath: box.lockPath, logger });
  t.is(second.recovered, null);
  t.deepEqual(second.store.data, sampleDatabase());
  await second.store.close();
});

test('a missing database starts empty and is created by the first flush', async (t) => {
  const box = await sandbox(t);
  const { store } = await openDatabase({ path: box.path, lockPath: box.lockPath, logger: memoryLogger() });
  t.false(await exists(box.path));
  await store.flush();
  t.deepEqual(await readDatabaseSnapshot(box.path), emptyDatabase());
  await store.close();
});

test('many rapid updates become few writes, and the last one wins', async (t) => {
  const box = await sandbox(t);
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: box.path, lockPath: box.lockPath, coalesceMs: 20, logger });
  const stamp = (db: NodeDatabase, n: number): NodeDatabase => ({
    ...db, records: { ...db.records, timestamp: { record_key: 'timestamp', type: 'timestamp', timestamp: n, expiry: null } },
  });
  let updates = 0;
  for (let n = 1; n <= 1000; n++, updates++) store.update((db) => stamp(db, n));
  // Then a trickle, some of it landing while a write is under way.
  for (let n = 1001; n <= 1040; n++, updates++) {
    store.update((db) => stamp(db, n));
    await sleep(2); // not a wait for something: the pace of the trickle
  }
  await store.flush();
  const writes = writesIn(logger.lines);
  t.true(writes >= 1 && writes < 20, `${writes} writes for ${updates} updates`);
  t.is((await readDatabaseSnapshot(box.path)).records['timestamp']?.timestamp, 1040);

  // Without a flush, the coalescing timer writes on its own.
  store.update((db) => stamp(db, 2000));
  await waitFor('the coalesced write', async () => (await readDatabaseSnapshot(box.path)).records['timestamp']?.timestamp === 2000, { timeoutMs: 5_000, intervalMs: 10 });
  t.is((await readDatabaseSnapshot(box.path)).records['timestamp']?.timestamp, 2000);
  await store.close();
});

test('updates made during a write are written next, in order', async (t) => {
  const box = await sandbox(t);
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: box.path, lockPath: box.lockPath, coalesceMs: 1000, logger });
  store.update(() => sampleDatabase());
  const firstFlush = store.flush(); // starts a write now
  store.update((db) => ({ ...db, records: { timestamp: db.records['timestamp']! } }));
  store.update((db) => ({ ...db, accounts: {} }));
  const secondFlush = store.flush();
  await firstFlush;
  await secondFlush;
  t.deepEqual(await readDatabaseSnapshot(box.path), {
    version: 1, records: { timestamp: sampleDatabase().records['timestamp']! }, accounts: {}, addresses: sampleDatabase().addresses, tasks: sampleDatabase().tasks,
    clusters: sampleDatabase().clusters,
  });
  t.is(writesIn(logger.lines), 2);
  await store.close();
});

test('a second open while the lock is held is refused, naming the holder', async (t) => {
  const box = await sandbox(t);
  const first = await openDatabase({ path: box.path, lockPath: box.lockPath, logger: memoryLogger() });
  const error = await t.throwsAsync(openDatabase({ path: box.path, lockPath: box.lockPath, logger: memoryLogger() }), {
    instanceOf: LockHeldError,
  });
  t.is(error?.message, `another nodemgr (pid ${process.pid}) holds ${box.lockPath}; stop it first`);
  t.is(error?.pid, process.pid);
  await first.store.close();
  t.false(await exists(box.lockPath), 'close removes the lock file');
  const again = await openDatabase({ path: box.path, lockPath: box.lockPath, logger: memoryLogger() });
  await again.store.close();
});

test('a lock left by a process that has exited is taken over, and logged', async (t) => {
  const box = await sandbox(t);
  await mkdir(box.dir, { recursive: true });
  const deadPid = await exitedPid();
  await writeFile(box.lockPath, JSON.stringify({ pid: deadPid, startTime: '12345', token: 'x' }) + '\n');
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: box.path, lockPath: box.lockPath, logger });
  t.true(logger.lines.some((l) => l.startsWith('warn taking over stale lock') && l.includes(`previous_pid=${deadPid}`)));
  t.is(JSON.parse(await readFile(box.lockPath, 'utf8')).pid, process.pid);
  await store.close();
});

test('a lock whose pid now belongs to another process is taken over', async (t) => {
  const box = await sandbox(t);
  await mkdir(box.dir, { recursive: true });
  // Our own pid, but a start time that is not ours: the owner is gone and the pid was reused.
  await writeFile(box.lockPath, JSON.stringify({ pid: process.pid, startTime: '1', token: 'x' }) + '\n');
  const logger = memoryLogger();
  const lock = await acquireLock(box.lockPath, logger);
  t.true(logger.lines.some((l) => l.includes('taking over stale lock') && l.includes('now belongs to another process')));
  await lock.release();
  t.false(await exists(box.lockPath));
});

test('an unreadable lock file is taken over', async (t) => {
  const box = await sandbox(t);
  await mkdir(box.dir, { recursive: true });
  await writeFile(box.lockPath, '');
  const logger = memoryLogger();
  const lock = await acquireLock(box.lockPath, logger);
  t.true(logger.lines.some((l) => l.includes('taking over stale lock') && l.includes('unreadable')));
  await lock.release();
});

test('starters racing for the same stale lock: exactly one wins', async (t) => {
  const box = await sandbox(t);
  await mkdir(box.dir, { recursive: true });
  const deadPid = await exitedPid();
  for (let round = 0; round < 25; round++) {
    await writeFile(box.lockPath, JSON.stringify({ pid: deadPid, startTime: null, token: `r${round}` }) + '\n');
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => acquireLock(box.lockPath, memoryLogger())));
    const won = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r) => r.status === 'rejected' && r.reason instanceof LockHeldError);
    t.is(won.length, 1, `round ${round}`);
    t.is(refused.length, 7, `round ${round}`);
    await (won[0] as PromiseFulfilledResult<{ release(): Promise<void> }>).value.release();
  }
  t.deepEqual(await readdir(box.dir), [], 'no lock, guard or temporary files are left');
});

test('a takeover that died half way does not block the next start', async (t) => {
  const box = await sandbox(t);
  await mkdir(box.dir, { recursive: true });
  const deadPid = await exitedPid();
  const stale = JSON.stringify({ pid: deadPid, startTime: null, token: 'a' }) + '\n';
  await writeFile(box.lockPath, stale);
  await writeFile(`${box.lockPath}.takeover`, stale.replace('"a"', '"b"'));
  const lock = await acquireLock(box.lockPath, memoryLogger());
  t.is(JSON.parse(await readFile(box.lockPath, 'utf8')).pid, process.pid);
  await lock.release();
  t.deepEqual(await readdir(box.dir), []);
});

test('a file that is not JSON is moved aside, bytes intact, and the store starts empty', async (t) => {
  const box = await sandbox(t);
  await mkdir(box.dir, { recursive: true });
  const bytes = '{"version": 1, "records": {"sliver_a": ';
  await writeFile(box.path, bytes);
  const logger = memoryLogger();
  const { store, recovered } = await openDatabase({ path: box.path, lockPath: box.lockPath, logger });
  t.truthy(recovered);
  t.true(recovered!.movedTo.startsWith(`${box.path}.corrupt-`));
  t.regex(recovered!.reason, /^not valid JSON/);
  t.is(await readFile(recovered!.movedTo, 'utf8'), bytes);
  t.deepEqual(store.data, emptyDatabase());
  t.true(logger.lines.some((l) => l.startsWith('error ') && l.includes('not valid JSON')));
  await store.flush();
  t.deepEqual(await readDatabaseSnapshot(box.path), emptyDatabase(), 'the rebuilt database replaces it');
  await store.close();
});

test('valid JSON of the wrong shape is moved aside with the field named', async (t) => {
  const box = await sandbox(t);
  await mkdir(box.dir, { recursive: true });
  const bad = sampleDatabase() as unknown as { records: Record<string, { rspec: Record<string, unknown> }> };
  bad.records['sliver_site_one']!.rspec['cpu_share'] = 'a';
  const bytes = JSON.stringify(bad, null, 2);
  await writeFile(box.path, bytes);
  const logger = memoryLogger();
  const { store, recovered } = await openDatabase({ path: box.path, lockPath: box.lockPath, logger });
  t.is(recovered?.reason, 'records.sliver_site_one.rspec.cpu_share: expected integer, got "a"');
  t.is(await readFile(recovered!.movedTo, 'utf8'), bytes);
  t.false(await exists(box.path));
  t.true(logger.lines.some((l) => l.startsWith('error ') && l.includes('records.sliver_site_one.rspec.cpu_share')));
  await store.close();

  // A second damaged file in the same instant does not overwrite the first one moved aside.
  await writeFile(box.path, JSON.stringify({ ...sampleDatabase(), version: 2 }));
  const again = await openDatabase({ path: box.path, lockPath: box.lockPath, logger });
  t.is(again.recovered?.reason, 'version: expected 1, got 2');
  t.not(again.recovered?.movedTo, recovered?.movedTo);
  t.is(await readFile(recovered!.movedTo, 'utf8'), bytes);
  await again.store.close();
});

const badShapes: Array<[string, (db: any) => void, string]> = [
  ['unknown record type', (db) => (db.records.bwcap.type = 'quota'), 'records.bwcap.type: expected one of sliver, delegate, timestamp, bwcap, adopted, got "quota"'],
  ['key and record_key differ', (db) => (db.records.sliver_site_one.record_key = 'sliver_x'), 'records.sliver_site_one.record_key: expected "sliver_site_one" (its key in records), got "sliver_x"'],
  ['record_key and name differ', (db) => (db.records.sliver_site_one.name = 'site_two'), 'records.sliver_site_one.record_key: expected "sliver_site_two" (from name "site_two"), got "sliver_site_one"'],
  ['delegate keyed as a sliver', (db) => {
    db.records.sliver_pl_ctl = { ...db.records.delegate_pl_ctl, record_key: 'sliver_pl_ctl' };
  }, 'records.sliver_pl_ctl.record_key: expected "delegate_pl_ctl" (from name "pl_ctl"), got "sliver_pl_ctl"'],
  ['fractional timestamp', (db) => (db.records.timestamp.timestamp = 1.5), 'records.timestamp.timestamp: expected integer, got 1.5'],
  ['negative rspec value', (db) => (db.records.sliver_site_one.rspec.cpu_share = -1), 'records.sliver_site_one.rspec.cpu_share: expected integer >= 0, got -1'],
  ['key that is not a string', (db) => (db.records.sliver_site_one.keys = ['ok', 3]), 'records.sliver_site_one.keys[1]: expected string, got 3'],
  ['loan as a triple', (db) => (db.records.sliver_site_one.loans = [['site_other', 'cpu_share', 4]]), 'records.sliver_site_one.loans[0]: expected an object, got an array'],
  ['loan without amount', (db) => delete db.records.sliver_site_one.loans[0].amount, 'records.sliver_site_one.loans[0].amount: expected integer, got nothing'],
  ['unexpected field', (db) => (db.records.delegate_pl_ctl.rspec = {}), 'records.delegate_pl_ctl.rspec: unexpected field'],
  ['timestamp with an expiry', (db) => (db.records.timestamp.expiry = 5), 'records.timestamp.expiry: expected null, got 5'],
  ['account state', (db) => (db.accounts.site_one.state = 'zombie'), 'accounts.site_one.state: expected one of absent, creating, running, stopped, destroying, failed, got "zombie"'],
  ['account under another name', (db) => (db.accounts.site_one.name = 'site_two'), 'accounts.site_one.name: expected "site_one" (its key in accounts), got "site_two"'],
  ['account since not a time', (db) => (db.accounts.site_one.since = 'yesterday'), 'accounts.site_one.since: expected ISO time, got "yesterday"'],
  ['odd key quoted in the path', (db) => (db.records['sliver_a b'] = sliver('a b', { slice_id: -2 })), 'records["sliver_a b"].slice_id: expected integer >= 0, got -2'],
  ['missing accounts', (db) => delete db.accounts, 'accounts: expected an object, got nothing'],
  ['task state', (db) => (db.tasks.a1b2c3d4.state = 'Running'), 'tasks.a1b2c3d4.state: expected one of Pending:Reserved, Pending:Confirmed, Running:Stage-In, Running:Instance-Starting, Running:Executing, Running:Instance-Stopping, Running:Stage-Out, Finished, Failed, Terminated, got "Running"'],
  ['task time of no such name', (db) => (db.tasks.a1b2c3d4.times.started = '2026-01-01T00:00:00.000Z'), 'tasks.a1b2c3d4.times.started: expected one of submit, confirm, stage-in-start, instance-start, execution-start, execution-done, instance-stop, stage-out-start, finished, failed, terminated, got "started"'],
  ['task under another id', (db) => (db.tasks.a1b2c3d4.task_id = 'ffff0000'), 'tasks.a1b2c3d4.task_id: expected "a1b2c3d4" (its key in tasks), got "ffff0000"'],
];

for (const [title, damage, message] of badShapes) {
  test(`validateDatabase names the field: ${title}`, (t) => {
    const db = structuredClone(sampleDatabase());
    damage(db);
    const error = t.throws(() => validateDatabase(db), { instanceOf: DatabaseFormatError });
    t.is(error?.message, message);
  });
}

test('validateDatabase accepts every kind of record and returns the same contents', (t) => {
  t.deepEqual(validateDatabase(JSON.parse(JSON.stringify(sampleDatabase()))), sampleDatabase());
  t.deepEqual(validateDatabase(emptyDatabase()), emptyDatabase());
});

test('the snapshot reader names the file when it is missing or damaged', async (t) => {
  const box = await sandbox(t);
  await mkdir(box.dir, { recursive: true });
  const missing = await t.throwsAsync(readDatabaseSnapshot(box.path), { instanceOf: DatabaseFileError });
  t.true(missing!.message.includes(box.path));
  t.is(missing!.code, 'ENOENT');
  await writeFile(box.path, JSON.stringify({ ...sampleDatabase(), accounts: 'today' }));
  const damaged = await t.throwsAsync(readDatabaseSnapshot(box.path), { instanceOf: DatabaseFileError });
  t.is(damaged!.message, `node database ${box.path}: accounts: expected an object, got "today"`);
  t.true(await exists(box.path), 'the reader leaves the file alone');
});

test('a failed write is logged, rejects flush, and is retried by the next flush', async (t) => {
  const box = await sandbox(t);
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: box.path, lockPath: box.lockPath, logger });
  await mkdir(box.path); // a directory where the file should go: the rename fails
  store.update(() => sampleDatabase());
  await t.throwsAsync(store.flush(), { code: 'EISDIR' });
  t.true(logger.lines.some((l) => l.startsWith('error database write failed')));
  await rmdir(box.path);
  await store.flush();
  t.deepEqual(await readDatabaseSnapshot(box.path), sampleDatabase());
  t.deepEqual((await readdir(box.dir)).sort(), ['nodemgr.json', 'nodemgr.lock'], 'no temporary files are left');
  await store.close();
});

test('contents that would not read back are never written', async (t) => {
  const box = await sandbox(t);
  const { store } = await openDatabase({ path: box.path, lockPath: box.lockPath, logger: memoryLogger() });
  store.update(() => sampleDatabase());
  await store.flush();
  store.update((db) => ({ ...db, records: { ...db.records, timestamp: { record_key: 'timestamp', type: 'timestamp', timestamp: Number.NaN, expiry: null } } }));
  const error = await t.throwsAsync(store.flush(), { instanceOf: DatabaseFormatError });
  t.is(error?.message, 'records.timestamp.timestamp: expected integer, got NaN');
  t.deepEqual(await readDatabaseSnapshot(box.path), sampleDatabase(), 'the last good contents stay');
  store.update(() => sampleDatabase());
  await store.close();
});

test('after close: flush resolves with everything on disk, update throws, the lock is free', async (t) => {
  const box = await sandbox(t);
  const { store } = await openDatabase({ path: box.path, lockPath: box.lockPath, coalesceMs: 10_000, logger: memoryLogger() });
  store.update(() => sampleDatabase());
  await store.close();
  await store.flush();
  await store.close(); // closing twice is harmless
  t.deepEqual(await readDatabaseSnapshot(box.path), sampleDatabase());
  t.throws(() => store.update(() => emptyDatabase()), { message: /closed/ });
  t.deepEqual(store.data, sampleDatabase());
  t.false(await exists(box.lockPath));
});

test('a writer killed with SIGKILL leaves a whole state and a lock that is taken over', async (t) => {
  const box = await sandbox(t);
  const writer = join(projectRoot, 'test', 'fixtures', 'db-kill-writer.ts');
  for (let round = 0; round < 3; round++) {
    const child = spawn(process.execPath, ['--import', 'tsx', writer, box.path, box.lockPath], {
      cwd: projectRoot, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = once(child, 'exit');
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && resolve());
      void exited.then(() => reject(new Error(`writer exited early: ${stderr}`)));
    });
    // Not a wait for something: a kill at a different moment of the writing in each round.
    await sleep(50 + round * 70);
    child.kill('SIGKILL');
    const [, signal] = await exited;
    t.is(signal, 'SIGKILL');

    const found = await readDatabaseSnapshot(box.path);
    const step = found.records['timestamp']!.timestamp;
    t.true(step >= 3, `round ${round}: step ${step}`);
    t.deepEqual(found, stateForStep(step), `round ${round}: the file is exactly one written state`);
  }

  const logger = memoryLogger();
  const { store, recovered } = await openDatabase({ path: box.path, lockPath: box.lockPath, logger });
  t.is(recovered, null);
  t.deepEqual(store.data, stateForStep(store.data.records['timestamp']!.timestamp));
  t.true(logger.lines.some((l) => l.startsWith('warn taking over stale lock')));
  t.deepEqual((await readdir(box.dir)).filter((n) => n.endsWith('.tmp')), [], 'temporary files of killed writes are removed');
  await store.close();
});
