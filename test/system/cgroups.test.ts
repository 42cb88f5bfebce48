// The slivers' cgroups against the real kernel (v1 hierarchies, and the v2 mount beside them):
// processes running as unused uids get the CPU their shares and caps say, a memory hog and a fork
// bomb stop at their limits, and a whole group is killed and removed. Each test works under a
// parent of its own and takes it away afterwards, processes and all.
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { createSliverCgroups, detectCgroupVersion, type CgroupLimits, type SliverCgroups } from '../../src/limits/cgroups.js';
import { capQuotaUs, cpuWeights } from '../../src/rspec/cpu.js';
import { isRoot, leaseTestUids, waitFor } from './support/host.js';

const MiB = 1024 * 1024;
const V2_ROOT = '/sys/fs/cgroup/unified';
const USED_V1 = ['cpu', 'cpuacct', 'memory', 'pids', 'freezer'];
/** Uids with no account, leased so that no other test (or daemon) uses them, since sweep takes every process of a uid. */
const uids = isRoot ? await leaseTestUids(100, 'test/system/cgroups.test.ts') : null;
let nextUid = uids?.min ?? 0;
function freeUid(): number {
  if (uids === null || nextUid > uids.max) throw new Error('no leased uid left for this test file');
  return nextUid++;
}

const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('cgroup system tests need root: they create cgroups and run processes as other uids', () => undefined);

const open: CgroupLimits = { cpuShares: 1024, cpuQuotaUs: null, memoryBytes: null, pidsMax: null };
const PYTHON = '/usr/bin/python3';
/** The children's environment: the system's own tools, whatever the test runner's PATH holds. */
const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

interface Started {
  child: ChildProcess;
  pid: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

const cleanups: (() => Promise<void>)[] = [];

/** Kills every group under the adapter's parent and removes the parent from every hierarchy. */
async function removeParent(cgroups: SliverCgroups): Promise<void> {
  for (const name of await cgroups.list()) await cgroups.remove(name);
  for (const procs of cgroups.procFiles('x')) await rmdir(dirname(dirname(procs))).catch(() => undefined);
}

/** An adapter under a fresh parent, taken away when the test ends however it ends. */
async function fresh(t: ExecutionContext, options: { root?: string; version?: 1 | 2 } = {}): Promise<SliverCgroups> {
  const cgroups = await createSliverCgroups({ ...options, parent: `nmtest${randomBytes(4).toString('hex')}` });
  const cleanup = () => removeParent(cgroups);
  cleanups.push(cleanup);
  t.teardown(cleanup);
  await cgroups.ensureParent();
  return cgroups;
}

function track(t: ExecutionContext, child: ChildProcess): Started {
  let output = '';
  child.stdout?.on('data', (d) => (output += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  if (child.pid === undefined) throw new Error('the process did not start');
  return { child, pid: child.pid, exited, output: () => output };
}

/** Runs `command` as `uid` (no account needed), optionally pinned to CPU 0. */
function runAs(t: ExecutionContext, uid: number, command: string[], pinned = false): Started {
  const asUid = ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', ...command];
  const argv = pinned ? ['taskset', '-c', '0', ...asUid] : asUid;
  return track(t, spawn(argv[0]!, argv.slice(1), { stdio: 'ignore', env }));
}

/** Starts `command` the way the daemon starts an initscript: a root shell puts itself into the group, then drops to the uid. */
function launch(t: ExecutionContext, cgroups: SliverCgroups, name: string, uid: number, command: string[]): Started {
  const enter = cgroups.procFiles(name).map((file) => `echo $$ > ${quote(file)}`).join(' && ');
  const script = `${enter} && exec setpriv --reuid=${uid} --regid=${uid} --clear-groups ${command.map(quote).join(' ')}`;
  return track(t, spawn('/bin/sh', ['-c', script], { stdio: ['ignore', 'pipe', 'ignore'], env }));
}

const busyLoop = ['sh', '-c', 'while :; do :; done'];

async function cpuNs(cgroups: SliverCgroups, name: string): Promise<number> {
  const usage = (await cgroups.read(name))?.cpuUsageNs;
  if (typeof usage !== 'number') throw new Error(`no CPU usage for ${name}`);
  return usage;
}

/** The group path of a process in each v1 hierarchy used, from /proc/<pid>/cgroup. */
async function groupsOf(pid: number): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const line of (await readFile(`/proc/${pid}/cgroup`, 'utf8')).trim().split('\n')) {
    const [, controllers = '', path = ''] = line.split(':');
    for (const c of controllers.split(',')) if (USED_V1.includes(c)) found.set(c, path);
  }
  return found;
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isDirectory(), () => false);
}

