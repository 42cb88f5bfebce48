// Daily byte caps: counting from class counters, throttling past the threshold to the rate that
// spreads what is left over what is left of the period, and the period's reset.
import test from 'ava';
import { stepByteCap, type ByteCapRule, type ByteCapState } from '../../src/limits/byte-cap.js';

const DAY = 86_400;
const MiB = 1024 * 1024;
// 100 MiB a day, throttled from 80 MiB; normally 10 Mbit/s, guaranteed 100 kbit/s.
const rule: ByteCapRule = { maxKbyte: 100 * 1024, threshKbyte: 80 * 1024, maxRateKbit: 10_000, minRateKbit: 100 };

function run(samples: readonly [seconds: number, counter: number][], period = DAY, start: ByteCapState | null = null) {
  let state = start;
  return samples.map(([at, counter]) => {
    const step = stepByteCap(state, counter, at, period, rule);
    state = step.state;
    return step;
  });
}

test('below the threshold the ceiling is the normal one and bytes add up across samples', (t) => {
  const steps = run([[0, 5 * MiB], [60, 15 * MiB], [120, 45 * MiB]]);
  t.deepEqual(steps.map((s) => s.state.usedBytes), [0, 10 * MiB, 40 * MiB], 'what the counter held at first sight is not counted');
  t.true(steps.every((s) => s.ceilingKbit === 10_000 && !s.throttled && !s.notify));
});

test('past the threshold the ceiling spreads what is left over what is left, and the operator is told once', (t) => {
  const steps = run([[0, 0], [43_200, 90 * MiB], [43_260, 91 * MiB]]);
  const half = steps[1]!;
  t.true(half.throttled);
  // 10 MiB left over 43,200 s is 1,941 bit/s: held at the 100 kbit/s minimum
  t.is(half.ceilingKbit, 100);
  t.true(half.notify);
  t.false(steps[2]!.notify, 'told once per period');
  t.true(steps[2]!.throttled);
});

test('the spread rate is used when it is above the minimum and below the normal ceiling', (t) => {
  // 1 GiB a day, throttled from 80 MiB; 85 MiB used with an hour left.
  const big: ByteCapRule = { ...rule, maxKbyte: 1024 * 1024 };
  const first = stepByteCap(null, 0, 0, DAY, big);
  const step = stepByteCap(first.state, 85 * MiB, DAY - 3_600, DAY, big);
  // (1 GiB - 85 MiB) * 8 / 3,600 s = 2,188,174 bit/s -> 2,188 kbit/s
  t.is(step.ceilingKbit, Math.floor(((1024 - 85) * MiB * 8) / 3_600 / 1000));
  t.true(step.throttled);
});

test('a counter that goes backwards starts a new baseline and keeps what was counted', (t) => {
  const steps = run([[0, 0], [60, 50 * MiB], [120, 2 * MiB], [180, 12 * MiB]]);
  t.deepEqual(steps.map((s) => s.state.usedBytes), [0, 50 * MiB, 52 * MiB, 62 * MiB]);
});

test('the period resets: the count starts again and the normal ceiling returns', (t) => {
  const period = 600;
  const steps = run([[0, 0], [300, 95 * MiB], [600, 96 * MiB], [660, 97 * MiB]], period);
  t.true(steps[1]!.throttled);
  t.false(steps[2]!.throttled);
  t.is(steps[2]!.state.periodStart, 600);
  t.is(steps[2]!.state.usedBytes, 0);
  t.is(steps[2]!.ceilingKbit, 10_000);
  t.is(steps[3]!.state.usedBytes, 1 * MiB);
  t.false(steps[3]!.state.notified);
});

test('a state carried over a restart continues the period where it was', (t) => {
  const saved: ByteCapState = { periodStart: 1_000, usedBytes: 85 * MiB, lastCounter: 85 * MiB, notified: true };
  // after a restart the qdisc was rebuilt: the counter starts from 0
  const step = stepByteCap(saved, 1 * MiB, 2_000, DAY, rule);
  t.is(step.state.usedBytes, 86 * MiB);
  t.true(step.throttled);
  t.false(step.notify, 'already told in this period');
  t.throws(() => stepByteCap(null, 0, 0, 0, rule), { message: /period must be positive/ });
});
