// The bandwidth plan against the real kernel, in two network namespaces this test creates: the HTB
// tree is accepted by tc as written, and an update changes only what it should.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { buildTreeBatch, sliverClasses, updateTreeBatch, type ClassSpec, type ShapingLayout } from '../../src/limits/shaping.js';
import { isRoot, run } from './support/host.js';

const ns = `nmshape${randomBytes(3).toString('hex')}`;
const peer = `${ns}p`;
// The uids below are only numbers in tc filters inside the test's own namespaces: no account or
// process has them, so they are not leased (support/uid-leases.ts) as the uids other tests run as are.
const layout: ShapingLayout = {
  device: 'nmv0', major: '4e4d', uidMin: 70_000, uidMax: 79_999, linkRateKbit: 1_000_000, nodeCapKbit: 20_000,
  exemptCapKbit: 100_000, exemptPrefixes: [],
};
const sliver = (uid: number, maxRateKbit: number, share = 1) => ({
  name: `s${uid}`, uid, minRateKbit: 0, maxRateKbit, share, exemptMinRateKbit: 0, exemptMaxRateKbit: 50_000,
});
/** Runs a command inside the test's namespace; its input on stdin. */
async function inNs(command: string, args: string[], input = ''): Promise<string> {
  const result = spawnSync('ip', ['netns', 'exec', ns, command, ...args], { input, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')}: exit ${result.status}: ${result.stderr}`);
  return result.stdout;
}
const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('the bandwidth plan against the kernel: needs root (network namespaces and tc)', () => undefined);

test.before(async () => {
  if (!isRoot) return;
  await run('ip', ['netns', 'add', ns]);
  await run('ip', ['netns', 'add', peer]);
  await run('ip', ['-n', ns, 'link', 'add', 'nmv0', 'type', 'veth', 'peer', 'name', 'nmv1', 'netns', peer]);
  await run('ip', ['-n', ns, 'addr', 'add', '10.97.0.1/24', 'dev', 'nmv0']);
  await run('ip', ['-n', peer, 'addr', 'add', '10.97.0.2/24', 'dev', 'nmv1']);
  await run('ip', ['-n', ns, 'link', 'set', 'nmv0', 'up']);
  await run('ip', ['-n', peer, 'link', 'set', 'nmv1', 'up']);
});

test.after.always(async () => {
  if (!isRoot) return;
  await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  await run('ip', ['netns', 'del', peer]).catch(() => undefined);
});

/** classid -> "parent rate ceil" as tc prints them. */
async function classes(): Promise<Map<string, string>> {
  const out = await inNs('tc', ['class', 'show', 'dev', 'nmv0']);
  const found = new Map<string, string>();
  for (const m of out.matchAll(/^class htb (\S+) (?:root|parent (\S+))(?: leaf \S+)?(?: prio \d+)? rate (\S+) ceil (\S+)/gm)) {
    found.set(m[1]!, `${m[2] ?? 'root'} ${m[3]} ${m[4]}`);
  }
  return found;
}

serial('tc builds the tree as written, and an update changes what a loan changed', async (t) => {
  const slivers = [sliver(70_000, 5_000), sliver(70_001, 10_000)];
  await inNs('tc', ['-batch', '-'], buildTreeBatch(layout, slivers.flatMap((s) => sliverClasses(layout, s))));
  const built = await classes();
  t.is(built.get('4e4d:1'), 'root 1Gbit 1Gbit');
  t.is(built.get('4e4d:10'), '4e4d:1 20Mbit 20Mbit');
  t.is(built.get('4e4d:100'), '4e4d:10 8bit 5Mbit');
  t.is(built.get('4e4d:102'), '4e4d:10 8bit 10Mbit');
  t.is(built.get('4e4d:103'), '4e4d:20 8bit 50Mbit');
  t.is(built.get('4e4d:fffe'), '4e4d:10 8bit 20Mbit');
  t.is(built.size, 8);

  const current = new Map<number, ClassSpec>(slivers.flatMap((s) => sliverClasses(layout, s)).map((c) => [c.minor, c]));
  const batch = updateTreeBatch(layout, current, [sliver(70_000, 2_000), sliver(70_001, 10_000)].flatMap((s) => sliverClasses(layout, s)));
  // the fixed classes are not in `current`, so they are re-added: tc must refuse nothing else
  const changes = batch.split('\n').filter((l) => l.startsWith('class change'));
  t.deepEqual(changes.map((l) => /classid (\S+)/.exec(l)![1]), ['4e4d:100']);
  await inNs('tc', ['-batch', '-'], changes.join('\n') + '\n');
  t.is((await classes()).get('4e4d:100'), '4e4d:10 8bit 2Mbit');
});
