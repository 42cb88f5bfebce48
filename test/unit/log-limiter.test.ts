import test from 'ava';
import { logLimiter } from '../../src/util/log-limiter.js';

test('a key is logged the first time, then once per window, with the events left out in between', (t) => {
  let now = 0;
  const limiter = logLimiter({ windowMs: 1000, now: () => now });
  t.deepEqual(limiter.admit('a'), { log: true, repeats: 0 });
  t.deepEqual(limiter.admit('a'), { log: false });
  now = 999;
  t.deepEqual(limiter.admit('a'), { log: false });
  t.deepEqual(limiter.admit('b'), { log: true, repeats: 0 }, 'keys are limited apart');
  now = 1000;
  t.deepEqual(limiter.admit('a'), { log: true, repeats: 2 });
  t.deepEqual(limiter.admit('a'), { log: false });
  now = 5000;
  t.deepEqual(limiter.admit('a'), { log: true, repeats: 1 });
  t.deepEqual(limiter.admit('b'), { log: true, repeats: 0 });
});

test('past the bound on keys, the key logged longest ago is forgotten and logged again when it comes back', (t) => {
  const limiter = logLimiter({ windowMs: 60_000, now: () => 0, maxKeys: 3 });
  for (const key of ['a', 'b', 'c']) t.true(limiter.admit(key).log);
  t.false(limiter.admit('a').log);
  t.true(limiter.admit('d').log, 'a new key is always logged');
  t.true(limiter.admit('a').log, '"a" was the oldest and was forgotten');
  t.false(limiter.admit('c').log);
  t.false(limiter.admit('d').log);
});