test.after.always(async () => {
  for (const cleanup of cleanups) await cleanup().catch(() => undefined);
  await uids?.release();
});

serial('the host is cgroup v1 with a cgroup2 mount beside it, and every v1 limit is supported', async (t) => {
  t.is(await detectCgroupVersion(), 1, 'these tests are written for a host with cgroup v1 hierarchies');
  t.is(await detectCgroupVersion(V2_ROOT), 2);
  const cgroups = await fresh(t);
  t.is(cgroups.version, 1);
  t.deepEqual(cgroups.support, { cpu: null, cpuQuota: null, memory: null, pids: null, kill: null });
});

serial('two busy slivers on one CPU get CPU time in the proportion of their shares (1:3)', async (t) => {
  const cgroups = await fresh(t);
  const { weights } = cpuWeights([{ name: 'low', share: 1, guaranteedPct: 0 }, { name: 'high', share: 3, guaranteedPct: 0 }], cpus().length);
  for (const name of ['low', 'high']) {
    await cgroups.apply(name, { ...open, cpuShares: weights.get(name)! });
    await cgroups.join(name, runAs(t, freeUid(), busyLoop, true).pid);
  }
  // Measured once both loops are in their groups and competing: each has had some CPU there.
  await waitFor('both loops to run in their groups', async () =>
    (await cpuNs(cgroups, 'low')) >= 20_000_000 && (await cpuNs(cgroups, 'high')) >= 20_000_000, { intervalMs: 20 });
  const before = { low: await cpuNs(cgroups, 'low'), high: await cpuNs(cgroups, 'high') };
  // Not a wait for something to happen: the window over which CPU time is measured.
  await sleep(4_000);
  const low = (await cpuNs(cgroups, 'low')) - before.low;
  const high = (await cpuNs(cgroups, 'high')) - before.high;
  const ratio = high / low;
  t.log(`cpu.shares low=${weights.get('low')} high=${weights.get('high')}; CPU time over 4 s: low ${(low / 1e6).toFixed(0)} ms, high ${(high / 1e6).toFixed(0)} ms, ratio ${ratio.toFixed(2)}`);
  t.true(ratio >= 2.55 && ratio <= 3.45, `ratio ${ratio.toFixed(3)} is not within 15% of 3`);
});

serial('a cap of 20% of one CPU holds a busy sliver to 20%', async (t) => {
  const cgroups = await fresh(t);
  await cgroups.apply('capped', { ...open, cpuQuotaUs: capQuotaUs(20) });
  t.is((await cgroups.read('capped'))?.limits.cpuQuotaUs, 20_000);
  await cgroups.join('capped', runAs(t, freeUid(), busyLoop).pid);
  // Measured once the loop runs in its group under the cap.
  await waitFor('the loop to run in its group', async () => (await cpuNs(cgroups, 'capped')) >= 20_000_000, { intervalMs: 20 });
  const usage0 = await cpuNs(cgroups, 'capped');
  const wall0 = process.hrtime.bigint();
  // Not a wait for something to happen: the window over which CPU time is measured.
  await sleep(3_000);
  const pct = (((await cpuNs(cgroups, 'capped')) - usage0) / Number(process.hrtime.bigint() - wall0)) * 100;
  t.log(`capped at 20%: used ${pct.toFixed(2)}% of one CPU over 3 s`);
  t.true(Math.abs(pct - 20) <= 3, `${pct.toFixed(2)}% is not within 3 points of 20%`);
});

