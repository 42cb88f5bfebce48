// CPU weights from shares and guarantees: the proportions, the floors, and what a loan touches.
import test from 'ava';
import { capQuotaUs, cpuWeights, sharesToWeight } from '../../src/rspec/cpu.js';

const claim = (name: string, share: number, guaranteedPct = 0) => ({ name, share, guaranteedPct });

/** The fraction of the node each sliver gets when all of them are busy. */
function busyFractions(weights: ReadonlyMap<string, number>): Map<string, number> {
  const total = [...weights.values()].reduce((a, b) => a + b, 0);
  return new Map([...weights].map(([n, w]) => [n, w / total]));
}

test('shares alone give proportions', (t) => {
  const { weights, guaranteesScaledBy } = cpuWeights([claim('a', 1), claim('b', 3)], 1);
  t.is(weights.get('b')! / weights.get('a')!, 3);
  t.is(guaranteesScaledBy, null);
});

test('a guarantee is a floor when everyone is busy, and the rest goes by shares', (t) => {
  // 2 CPUs; "a" is promised 50% of one CPU = 25% of the node, against 9 busy slivers with big shares.
  const claims = [claim('a', 1, 50), ...Array.from({ length: 9 }, (_, i) => claim(`x${i}`, 100))];
  const fractions = busyFractions(cpuWeights(claims, 2).weights);
  t.true(Math.abs(fractions.get('a')! - (0.25 + 0.75 * (1 / 901))) < 0.001, String(fractions.get('a')));
  t.true(Math.abs(fractions.get('x0')! - (0.75 * 100) / 901) < 0.001);
});

test('guarantees that add up to more than the node are scaled down to 90% of it, and say so', (t) => {
  const { weights, guaranteesScaledBy } = cpuWeights([claim('a', 1, 100), claim('b', 1, 100), claim('c', 1, 0)], 1);
  t.is(guaranteesScaledBy, 0.45);
  const fractions = busyFractions(weights);
  t.true(fractions.get('c')! > 0.03, 'the sliver without a guarantee still runs');
  t.true(Math.abs(fractions.get('a')! - fractions.get('b')!) < 1e-6);
});

test('a loan of shares between two slivers changes only their weights', (t) => {
  const before = cpuWeights([claim('a', 4), claim('b', 4), claim('c', 8, 20)], 2).weights;
  const after = cpuWeights([claim('a', 2), claim('b', 6), claim('c', 8, 20)], 2).weights;
  t.is(after.get('c'), before.get('c'));
  t.true(Math.abs(after.get('b')! / after.get('a')! - 3) < 0.001, 'rounded to whole shares');
});

test('weights stay within what cpu.shares accepts, even for 10,000 slivers', (t) => {
  const many = cpuWeights(Array.from({ length: 10_000 }, (_, i) => claim(`s${i}`, 1)), 2).weights;
  t.true([...many.values()].every((w) => w >= 2 && w <= 262_144));
  t.is(cpuWeights([claim('alone', 1_000_000)], 1).weights.get('alone'), 262_144);
  t.throws(() => cpuWeights([], 0), { message: /cpuCount must be a positive integer/ });
});

test('v2 weights follow the v1 shares as systemd maps them; caps become CFS quotas', (t) => {
  t.is(sharesToWeight(2), 1);
  t.is(sharesToWeight(1024), 39);
  t.is(sharesToWeight(262_144), 10_000);
  t.is(capQuotaUs(20), 20_000);
  t.is(capQuotaUs(150), 150_000);
  t.is(capQuotaUs(0), null);
  t.is(capQuotaUs(0.5), 1_000, 'never under the 1 ms the kernel accepts');
});
