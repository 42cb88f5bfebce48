// From effective rspecs to each sliver's limits, and which slivers the limits apply to.
import test from 'ava';
import { limitInputOf } from '../../src/limits/enforcer.js';
import { sliverLimits } from '../../src/limits/sliver-limits.js';
import { withDefaults } from '../../src/rspec/resources.js';

test('rspec amounts become cgroup values, traffic classes and the disk quota; 0 means no hard limit', (t) => {
  const [capped, free] = sliverLimits([
    { name: 'capped', uid: 70_001, rspec: withDefaults({ cpu_share: 3, cpu_cap: 20, mem_max: 65_536, proc_max: 50, net_max_rate: 5_000, net_min_rate: 100, net_share: 2, disk_max: 1024 }) },
    { name: 'free', uid: 70_002, rspec: withDefaults({ cpu_share: 1, disk_max: 0 }) },
  ], 1);
  t.deepEqual(capped!.cgroup, { cpuShares: 196_608, cpuQuotaUs: 20_000, memoryBytes: 64 * 1024 * 1024, pidsMax: 50 });
  t.deepEqual(free!.cgroup, { cpuShares: 65_536, cpuQuotaUs: null, memoryBytes: null, pidsMax: null });
  t.is(capped!.shaping.maxRateKbit, 5_000);
  t.is(capped!.shaping.minRateKbit, 100);
  t.is(capped!.shaping.share, 2);
  t.is(capped!.diskKiB, 1024);
  t.is(free!.diskKiB, null);
});

test('limits apply to the slivers that are both asked for and on the host; delegates have none', (t) => {
  const rspec = withDefaults({});
  const input = limitInputOf(
    [{ name: 'a', kind: 'sliver', rspec }, { name: 'b', kind: 'sliver', rspec }, { name: 'd', kind: 'delegate', rspec: {} }],
    { owned: [{ name: 'a', kind: 'sliver', uid: 70_001 }, { name: 'old', kind: 'sliver', uid: 70_003 }, { name: 'd', kind: 'delegate', uid: 70_004 }], foreign: new Set(['root', 'theirs']) },
    20_000,
  );
  t.deepEqual([...input.others].sort(), ['root', 'theirs'], 'accounts that are not ours');
  t.deepEqual(input.slivers.map((s) => [s.name, s.uid]), [['a', 70_001]]);
  t.deepEqual([...input.present].sort(), ['a', 'old'], 'a group is kept while its account exists');
  t.is(input.bwcapKbit, 20_000);
});
