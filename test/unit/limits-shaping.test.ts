// The bandwidth plan: class numbers from uids, the HTB tree, what a changed loan rewrites, and the
// nftables classifier. The text is checked against the real tc and nft in test/system/shaping.test.ts.
import test from 'ava';
import {
  buildTreeBatch, classifierScript, MAX_SHAPED_UIDS, sliverClasses, sliverClassMinors, updateTreeBatch, type ClassSpec, type ShapingLayout,
} from '../../src/limits/shaping.js';

const layout: ShapingLayout = {
  device: 'eth1', major: '4e4d', uidMin: 70_000, uidMax: 79_999, linkRateKbit: 1_000_000, nodeCapKbit: 20_000,
  exemptCapKbit: 100_000, exemptPrefixes: ['10.78.0.0/24', 'fd00::/8'],
};
const sliver = (uid: number, over: Partial<{ min: number; max: number; share: number }> = {}) => ({
  name: `s${uid}`, uid, minRateKbit: over.min ?? 0, maxRateKbit: over.max ?? 5_000, share: over.share ?? 1, exemptMinRateKbit: 0, exemptMaxRateKbit: 1_000_000,
});

test('each uid has its own pair of class numbers, stable across runs', (t) => {
  t.deepEqual(sliverClassMinors(layout, 70_000), { main: 0x100, exempt: 0x101 });
  t.deepEqual(sliverClassMinors(layout, 70_005), { main: 0x10a, exempt: 0x10b });
  t.throws(() => sliverClassMinors(layout, 69_999), { message: /outside the shaped range/ });
  t.throws(() => sliverClassMinors({ ...layout, uidMax: 200_000 }, 70_000 + MAX_SHAPED_UIDS), { message: /no class number is left/ });
});

test('a sliver class runs from its guaranteed rate to its ceiling, inside the node cap, weighted by its share', (t) => {
  const [main, exempt] = sliverClasses(layout, sliver(70_001, { min: 1_000, max: 50_000, share: 3 }));
  t.like(main, { minor: 0x102, parent: 0x10, rateBit: '1000000bit', ceilBit: '20000000bit', quantum: 60_000, leaf: true });
  t.like(exempt, { minor: 0x103, parent: 0x20, rateBit: '8bit', ceilBit: '100000000bit' });
  const [throttled] = sliverClasses(layout, sliver(70_001, { min: 1_000, max: 5_000 }), { mainKbit: 300 });
  t.like(throttled, { rateBit: '300000bit', ceilBit: '300000bit' }, 'a throttled ceiling below the minimum takes the minimum with it');
});

test('the tree is built from the root qdisc down, every leaf with its own queue', (t) => {
  const batch = buildTreeBatch(layout, sliverClasses(layout, sliver(70_000)));
  const lines = batch.trim().split('\n');
  t.is(lines[0], 'qdisc add dev eth1 root handle 4e4d: htb default fffe');
  t.true(lines.includes('class add dev eth1 parent 4e4d:10 classid 4e4d:100 htb rate 8bit ceil 5000000bit quantum 20000'));
  t.true(lines.includes('qdisc add dev eth1 parent 4e4d:100 handle 100: pfifo limit 1000'));
  t.is(lines.filter((l) => l.startsWith('class add')).length, 4 + 2);
});

test('a changed loan rewrites the two classes it touches and nothing else; a gone sliver loses its classes', (t) => {
  const before = [sliver(70_000, { share: 2 }), sliver(70_001, { share: 2 }), sliver(70_002)];
  const current = new Map<number, ClassSpec>();
  for (const spec of [...before.flatMap((s) => sliverClasses(layout, s))]) current.set(spec.minor, spec);
  // the fixed classes as the tree has them
  for (const line of buildTreeBatch(layout, []).split('\n')) {
    const m = /classid 4e4d:([0-9a-f]+) htb rate (\S+) ceil (\S+) quantum (\d+)/.exec(line);
    if (m) current.set(parseInt(m[1]!, 16), { minor: parseInt(m[1]!, 16), parent: null, rateBit: m[2]!, ceilBit: m[3]!, quantum: Number(m[4]), leaf: false });
  }
  const after = [sliver(70_000, { share: 1 }), sliver(70_001, { share: 3 })];
  const lines = updateTreeBatch(layout, current, after.flatMap((s) => sliverClasses(layout, s))).trim().split('\n');
  t.deepEqual(lines, [
    'class change dev eth1 parent 4e4d:10 classid 4e4d:100 htb rate 8bit ceil 5000000bit quantum 20000',
    'class change dev eth1 parent 4e4d:20 classid 4e4d:101 htb rate 8bit ceil 100000000bit quantum 20000',
    'class change dev eth1 parent 4e4d:10 classid 4e4d:102 htb rate 8bit ceil 5000000bit quantum 60000',
    'class change dev eth1 parent 4e4d:20 classid 4e4d:103 htb rate 8bit ceil 100000000bit quantum 60000',
    'class del dev eth1 classid 4e4d:104',
    'class del dev eth1 classid 4e4d:105',
  ]);
});

test('the classifier maps each uid to its classes, exempt destinations first, in a table of its own', (t) => {
  const script = classifierScript(layout, [sliver(70_000), sliver(70_005)]);
  t.regex(script, /^table inet nodemgr \{\}\ndelete table inet nodemgr\ntable inet nodemgr \{/);
  t.regex(script, /elements = \{ 70000 : 4e4d:100, 70005 : 4e4d:10a \}/);
  t.regex(script, /elements = \{ 70000 : 4e4d:101, 70005 : 4e4d:10b \}/);
  const rules = script.split('\n').filter((l) => l.includes('oifname'));
  t.deepEqual(rules.map((l) => l.trim()), [
    'oifname "eth1" ip daddr { 10.78.0.0/24 } meta priority set meta skuid map @sliver_exempt_class accept',
    'oifname "eth1" ip6 daddr { fd00::/8 } meta priority set meta skuid map @sliver_exempt_class accept',
    'oifname "eth1" meta priority set meta skuid map @sliver_class',
  ]);
  t.notRegex(classifierScript(layout, []), /elements/, 'no slivers: empty maps');
});
