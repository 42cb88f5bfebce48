// When to fetch the authority document: at once on start, then every period (plus jitter) while
// fetches succeed, and with growing, jittered delays while they fail. The attempt itself is the
// caller's; this module only keeps time and makes sure attempts never overlap.
import type { Logger } from '../log.js';
import { backoffDelayMs, periodWithJitterMs } from '../host/backoff.js';
import { describeError } from '../util/errors.js';

export interface PollerOptions {
  periodMs: number;
  jitterMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  random?: () => number;
  logger: Logger;
  /** One attempt; resolves true on success (document applied or not modified), false on failure. Must not throw (a throw counts as failure and is logged). */
  attempt: () => Promise<boolean>;
}

export interface Poller {
  /** Runs an attempt soon; while one runs, one more is queued behind it (however often this is called). */
  triggerNow(): void;
  /** Cancels what is scheduled and resolves once the attempt in flight, if any, is over. */
  stop(): Promise<void>;
}

export function startPoller(o: PollerOptions): Poller {
  const random = o.random ?? Math.random;
  let timer: NodeJS.Timeout | null = null;
  let inFlight: Promise<void> | null = null;
  let queued = false;
  let stopped = false;
  let stopping: Promise<void> | null = null;
  let failures = 0;

  const schedule = (delayMs: number) => {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      run();
    }, delayMs);
  };

  const attemptOnce = async (): Promise<boolean> => {
    try {
      return (await o.attempt()) === true;
    } catch (error) {
      o.logger.error('authority poll attempt threw', { error: describeError(error) });
      return false;
    }
  };

  const run = () => {
    if (stopped) return;
    if (inFlight !== null) {
      queued = true;
      return;
    }
    inFlight = attemptOnce().then((ok) => {
      inFlight = null;
      if (stopped) return;
      failures = ok ? 0 : failures + 1;
      if (queued) {
        queued = false;
        schedule(0);
        return;
      }
      if (ok) {
        const wait = periodWithJitterMs(o.periodMs, o.jitterMs, random);
        o.logger.debug('next authority poll scheduled', { in_ms: wait });
        schedule(wait);
      } else {
        const wait = backoffDelayMs(failures, { initialMs: o.backoffInitialMs, maxMs: o.backoffMaxMs, random });
        o.logger.info('authority poll failed; retry scheduled', { failures, retry_in_ms: wait });
        schedule(wait);
      }
    });
  };

  // The first attempt starts now, not after a period: a node that just booted wants its slices.
  run();

  return {
    triggerNow() {
      if (stopped) return;
      if (inFlight !== null) queued = true;
      else schedule(0);
    },
    stop() {
      if (stopping === null) {
        stopped = true;
        queued = false;
        if (timer !== null) clearTimeout(timer);
        timer = null;
        stopping = inFlight ?? Promise.resolve();
      }
      return stopping;
    },
  };
}