serial('a memory hog started by a root launcher is OOM-killed at its limit, and the kill is counted', async (t) => {
  const cgroups = await fresh(t);
  await cgroups.apply('hog', { ...open, memoryBytes: 64 * MiB });
  t.is((await cgroups.read('hog'))?.limits.memoryBytes, 64 * MiB);
  const hog = launch(t, cgroups, 'hog', freeUid(), [PYTHON, '-c', 'import time\nb = b"\\x01" * (200 << 20)\ntime.sleep(30)']);
  const { code, signal } = await hog.exited;
  t.is(signal, 'SIGKILL', `the hog exited with code ${code}`);
  const reading = await cgroups.read('hog');
  t.log(`oom kills ${reading?.oomKills}, usage after ${reading?.memoryUsageBytes} bytes`);
  t.true((reading?.oomKills ?? 0) >= 1);
});

serial('a memory limit below what the sliver uses is refused, naming the file and the value, and the old one stays', async (t) => {
  const cgroups = await fresh(t);
  await cgroups.apply('user', { ...open, memoryBytes: 96 * MiB });
  const user = launch(t, cgroups, 'user', freeUid(), [PYTHON, '-c', 'import time\nb = b"\\x01" * (40 << 20)\nprint("ready", flush=True)\ntime.sleep(60)']);
  await waitFor('the process to hold its memory', async () => user.output().includes('ready'));
  await t.throwsAsync(cgroups.apply('user', { ...open, memoryBytes: 8 * MiB }), {
    message: /^cannot set memory\.limit_in_bytes of sliver "user" to 8388608 in \S+\/memory\/nmtest\w+\/user: EBUSY \(usage is above it\)$/,
  });
  t.is((await cgroups.read('user'))?.limits.memoryBytes, 96 * MiB);
  t.is(user.child.exitCode, null, 'the process still runs');
});

serial('a fork bomb stops at pidsMax, and killAll empties the group while it keeps forking', async (t) => {
  const cgroups = await fresh(t);
  await cgroups.apply('bomb', { ...open, pidsMax: 20 });
  // Every process forks until it and its ancestors have made 8 children: at most 256 without the
  // limit, so a broken limit cannot take the host down. Each reports the first fork it was refused.
  const bomb = launch(t, cgroups, 'bomb', freeUid(), [
    PYTHON, '-c',
    'import errno, os, time\nmade = 0\nsaid = False\nwhile made < 8:\n    try:\n        os.fork()\n        made += 1\n    except OSError as e:\n        if not said:\n            print(errno.errorcode[e.errno], flush=True)\n            said = True\n        time.sleep(0.005)\ntime.sleep(300)',
  ]);
  const pidsDir = dirname(cgroups.procFiles('bomb').find((f) => f.includes('/pids/'))!);
  let most = 0;
  let mostCounted = 0;
  // Not a wait for something to happen: the bomb is sampled for 2 s, for the most it ever reached.
  const until = Date.now() + 2_000;
  while (Date.now() < until) {
    most = Math.max(most, (await cgroups.pids('bomb')).length);
    mostCounted = Math.max(mostCounted, Number(await readFile(`${pidsDir}/pids.current`, 'utf8')));
    await sleep(20);
  }
  const refused = Number(/^max (\d+)/m.exec(await readFile(`${pidsDir}/pids.events`, 'utf8'))?.[1]);
  t.log(`at most ${most} processes listed, pids.current at most ${mostCounted}, ${refused} forks refused`);
  t.true(most <= 20 && mostCounted <= 20);
  t.true(refused > 0, 'the bomb reached the limit');
  t.true(bomb.output().includes('EAGAIN'));
  t.false(/E(?!AGAIN)[A-Z]+/.test(bomb.output()), `only EAGAIN: ${bomb.output()}`);

  const started = Date.now();
  const killed = await cgroups.killAll('bomb');
  t.log(`killAll signalled ${killed} processes in ${Date.now() - started} ms`);
  t.true(killed >= 1);
  t.deepEqual(await cgroups.pids('bomb'), []);
  t.is((await bomb.exited).signal, 'SIGKILL');
  await cgroups.remove('bomb');
  t.is(await cgroups.read('bomb'), null);
  for (const file of cgroups.procFiles('bomb')) t.false(await isDirectory(dirname(file)), `${dirname(file)} is still there`);
});

