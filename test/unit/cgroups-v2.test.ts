// The v2 backend's limit writing against a directory tree laid out as the kernel lays out a cgroup2
// mount: which controllers it may use, what it writes where, and that a repeated apply writes
// nothing. Plain files cannot kill or move processes; test/system/cgroups.test.ts does that for real.
import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ownGroupDir, weightToShares } from '../../src/limits/cgroup-v2.js';
import { createSliverCgroups, detectCgroupVersion, validateGroupName, type CgroupLimits } from '../../src/limits/cgroups.js';
import { capQuotaUs, sharesToWeight } from '../../src/rspec/cpu.js';

const MiB = 1024 * 1024;
const limits: CgroupLimits = { cpuShares: 65_536, cpuQuotaUs: capQuotaUs(20), memoryBytes: 64 * MiB, pidsMax: 20 };

/** A group as the kernel creates it on mkdir: the core files, and those of each controller it gets. */
async function kernelGroup(dir: string, controllers: string[], enabledBelow: string[] = []): Promise<void> {
  await mkdir(dir, { recursive: true });
  const files: Record<string, string> = {
    'cgroup.controllers': controllers.join(' '),
    'cgroup.subtree_control': enabledBelow.join(' '),
    'cgroup.procs': '',
    'cgroup.type': 'domain',
    'cgroup.events': 'populated 0\nfrozen 0',
    'cgroup.freeze': '0',
    'cgroup.kill': '',
    'cpu.stat': 'usage_usec 0\nuser_usec 0\nsystem_usec 0',
  };
  if (controllers.includes('cpu')) Object.assign(files, { 'cpu.weight': '100', 'cpu.max': 'max 100000' });
  if (controllers.includes('memory')) {
    Object.assign(files, {
      'memory.max': 'max', 'memory.current': '0', 'memory.swap.max': 'max',
      'memory.events': 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0',
    });
  }
  if (controllers.includes('pids')) Object.assign(files, { 'pids.max': 'max', 'pids.current': '0' });
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), `${text}\n`);
}

/** A cgroup2 root whose children get `enabled`, with the parent and one sliver group already made. */
async function tree(t: { teardown(fn: () => Promise<void>): void }, enabled: string[], sliver = 's1') {
  const root = await mkdtemp(join(tmpdir(), 'nodemgr-cgroup2-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await writeFile(join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids\n');
  await writeFile(join(root, 'cgroup.subtree_control'), `${enabled.join(' ')}\n`);
  await kernelGroup(join(root, 'nodemgr'), enabled);
  await kernelGroup(join(root, 'nodemgr', sliver), enabled);
  const cgroups = await createSliverCgroups({ root, version: 2 });
  const file = (name: string) => readFile(join(root, 'nodemgr', sliver, name), 'utf8');
  return { root, cgroups, file, group: join(root, 'nodemgr', sliver) };
}

test('with cpu, memory and pids handed down, every limit is supported', async (t) => {
  const { cgroups } = await tree(t, ['cpu', 'memory', 'pids']);
  t.is(cgroups.version, 2);
  t.deepEqual(cgroups.support, { cpu: null, cpuQuota: null, memory: null, pids: null, kill: null });
});

test('a controller the host did not hand down is reported with the reason, naming it', async (t) => {
  const { cgroups } = await tree(t, ['pids']);
  t.regex(cgroups.support.cpu ?? '', /the cpu controller is not enabled for the groups below .*cgroup\.subtree_control: "pids"/);
  t.regex(cgroups.support.memory ?? '', /the memory controller/);
  t.is(cgroups.support.pids, null);

  const bare = await mkdtemp(join(tmpdir(), 'nodemgr-cgroup2-'));
  t.teardown(() => rm(bare, { recursive: true, force: true }));
  await writeFile(join(bare, 'cgroup.controllers'), 'hugetlb\n');
  await writeFile(join(bare, 'cgroup.subtree_control'), '\n');
  const hugetlbOnly = await createSliverCgroups({ root: bare, version: 2 });
  t.regex(hugetlbOnly.support.memory ?? '', /the memory controller is not available in .*cgroup\.controllers: "hugetlb"/);
  t.regex(hugetlbOnly.support.pids ?? '', /pids/);
});

test('the parent enables the controllers it was given for the slivers and weighs as one task per CPU', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'nodemgr-cgroup2-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await writeFile(join(root, 'cgroup.controllers'), 'cpu memory pids hugetlb\n');
  await writeFile(join(root, 'cgroup.subtree_control'), 'cpu memory pids\n');
  await kernelGroup(join(root, 'slivers'), ['cpu', 'memory', 'pids']);
  const cgroups = await createSliverCgroups({ root, parent: 'slivers', version: 2 });
  await cgroups.ensureParent();
  t.is(await readFile(join(root, 'slivers', 'cgroup.subtree_control'), 'utf8'), '+cpu +memory +pids');
  t.is(await readFile(join(root, 'slivers', 'cpu.weight'), 'utf8'), String(Math.min(10_000, 100 * cpus().length)));

  // once enabled (as the kernel then shows it), nothing is written again
  await writeFile(join(root, 'slivers', 'cgroup.subtree_control'), 'cpu memory pids\n');
  await utimes(join(root, 'slivers', 'cgroup.subtree_control'), 0, 0);
  await cgroups.ensureParent();
  t.is((await stat(join(root, 'slivers', 'cgroup.subtree_control'))).mtimeMs, 0);
});

