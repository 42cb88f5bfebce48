// The enforcer's bookkeeping, with recording stand-ins for the kernel interfaces (the real ones are
// exercised by test/system/limits.test.ts, bandwidth.test.ts and cgroups.test.ts): what is written
// again, what is left alone, and that one sliver's failure does not hold up the others.
import test from 'ava';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CgroupLimits, SliverCgroups } from '../../src/limits/cgroups.js';
import { createEnforcer, type LimitInput } from '../../src/limits/enforcer.js';
import { createLogger } from '../../src/log.js';
import { withDefaults } from '../../src/rspec/resources.js';

function recordingCgroups(failFor: Set<string>) {
  const applied: Array<[string, CgroupLimits]> = [];
  const groups = new Set<string>();
  const removed: string[] = [];
  const cgroups = {
    version: 1, support: { cpu: null, cpuQuota: null, memory: null, pids: null, kill: null },
    ensureParent: async () => undefined,
    apply: async (name: string, limits: CgroupLimits) => {
      if (failFor.has(name)) throw new Error(`cannot set memory.limit_in_bytes of sliver "${name}": EBUSY`);
      groups.add(name);
      applied.push([name, limits]);
    },
    read: async () => null, join: async () => undefined, procFiles: (name: string) => [`/x/${name}/cgroup.procs`],
    pids: async () => [], killAll: async () => 0,
    remove: async (name: string) => {
      groups.delete(name);
      removed.push(name);
    },
    list: async () => [...groups],
    sweep: async () => ({ moved: 0 }),
  } as unknown as SliverCgroups;
  return { cgroups, applied, removed, groups };
}

async function setup(input: () => LimitInput, failFor = new Set<string>()) {
  const recorder = recordingCgroups(failFor);
  const enforcer = await createEnforcer({
    cgroups: recorder.cgroups, shaper: null, disk: null, cpuCount: 1,
    byteCapFile: join(await mkdtemp(join(tmpdir(), 'nodemgr-enf-')), 'byte-caps.json'), byteCapPeriodSeconds: 86_400,
    input: async () => input(), logger: createLogger({ console: false }), now: () => new Date(0),
  });
  return { enforcer, ...recorder };
}

const sliver = (name: string, uid: number, rspec: Record<string, number> = {}) => ({ name, uid, rspec: withDefaults(rspec) });
const inputOf = (slivers: ReturnType<typeof sliver>[], others: string[] = []): LimitInput =>
  ({ slivers, present: new Set(slivers.map((s) => s.name)), others: new Set(others), bwcapKbit: null });

test('a second apply with nothing changed writes nothing; a loan rewrites only the two slivers it moved shares between', async (t) => {
  let slivers = [sliver('a', 70_001, { cpu_share: 2 }), sliver('b', 70_002, { cpu_share: 2 }), sliver('c', 70_003, { cpu_share: 4 })];
  const { enforcer, applied } = await setup(() => inputOf(slivers));
  await enforcer.refresh();
  t.deepEqual(applied.map(([name]) => name), ['a', 'b', 'c']);
  applied.length = 0;
  await enforcer.refresh();
  t.deepEqual(applied, []);
  slivers = [sliver('a', 70_001, { cpu_share: 1 }), sliver('b', 70_002, { cpu_share: 3 }), slivers[2]!];
  await enforcer.refresh();
  t.deepEqual(applied.map(([name]) => name).sort(), ['a', 'b']);
  t.is(applied.find(([n]) => n === 'b')![1].cpuShares / applied.find(([n]) => n === 'a')![1].cpuShares, 3);
});

test('one sliver whose limits cannot be applied is reported, and the others are applied regardless', async (t) => {
  const { enforcer, applied } = await setup(() => inputOf([sliver('bad', 70_001), sliver('good', 70_002)]), new Set(['bad']));
  await enforcer.refresh();
  t.deepEqual(applied.map(([name]) => name), ['good']);
  t.regex(enforcer.problems().get('bad')?.get('cgroup') ?? '', /EBUSY/);
  t.false(enforcer.problems().has('good'));
  t.deepEqual(enforcer.launchFiles('bad'), [], 'no launch into a group whose limits are not in force');
  t.deepEqual(enforcer.launchFiles('good'), ['/x/good/cgroup.procs']);
});

test('the group of a sliver whose account is gone is removed; one whose account exists is kept', async (t) => {
  let input = inputOf([sliver('a', 70_001), sliver('b', 70_002)]);
  const { enforcer, removed } = await setup(() => input);
  await enforcer.refresh();
  // b is no longer asked for but its account still exists (being destroyed): kept
  input = { ...inputOf([sliver('a', 70_001)]), present: new Set(['a', 'b']) };
  await enforcer.refresh();
  t.deepEqual(removed, []);
  input = inputOf([sliver('a', 70_001)]);
  await enforcer.refresh();
  t.deepEqual(removed, ['b']);
});

test('refreshes asked for during an apply are served by one more apply, which sees the newest state', async (t) => {
  let reads = 0;
  const { enforcer } = await setup(() => {
    reads++;
    return inputOf([sliver('a', 70_001)]);
  });
  await Promise.all([enforcer.refresh(), enforcer.refresh(), enforcer.refresh(), enforcer.refresh()]);
  t.true(reads <= 2, `${reads} applies for 4 requests`);
  t.true(reads >= 1);
});

test('a group under the shared parent whose account is another daemon\'s is never removed', async (t) => {
  let input = inputOf([sliver('mine', 70_001), sliver('theirs', 72_001)]);
  const { enforcer, removed, groups } = await setup(() => input);
  await enforcer.refresh();
  // Another daemon's sliver: its account exists on the host, not in this daemon's range or marker.
  input = inputOf([sliver('mine', 70_001)], ['theirs', 'root']);
  await enforcer.refresh();
  t.deepEqual(removed, []);
  t.true(groups.has('theirs'));
  // Once no account of that name exists at all, the group is a leftover and goes.
  input = inputOf([sliver('mine', 70_001)], ['root']);
  await enforcer.refresh();
  t.deepEqual(removed, ['theirs']);
});
