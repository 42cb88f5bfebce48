// The pacing of the database's coalesced writes: a small database is written as soon as its
// updates have been gathered, a large one no more than a fifth of the time.
import test from 'ava';
import { nextWriteDelay, WRITE_SPACING } from '../../src/db/write-pacing.js';

test('a small database is written once its updates are gathered, as before', (t) => {
  // The last write took 4 ms and ended long ago: only the 50 ms of gathering count.
  t.is(nextWriteDelay(10_000, 10_000, 50, { endedAt: 5_000, durationMs: 4 }), 50);
  t.is(nextWriteDelay(10_030, 10_000, 50, { endedAt: 5_000, durationMs: 4 }), 20);
  // Nothing written yet.
  t.is(nextWriteDelay(10_000, 10_000, 50, { endedAt: 0, durationMs: 0 }), 50);
  // A write that ended just now, quickly, does not hold the next one past the gathering.
  t.is(nextWriteDelay(10_000, 9_990, 50, { endedAt: 10_000, durationMs: 5 }), 40);
});

test('after a write that took long, the next waits that many times as long after it ended', (t) => {
  // A 12 MB database: the write took 300 ms and ended now; updates came while it ran.
  t.is(nextWriteDelay(10_000, 9_800, 50, { endedAt: 10_000, durationMs: 300 }), WRITE_SPACING * 300);
  // Writing takes at most 1 part in (1 + spacing) of the time, however fast the updates come.
  const share = 300 / (300 + nextWriteDelay(10_000, 10_000, 50, { endedAt: 10_000, durationMs: 300 }));
  t.true(share <= 1 / (1 + WRITE_SPACING));
  // Once the spacing has passed, what is left is the gathering.
  t.is(nextWriteDelay(11_300, 11_290, 50, { endedAt: 10_000, durationMs: 300 }), 40);
  // Overdue: at once.
  t.true(nextWriteDelay(20_000, 11_000, 50, { endedAt: 10_000, durationMs: 300 }) <= 0);
});