serial('join moves a process into the group in every hierarchy; sweep brings back strays of managed uids only', async (t) => {
  const cgroups = await fresh(t);
  const [managed, other] = [freeUid(), freeUid()];
  await cgroups.apply('kept', open);
  const parentName = basename(dirname(dirname(cgroups.procFiles('kept')[0]!)));
  const joined = runAs(t, managed, ['sleep', '300']);
  await cgroups.join('kept', joined.pid);
  const stray = runAs(t, managed, ['sleep', '300']);
  const foreign = runAs(t, other, ['sleep', '300']);
  await waitFor('the sleepers to run as their uids', async () => {
    const uids = await Promise.all([stray.pid, foreign.pid].map(async (pid) => /^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1]));
    return uids[0] === String(managed) && uids[1] === String(other);
  });
  const inside = `/${parentName}/kept`;
  t.deepEqual([...(await groupsOf(joined.pid)).values()], USED_V1.map(() => inside));

  t.deepEqual(await cgroups.sweep(new Map([[managed, 'kept']])), { moved: 1 });
  t.deepEqual([...(await groupsOf(stray.pid)).values()], USED_V1.map(() => inside));
  t.false([...(await groupsOf(foreign.pid)).values()].some((path) => path.includes(parentName)), 'the other uid was left alone');
  t.deepEqual(await cgroups.pids('kept'), [joined.pid, stray.pid].sort((a, b) => a - b));
  t.deepEqual(await cgroups.sweep(new Map([[managed, 'kept']])), { moved: 0 });

  await t.throwsAsync(cgroups.join('kept', 4_194_304 + 1), { message: /cannot move pid 4194305 into sliver "kept" \(\S+cgroup\.procs\): ESRCH/ });
  await t.throwsAsync(cgroups.join('nosuch', joined.pid), { message: /sliver "nosuch" has no group/ });
});

serial('a group with groups below it (made by root inside the sliver\'s) is killed and removed whole', async (t) => {
  const cgroups = await fresh(t);
  await cgroups.apply('nested', open);
  const inner = runAs(t, freeUid(), ['sleep', '300']);
  const top = runAs(t, freeUid(), ['sleep', '300']);
  await cgroups.join('nested', top.pid);
  for (const procs of cgroups.procFiles('nested')) {
    const below = join(dirname(procs), 'inner', 'deeper');
    await mkdir(below, { recursive: true });
    await writeFile(join(below, 'cgroup.procs'), String(inner.pid));
  }
  t.deepEqual(await cgroups.pids('nested'), [inner.pid, top.pid].sort((a, b) => a - b), 'the pids below the group count as its own');
  await cgroups.remove('nested');
  t.is((await inner.exited).signal, 'SIGKILL');
  t.is((await top.exited).signal, 'SIGKILL');
  for (const file of cgroups.procFiles('nested')) t.false(await isDirectory(dirname(file)), `${dirname(file)} is still there`);
});

serial('apply shows the kernel what it set and writes nothing the second time', async (t) => {
  const cgroups = await fresh(t);
  const limits = { cpuShares: 700, cpuQuotaUs: capQuotaUs(50), memoryBytes: 64 * MiB + 100, pidsMax: 40 };
  await cgroups.apply('calm', limits);
  t.deepEqual((await cgroups.read('calm'))?.limits, { cpuShares: 700, cpuQuotaUs: 50_000, memoryBytes: 64 * MiB, pidsMax: 40 });

  // inotify reports every write to a control file, in order, on one queue for all the watches
  const writes: string[] = [];
  const watchers: FSWatcher[] = cgroups.procFiles('calm').map((procs) => watch(dirname(procs), (_, file) => writes.push(`${procs.split('/')[4]}/${file}`)));
  t.teardown(() => watchers.forEach((w) => w.close()));
  await cgroups.apply('calm', limits);
  await cgroups.apply('calm', { ...limits, pidsMax: 41 });
  // the no-op apply came first, so anything it wrote would be reported before pids.max
  await waitFor('the write of pids.max to be reported', async () => writes.includes('pids/pids.max'));
  t.deepEqual([...new Set(writes)], ['pids/pids.max'], 'only the changed value was written');
});

