// The tests' uid allocator (test/system/support/uid-leases.ts), in a lease directory of its own:
// ranges never overlap, within one process or across processes asking at once; a lease of a dead
// holder (or of a pid since reused) is taken over; a lease outlives the test while a daemon it
// holds for still runs. No root needed.
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { leaseUids, type UidLease, type UidRange } from '../system/support/uid-leases.js';

const projectRoot = resolve(import.meta.dirname, '../..');
const POOL: UidRange = { min: 1_000, max: 1_999 };

async function leaseDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-uid-leases-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const overlap = (a: UidRange, b: UidRange) => a.min <= b.max && b.min <= a.max;
const leases = async (dir: string) => (await readdir(dir)).filter((f) => f.endsWith('.lease'));

/** A pid that is certainly not running any more. */
function deadPid(): number {
  const done = spawnSync('true');
  if (done.pid === undefined) throw new Error('true did not run');
  return done.pid;
}

test('leases of one pool never overlap and are whole blocks; a full pool says who holds it; a released range is free again', async (t) => {
  const dir = await leaseDir(t);
  const held: UidLease[] = [];
  for (let i = 0; i < 5; i++) held.push(await leaseUids({ dir, pool: POOL, count: 150, purpose: `lease ${i}` }));
  for (const lease of held) {
    t.is(lease.max - lease.min + 1, 200, '150 uids are rounded up to two blocks of 100');
    t.is((lease.min - POOL.min) % 100, 0);
    t.true(lease.min >= POOL.min && lease.max <= POOL.max);
  }
  for (const [i, a] of held.entries()) {
    for (const b of held.slice(i + 1)) t.false(overlap(a, b), `${a.min}-${a.max} and ${b.min}-${b.max}`);
  }
  await t.throwsAsync(leaseUids({ dir, pool: POOL, count: 200, purpose: 'one too many', waitMs: 0 }), {
    message: /^uid lease: no 200 free uids in 1000-1999 for one too many; held: .*\(lease 0; pid \d+; /,
  });

  await held[2]!.release();
  await held[2]!.release(); // twice is harmless
  const again = await leaseUids({ dir, pool: POOL, count: 200, purpose: 'after a release', waitMs: 0 });
  t.deepEqual({ min: again.min, max: again.max }, { min: held[2]!.min, max: held[2]!.max });
  for (const lease of [...held, again]) await lease.release();
  t.deepEqual(await leases(dir), []);
});

test('a lease whose holder is dead, or whose pid now belongs to another process, is taken over and removed', async (t) => {
  const dir = await leaseDir(t);
  const stale = (holder: { pid: number; start: string }) =>
    JSON.stringify({ ...POOL, purpose: 'a crashed run', checkout: '/nowhere', since: new Date(0).toISOString(), holders: [holder] });
  await writeFile(join(dir, `${POOL.min}-${POOL.max}.1.dead.lease`), stale({ pid: deadPid(), start: '1' }));
  const first = await leaseUids({ dir, pool: POOL, count: 1_000, purpose: 'after a crash', waitMs: 0 });
  t.deepEqual({ min: first.min, max: first.max }, POOL);
  t.false((await leases(dir)).some((f) => f.endsWith('.dead.lease')), 'the dead lease is removed');
  await first.release();

  // Our own pid, with a start time that is not ours: the pid was reused since the lease was taken.
  await writeFile(join(dir, `${POOL.min}-${POOL.max}.2.reused.lease`), stale({ pid: process.pid, start: 'another start' }));
  const second = await leaseUids({ dir, pool: POOL, count: 1_000, purpose: 'after a reuse', waitMs: 0 });
  t.deepEqual({ min: second.min, max: second.max }, POOL);
  await second.release();
});

test('a lease stays while a daemon it holds for runs, after the test let go, and goes with the daemon', async (t) => {
  const dir = await leaseDir(t);
  const lease = await leaseUids({ dir, pool: POOL, count: 1_000, purpose: 'a test daemon', waitMs: 0 });
  const daemon = spawn('sleep', ['60'], { stdio: 'ignore' });
  t.teardown(() => daemon.kill('SIGKILL'));
  await once(daemon, 'spawn');
  lease.hold(daemon.pid!);
  await lease.release();

  const [file] = await leases(dir);
  t.truthy(file, 'the lease is still there');
  const written = JSON.parse(await readFile(join(dir, file!), 'utf8')) as { holders: Array<{ pid: number }> };
  t.deepEqual(written.holders.map((h) => h.pid), [daemon.pid], 'held by the daemon alone');
  await t.throwsAsync(leaseUids({ dir, pool: POOL, count: 100, purpose: 'while the daemon runs', waitMs: 0 }), { message: /no 100 free uids/ });

  daemon.kill('SIGKILL');
  await once(daemon, 'exit');
  const after = await leaseUids({ dir, pool: POOL, count: 100, purpose: 'after the daemon', waitMs: 0 });
  t.true(after.min >= POOL.min);
  await after.release();
});

test('processes that ask at once get ranges no two of which overlap, and exiting lets go of them', async (t) => {
  const dir = await leaseDir(t);
  const fixture = join(projectRoot, 'test', 'fixtures', 'uid-lease-holder.ts');
  // Six processes, eight blocks: there is room for each, and every one has rivals for it.
  const holders = Array.from({ length: 6 }, () =>
    spawn(process.execPath, ['--import', 'tsx', fixture, dir, String(POOL.min), String(POOL.min + 799), '100', '100'], {
      cwd: projectRoot, stdio: ['pipe', 'pipe', 'pipe'],
    }));
  t.teardown(() => {
    for (const child of holders) child.kill('SIGKILL');
  });
  const ranges = await Promise.all(holders.map(async (child) => {
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: child.stdout });
    const [line] = (await Promise.race([
      once(lines, 'line'),
      once(child, 'exit').then(() => Promise.reject(new Error(`a holder exited early: ${stderr}`))),
    ])) as [string];
    return JSON.parse(line) as UidRange;
  }));
  t.is(ranges.length, 6);
  for (const [i, a] of ranges.entries()) {
    t.is(a.max - a.min + 1, 100);
    for (const b of ranges.slice(i + 1)) t.false(overlap(a, b), `${a.min}-${a.max} and ${b.min}-${b.max}`);
  }
  t.is((await leases(dir)).length, 6);

  await Promise.all(holders.map(async (child) => {
    const exited = once(child, 'exit');
    child.stdin.end();
    t.deepEqual(await exited, [0, null]);
  }));
  t.deepEqual(await readdir(dir), [], 'no lease and no temporary file is left');
});

test('a count of none, or of more than 1000 uids, is refused', async (t) => {
  const dir = await leaseDir(t);
  await t.throwsAsync(leaseUids({ dir, pool: POOL, count: 0, purpose: 'none' }), { message: 'uid lease: ask for 1 to 1000 uids, not 0' });
  await t.throwsAsync(leaseUids({ dir, pool: POOL, count: 1_001, purpose: 'many' }), { message: 'uid lease: ask for 1 to 1000 uids, not 1001' });
});
