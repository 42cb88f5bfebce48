// How long to wait before the next fetch of the authority document. Pure: the randomness comes in
// as a function so that tests (and the poller's callers) decide it.

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** Uniform in [0, 1), like Math.random. */
  random: () => number;
}

function unit(random: () => number): number {
  const r = random();
  return Number.isFinite(r) ? Math.min(Math.max(r, 0), 1) : 0;
}

/**
 * Delay before retry number `attempt` (1 for the first retry after a failure): initialMs·2^(attempt-1),
 * capped at maxMs, then jittered to between half and all of that.
 *
 * Why this jitter: when the authority goes down, every node of the fleet starts failing at the
 * same moment, and without jitter they would all retry in lockstep and hit the recovering server
 * together. Jitter over the whole range [0, delay] spreads them best but lets a node retry almost
 * at once, which throws away the backoff exactly when the server is struggling. Keeping the lower
 * half guarantees at least half the intended wait while the upper half still spreads the fleet
 * over a window as wide as the wait itself.
 */
export function backoffDelayMs(attempt: number, opts: BackoffOptions): number {
  const initial = Math.max(0, opts.initialMs);
  const max = Math.max(initial, opts.maxMs);
  const exponent = Math.max(0, Math.floor(attempt) - 1);
  // 2^1024 is Infinity, which the cap turns into max: no overflow to guard against.
  const ceiling = Math.min(max, initial * 2 ** exponent);
  return Math.round(ceiling / 2 + (unit(opts.random) * ceiling) / 2);
}

/** The normal wait between polls: the period plus up to jitterMs, so a fleet does not poll in step. */
export function periodWithJitterMs(periodMs: number, jitterMs: number, random: () => number): number {
  return Math.round(Math.max(0, periodMs) + unit(random) * Math.max(0, jitterMs));
}