test('apply writes each limit into its v2 file, and read gives them back', async (t) => {
  const { cgroups, file } = await tree(t, ['cpu', 'memory', 'pids']);
  await cgroups.apply('s1', limits);
  t.is(await file('cpu.weight'), String(sharesToWeight(65_536)));
  t.is(await file('cpu.max'), '20000 100000');
  t.is(await file('memory.max'), String(64 * MiB));
  t.is(await file('memory.swap.max'), '0', 'no swap on top of the memory limit, as memsw does under v1');
  t.is(await file('pids.max'), '20');
  const reading = await cgroups.read('s1');
  t.like(reading?.limits, { cpuQuotaUs: 20_000, memoryBytes: 64 * MiB, pidsMax: 20 });
  t.is(sharesToWeight(reading!.limits.cpuShares!), sharesToWeight(65_536));

  await cgroups.apply('s1', { cpuShares: 2, cpuQuotaUs: null, memoryBytes: null, pidsMax: null });
  t.is(await file('cpu.weight'), '1');
  t.is(await file('cpu.max'), 'max 100000');
  t.is(await file('memory.max'), 'max');
  t.is(await file('memory.swap.max'), 'max');
  t.is(await file('pids.max'), 'max');
  t.like((await cgroups.read('s1'))?.limits, { cpuQuotaUs: null, memoryBytes: null, pidsMax: null });
});

test('a second apply of the same limits writes nothing, also where the kernel rounded the value', async (t) => {
  const { cgroups, group } = await tree(t, ['cpu', 'memory', 'pids']);
  const rounded = { ...limits, memoryBytes: 64 * MiB + 100 };
  await cgroups.apply('s1', rounded);
  await writeFile(join(group, 'memory.max'), `${64 * MiB}\n`); // the kernel keeps whole pages
  await writeFile(join(group, 'cpu.max'), '20000  100000\n');
  const files = ['cpu.weight', 'cpu.max', 'memory.max', 'memory.swap.max', 'pids.max', 'cgroup.freeze'];
  for (const name of files) await utimes(join(group, name), 0, 0);
  await cgroups.apply('s1', rounded);
  for (const name of files) t.is((await stat(join(group, name))).mtimeMs, 0, `${name} was written again`);

  await cgroups.apply('s1', { ...rounded, pidsMax: 21 });
  t.not((await stat(join(group, 'pids.max'))).mtimeMs, 0);
  t.is((await stat(join(group, 'memory.max'))).mtimeMs, 0);
});

test('a group left frozen by an interrupted kill runs again after apply', async (t) => {
  const { cgroups, file, group } = await tree(t, ['cpu', 'memory', 'pids']);
  await writeFile(join(group, 'cgroup.freeze'), '1\n');
  await cgroups.apply('s1', limits);
  t.is(await file('cgroup.freeze'), '0');
});

test('limits whose controller is missing are skipped, not failed', async (t) => {
  const { cgroups, file } = await tree(t, ['pids']);
  await cgroups.apply('s1', limits);
  t.is(await file('pids.max'), '20');
  await t.throwsAsync(file('memory.max'), { code: 'ENOENT' });
  t.like((await cgroups.read('s1'))?.limits, { cpuShares: null, cpuQuotaUs: null, memoryBytes: null, pidsMax: 20 });
});

test('a control file that should be there and is not is an error naming the file and the value, and is not created', async (t) => {
  const { cgroups, group } = await tree(t, ['cpu', 'memory', 'pids']);
  await rm(join(group, 'pids.max'));
  await t.throwsAsync(cgroups.apply('s1', limits), { message: /^cannot set pids\.max of sliver "s1" to 20 in .*nodemgr\/s1: ENOENT/ });
  await t.throwsAsync(stat(join(group, 'pids.max')), { code: 'ENOENT' });
});

