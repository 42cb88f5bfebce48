// Byte caps across slivers: counts carried across samples, a restart (the saved file) and a
// sliver's removal and return within its period; what the saved file must look like.
import test from 'ava';
import { byteCapRules, ceilingsOf, formatByteCapFile, parseByteCapFile, sampleByteCaps, type ByteCapReading } from '../../src/limits/bwmon.js';
import { withDefaults } from '../../src/rspec/resources.js';

const HOUR = 3_600;
const MiB = 1024 * 1024;
// 10 MiB per period, throttled from 8 MiB; 10 Mbit/s normally, 100 kbit/s guaranteed.
const rspec = withDefaults({
  net_max_kbyte: 10 * 1024, net_thresh_kbyte: 8 * 1024, net_max_rate: 10_000, net_min_rate: 100,
  net_i2_max_kbyte: 100 * 1024, net_i2_thresh_kbyte: 90 * 1024,
});
const reading = (mainCounter: number, exemptCounter = 0, name = 'alice', uid = 70_001): ByteCapReading => ({ name, uid, rspec, mainCounter, exemptCounter });

test('the rules come from the rspec: net_* for ordinary traffic, net_i2_* for exempt', (t) => {
  const rules = byteCapRules(rspec);
  t.deepEqual(rules.main, { maxKbyte: 10 * 1024, threshKbyte: 8 * 1024, maxRateKbit: 10_000, minRateKbit: 100 });
  t.is(rules.exempt.maxKbyte, 100 * 1024);
  t.is(rules.exempt.maxRateKbit, rspec['net_i2_max_rate']!);
});

test('crossing the threshold throttles the class and tells the operator once', (t) => {
  let sample = sampleByteCaps({}, [reading(0)], 0, HOUR);
  t.is(sample.ceilings.size, 0);
  sample = sampleByteCaps(sample.states, [reading(9 * MiB)], 600, HOUR);
  t.deepEqual(sample.notices.map((n) => [n.name, n.pair]), [['alice', 'main']]);
  // 1 MiB left over 3,000 s: 2,796 bit/s, held at the 100 kbit/s minimum
  t.deepEqual(sample.ceilings.get(70_001), { mainKbit: 100 });
  const again = sampleByteCaps(sample.states, [reading(9 * MiB + 1000)], 660, HOUR);
  t.deepEqual(again.notices, []);
  t.deepEqual(again.ceilings.get(70_001), { mainKbit: 100 });
  t.true(again.states['alice']!.main.notified);
});

test('a sliver that goes and comes back within its period keeps its count; after the period it is forgotten', (t) => {
  let sample = sampleByteCaps({}, [reading(0)], 0, HOUR);
  sample = sampleByteCaps(sample.states, [reading(5 * MiB)], 100, HOUR);
  const gone = sampleByteCaps(sample.states, [], 200, HOUR);
  t.is(gone.states['alice']!.main.usedBytes, 5 * MiB, 'kept while gone');
  // Back with a new class whose counter starts at zero: what it sends adds to the old count.
  const back = sampleByteCaps(gone.states, [reading(4 * MiB)], 300, HOUR);
  t.is(back.states['alice']!.main.usedBytes, 9 * MiB);
  t.truthy(back.ceilings.get(70_001)?.mainKbit);
  t.false('alice' in sampleByteCaps(gone.states, [], HOUR + 1, HOUR).states, 'forgotten after its period');
});

test('exempt traffic has its own allowance', (t) => {
  let sample = sampleByteCaps({}, [reading(0, 0)], 0, HOUR);
  sample = sampleByteCaps(sample.states, [reading(1 * MiB, 95 * MiB)], 60, HOUR);
  t.deepEqual(sample.notices.map((n) => n.pair), ['exempt']);
  t.deepEqual(Object.keys(sample.ceilings.get(70_001)!), ['exemptKbit']);
});

test('after a restart the saved counts give the same ceilings before any new sample', (t) => {
  let sample = sampleByteCaps({}, [reading(0)], 0, HOUR);
  sample = sampleByteCaps(sample.states, [reading(9 * MiB)], 600, HOUR);
  const saved = parseByteCapFile(formatByteCapFile(sample.states));
  t.deepEqual(saved, sample.states);
  t.deepEqual(ceilingsOf(saved, [{ name: 'alice', uid: 70_001, rspec }], 600, HOUR), sample.ceilings);
  t.deepEqual(ceilingsOf(saved, [{ name: 'alice', uid: 70_001, rspec }], HOUR + 1, HOUR).size, 0, 'not past the period');
});

test('a saved file that is not what was written is refused with what is wrong', (t) => {
  t.throws(() => parseByteCapFile('{"version": 2, "slivers": {}}'), { message: /version/ });
  t.throws(() => parseByteCapFile('{"version": 1, "slivers": {"a": {"main": {"periodStart": -1}}}}'), { message: /sliver "a"/ });
  t.throws(() => parseByteCapFile('not json'));
});
