import test from 'ava';
import { backoffDelayMs, periodWithJitterMs } from '../../src/host/backoff.js';
import { startPoller, type PollerOptions } from '../../src/authority/poller.js';
import { memoryLogger } from '../../src/log.js';
import { waitFor } from '../support/wait.js';

// ---------------------------------------------------------------------------------------------
// Backoff figures

const fixed = (value: number) => () => value;

test('backoff doubles from the initial delay and stops at the maximum', (t) => {
  const opts = { initialMs: 1000, maxMs: 60_000 };
  // random 0.999…: the top of the jitter range, i.e. the un-jittered delay.
  const top = Array.from({ length: 10 }, (_, i) => backoffDelayMs(i + 1, { ...opts, random: fixed(0.9999999) }));
  t.deepEqual(top, [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000]);
  // random 0: the bottom, half of it.
  const bottom = Array.from({ length: 8 }, (_, i) => backoffDelayMs(i + 1, { ...opts, random: fixed(0) }));
  t.deepEqual(bottom, [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
});

test('backoff is monotone in the attempt for a fixed random, and stays within half..all of the cap', (t) => {
  const opts = { initialMs: 5000, maxMs: 900_000 };
  for (const r of [0, 0.25, 0.5, 0.75, 0.99]) {
    let previous = 0;
    for (let attempt = 1; attempt <= 40; attempt++) {
      const delay = backoffDelayMs(attempt, { ...opts, random: fixed(r) });
      const ceiling = Math.min(opts.maxMs, opts.initialMs * 2 ** (attempt - 1));
      t.true(delay >= previous, `attempt ${attempt}, random ${r}: ${delay} < ${previous}`);
      t.true(delay >= ceiling / 2 && delay <= ceiling, `attempt ${attempt}, random ${r}: ${delay} outside [${ceiling / 2}, ${ceiling}]`);
      previous = delay;
    }
  }
});

test('backoff copes with odd inputs: attempt 0, huge attempts, a max below the initial delay', (t) => {
  const random = fixed(0.5);
  t.is(backoffDelayMs(0, { initialMs: 1000, maxMs: 8000, random }), backoffDelayMs(1, { initialMs: 1000, maxMs: 8000, random }));
  t.is(backoffDelayMs(10_000, { initialMs: 1000, maxMs: 8000, random }), 6000);
  t.is(backoffDelayMs(3, { initialMs: 1000, maxMs: 10, random: fixed(0.9999999) }), 1000);
});

test('the poll period gets between 0 and jitter added', (t) => {
  t.is(periodWithJitterMs(900_000, 60_000, fixed(0)), 900_000);
  t.is(periodWithJitterMs(900_000, 60_000, fixed(0.5)), 930_000);
  t.is(periodWithJitterMs(900_000, 0, fixed(0.5)), 900_000);
  for (let i = 0; i < 100; i++) {
    const wait = periodWithJitterMs(1000, 300, Math.random);
    t.true(wait >= 1000 && wait <= 1300);
  }
});

// ---------------------------------------------------------------------------------------------
// The poller

/** Waits for something the poller does. */
async function until(condition: () => boolean, what: string): Promise<void> {
  await waitFor(what, condition, { timeoutMs: 5_000, intervalMs: 1 });
}

/**
 * Not a wait for something to happen: a window in which what must not happen (an attempt after
 * stop, a second attempt while one runs) would; or, in an attempt, the time it takes.
 */
const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function gate(): { wait: Promise<void>; open(): void } {
  let open = () => undefined as void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

function options(attempt: PollerOptions['attempt'], more: Partial<PollerOptions> = {}): PollerOptions & { logger: ReturnType<typeof memoryLogger> } {
  return {
    periodMs: 60_000,
    jitterMs: 0,
    backoffInitialMs: 60_000,
    backoffMaxMs: 60_000,
    random: fixed(0.5),
    attempt,
    ...more,
    logger: memoryLogger(),
  };
}

/** The retry delays the poller announced, in order. */
function retryDelays(lines: string[]): number[] {
  return lines.flatMap((line) => /retry scheduled .*retry_in_ms=(\d+)/.exec(line)?.[1] ?? []).map(Number);
}

test('the first attempt starts at once; while attempts succeed they repeat every period', async (t) => {
  let attempts = 0;
  const poller = startPoller(options(async () => (attempts++, true), { periodMs: 2, jitterMs: 1 }));
  t.teardown(() => poller.stop());
  t.is(attempts, 1, 'the first attempt does not wait for a period');
  await until(() => attempts >= 4, 'four attempts');
  await poller.stop();
  const atStop = attempts;
  await settle(20);
  t.is(attempts, atStop, 'no attempt after stop');
});

test('failures back off along backoffDelayMs, and a success starts over', async (t) => {
  const script = [false, false, false, false, false, true, false];
  let attempts = 0;
  const o = options(async () => script[attempts++] ?? true, { periodMs: 1, backoffInitialMs: 1, backoffMaxMs: 8 });
  const poller = startPoller(o);
  t.teardown(() => poller.stop());
  await until(() => retryDelays(o.logger.lines).length === 6, 'the last scripted failure');
  await poller.stop();

  const expected = [1, 2, 3, 4, 5].map((n) => backoffDelayMs(n, { initialMs: 1, maxMs: 8, random: fixed(0.5) }));
  t.deepEqual(expected, [1, 2, 3, 6, 6]);
  // Five failures in a row, then a success, then the count starts again at 1.
  t.deepEqual(retryDelays(o.logger.lines), [...expected, expected[0]]);
  const failureCounts = o.logger.lines.flatMap((l) => /retry scheduled failures=(\d+)/.exec(l)?.[1] ?? []).map(Number);
  t.deepEqual(failureCounts, [1, 2, 3, 4, 5, 1]);
});

test('an attempt that throws counts as a failure and is logged', async (t) => {
  let attempts = 0;
  const o = options(async () => {
    attempts++;
    throw new Error('parser exploded');
  });
  const poller = startPoller(o);
  t.teardown(() => poller.stop());
  await until(() => retryDelays(o.logger.lines).length === 1, 'a retry being scheduled');
  await poller.stop();
  t.is(attempts, 1);
  t.true(o.logger.lines.some((l) => l.startsWith('error ') && l.includes('parser exploded')));
  t.deepEqual(retryDelays(o.logger.lines), [backoffDelayMs(1, { initialMs: 60_000, maxMs: 60_000, random: fixed(0.5) })]);
});

test('triggerNow during an attempt queues exactly one more; when idle it runs one soon', async (t) => {
  let attempts = 0;
  let running = 0;
  let overlapped = false;
  const first = gate();
  const poller = startPoller(options(async () => {
    attempts++;
    running++;
    if (running > 1) overlapped = true;
    if (attempts === 1) await first.wait;
    await settle(1);
    running--;
    return true;
  }));
  t.teardown(() => {
    first.open();
    return poller.stop();
  });
  t.is(attempts, 1);
  poller.triggerNow();
  poller.triggerNow();
  poller.triggerNow();
  await settle(10);
  t.is(attempts, 1, 'nothing starts while an attempt is running');
  first.open();
  await until(() => attempts === 2 && running === 0, 'the queued attempt');
  await settle(20);
  t.is(attempts, 2, 'three triggers during one attempt make one more attempt');

  poller.triggerNow();
  poller.triggerNow();
  await until(() => attempts === 3 && running === 0, 'the triggered attempt');
  await settle(20);
  t.is(attempts, 3, 'two triggers while idle make one attempt');
  t.false(overlapped, 'attempts never overlap');
  await poller.stop();
});

test('stop waits for the attempt in flight and nothing runs afterwards', async (t) => {
  let attempts = 0;
  let finished = false;
  const release = gate();
  const poller = startPoller(options(async () => {
    attempts++;
    await release.wait;
    finished = true;
    return false;
  }, { backoffInitialMs: 1, backoffMaxMs: 1 }));
  t.teardown(() => release.open());
  let stopped = false;
  const stopping = poller.stop().then(() => (stopped = true));
  poller.triggerNow();
  await settle(10);
  t.false(stopped, 'stop resolved while an attempt was still running');
  release.open();
  await stopping;
  t.true(finished);
  t.true(stopped);
  poller.triggerNow();
  await settle(20);
  t.is(attempts, 1, 'no retry, no triggered attempt after stop');
  await poller.stop(); // a second stop is harmless
});

test.serial('after stop no timer of the poller is left to keep the process alive', async (t) => {
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  await settle(5);
  const before = timers();
  let attempts = 0;
  const poller = startPoller(options(async () => (attempts++, true)));
  t.teardown(() => poller.stop());
  await until(() => timers() > before, 'the next poll being scheduled');
  await poller.stop();
  t.is(attempts, 1);
  t.is(timers(), before);
});