test('read reports usage, processes, CPU time and OOM kills, and null for a group that does not exist', async (t) => {
  const { cgroups, group } = await tree(t, ['cpu', 'memory', 'pids']);
  await writeFile(join(group, 'memory.current'), '12345678\n');
  await writeFile(join(group, 'memory.events'), 'low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n');
  await writeFile(join(group, 'cpu.stat'), 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n');
  await writeFile(join(group, 'cgroup.procs'), '4000001\n4000002\n4000003\n');
  t.like(await cgroups.read('s1'), { memoryUsageBytes: 12_345_678, cpuUsageNs: 1_500_000, oomKills: 2, processes: 3 });
  t.is(await cgroups.read('s2'), null);
  t.deepEqual(await cgroups.pids('s1'), [4_000_001, 4_000_002, 4_000_003]);
});

test('apply creates a missing group; list gives the groups under the parent', async (t) => {
  const { root, cgroups } = await tree(t, ['cpu', 'memory', 'pids']);
  // a plain directory gets no control files, so the limits cannot be written: the group is made first
  await t.throwsAsync(cgroups.apply('s2', limits), { message: /of sliver "s2"/ });
  t.true((await stat(join(root, 'nodemgr', 's2'))).isDirectory());
  t.deepEqual(await cgroups.list(), ['s1', 's2']);
});

test('sliver names that could leave the parent or are not account names are refused, naming the value', async (t) => {
  const { cgroups } = await tree(t, ['pids']);
  for (const bad of ['..', '../x', 'a/b', '.hidden', '-x', '', 'x'.repeat(33), 'a..b', 'a b']) {
    await t.throwsAsync(cgroups.apply(bad, limits), { message: (m: string) => m.startsWith(`invalid sliver name ${JSON.stringify(bad)}:`) });
    t.throws(() => cgroups.procFiles(bad), { message: /invalid sliver name/ });
  }
  for (const good of ['princeton_sirius', 'a.b-c', 'x'.repeat(32), '_x1']) t.is(validateGroupName(good), good);
  await t.throwsAsync(createSliverCgroups({ root: '/nonexistent', parent: '../etc', version: 2 }), { message: /invalid cgroup parent "\.\.\/etc"/ });
});

test('limits out of the kernel ranges are refused before anything is written', async (t) => {
  const { cgroups, file } = await tree(t, ['cpu', 'memory', 'pids']);
  await t.throwsAsync(cgroups.apply('s1', { ...limits, cpuShares: 1 }), { message: /invalid cpuShares 1 for sliver "s1"/ });
  await t.throwsAsync(cgroups.apply('s1', { ...limits, cpuQuotaUs: 999 }), { message: /invalid cpuQuotaUs 999/ });
  await t.throwsAsync(cgroups.apply('s1', { ...limits, memoryBytes: 0 }), { message: /invalid memoryBytes 0/ });
  await t.throwsAsync(cgroups.apply('s1', { ...limits, pidsMax: 1.5 }), { message: /invalid pidsMax 1.5/ });
  t.is(await file('pids.max'), 'max\n');
});

test('weightToShares inverts sharesToWeight as far as the coarser weight allows', (t) => {
  for (let shares = 2; shares <= 262_144; shares += 997) {
    const weight = sharesToWeight(shares);
    const back = weightToShares(weight);
    t.is(sharesToWeight(back), weight);
    t.true(back <= shares);
    if (back > 2) t.is(sharesToWeight(back - 1), weight - 1);
  }
});

test('a directory that is not a cgroup2 mount is taken for v1 or hybrid', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-cgroup-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.is(await detectCgroupVersion(dir), 1);
  await t.throwsAsync(detectCgroupVersion(join(dir, 'missing')), { message: /cannot tell the cgroup version at .*missing: ENOENT/ });
});

test('the daemon\'s own group is read from /proc/self/cgroup, its leaf "daemon" counting as the group above it', (t) => {
  const root = '/sys/fs/cgroup';
  t.is(ownGroupDir(root, '0::/system.slice/nodemgr.service\n'), '/sys/fs/cgroup/system.slice/nodemgr.service');
  // after it moved into its leaf, the unit's group is still its own (a parent under it stays delegated)
  t.is(ownGroupDir(root, '0::/system.slice/nodemgr.service/daemon\n'), '/sys/fs/cgroup/system.slice/nodemgr.service');
  t.is(ownGroupDir(root, '0::/\n'), root);
  // v1 lines only (a host without the unified hierarchy): no v2 group of its own
  t.is(ownGroupDir(root, '4:memory:/\n1:name=systemd:/\n'), null);
});