serial('a parent removed behind the adapter\'s back is set up again by the next group made', async (t) => {
  const cgroups = await fresh(t);
  await cgroups.apply('first', open);
  const parents = cgroups.procFiles('x').map((procs) => dirname(dirname(procs)));
  await cgroups.remove('first');
  for (const parent of parents) await rmdir(parent);
  await cgroups.apply('second', open);
  for (const parent of parents) t.true((await stat(parent)).isDirectory(), `${parent} is made again`);
  t.deepEqual(await cgroups.list(), ['second']);
  t.is((await cgroups.read('second'))?.limits.cpuShares, 1024);
});

serial('a memory limit is raised and lowered with memory+swap kept at it, which the kernel keeps above memory alone', async (t) => {
  const cgroups = await fresh(t);
  const memoryDir = dirname(cgroups.procFiles('mem').find((f) => f.includes('/memory/'))!);
  const memsw = async () => Number(await readFile(`${memoryDir}/memory.memsw.limit_in_bytes`, 'utf8'));
  for (const bytes of [64 * MiB, 256 * MiB, 32 * MiB, null, 16 * MiB]) {
    await cgroups.apply('mem', { ...open, memoryBytes: bytes });
    const shown = (await cgroups.read('mem'))?.limits.memoryBytes;
    t.is(shown, bytes);
    if (bytes === null) t.true((await memsw()) > 2 ** 60);
    else t.is(await memsw(), bytes);
  }
});

serial('v2: a group is created, joined, killed with cgroup.kill and removed; missing controllers are reported', async (t) => {
  const cgroups = await fresh(t, { root: V2_ROOT, version: 2 });
  const controllers = (await readFile(`${V2_ROOT}/cgroup.controllers`, 'utf8')).trim().split(/\s+/);
  for (const [limit, controller] of [['cpu', 'cpu'], ['cpuQuota', 'cpu'], ['memory', 'memory'], ['pids', 'pids']] as const) {
    if (controllers.includes(controller)) continue;
    t.regex(cgroups.support[limit] ?? '', new RegExp(`the ${controller} controller is not available`), limit);
  }
  t.log(`support: ${JSON.stringify(cgroups.support)}`);
  t.is(cgroups.support.kill, null);

  await cgroups.apply('many', { cpuShares: 2048, cpuQuotaUs: capQuotaUs(50), memoryBytes: 256 * MiB, pidsMax: 100 });
  const [procs] = cgroups.procFiles('many');
  t.is(cgroups.procFiles('many').length, 1);
  const uid = freeUid();
  const joined = runAs(t, uid, ['sleep', '300']);
  await cgroups.join('many', joined.pid);
  t.regex(await readFile(`/proc/${joined.pid}/cgroup`, 'utf8'), new RegExp(`^0::${dirname(procs!).slice(V2_ROOT.length)}$`, 'm'));
  const launcher = launch(t, cgroups, 'many', uid, ['sh', '-c', 'for i in $(seq 49); do sleep 300 & done; exec sleep 300']);
  await waitFor('51 processes in the group', async () => (await cgroups.pids('many')).length === 51);
  t.is((await cgroups.read('many'))?.processes, 51);

  const started = Date.now();
  t.is(await cgroups.killAll('many'), 51);
  t.log(`cgroup.kill: 51 processes gone in ${Date.now() - started} ms`);
  t.deepEqual(await cgroups.pids('many'), []);
  t.is((await launcher.exited).signal, 'SIGKILL');
  t.is((await joined.exited).signal, 'SIGKILL');
  await cgroups.remove('many');
  t.false(await isDirectory(dirname(procs!)));
  await cgroups.remove('many');
  t.deepEqual(await cgroups.list(), []);
});
