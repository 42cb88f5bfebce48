// Readings of the host that a scrape serves without waiting for them. Reading a thousand
// slivers' cgroups takes far longer than a scrape may (seconds on a busy host, against a budget
// of tens of milliseconds), so a scrape starts a fresh reading and serves the newest one that is
// complete: it waits for the fresh one only when the last one was quick enough to fit its budget.
// Readings never overlap, and one younger than `maxAgeMs` is served as it is.

export interface Reading<T> {
  readonly value: T;
  /** When the reading started, ms since the epoch. */
  readonly startedMs: number;
  readonly tookMs: number;
}

export interface ReadingCacheOptions<T> {
  read(): Promise<T>;
  /** A reading this young is served without reading again. */
  readonly maxAgeMs: number;
  /** How long a scrape may wait for a fresh reading, when the last one took no longer. */
  readonly waitMs: number;
  /** A reading that failed; the one before it is served meanwhile. */
  onError(error: unknown): void;
  nowMs(): number;
}

export interface ReadingCache<T> {
  /** The newest complete reading after starting a fresh one (and waiting for it within the budget). */
  fresh(): Promise<Reading<T> | null>;
  /** The newest complete reading, without reading. */
  latest(): Reading<T> | null;
}

/** Whether a scrape waits for the reading it starts: only when it is expected to fit the budget. Pure. */
export function waitsForReading(last: Pick<Reading<unknown>, 'tookMs'> | null, waitMs: number): boolean {
  return last === null || last.tookMs <= waitMs;
}

export function createReadingCache<T>(options: ReadingCacheOptions<T>): ReadingCache<T> {
  let latest: Reading<T> | null = null;
  let inFlight: Promise<void> | null = null;

  const start = (): Promise<void> => {
    inFlight ??= (async () => {
      const startedMs = options.nowMs();
      try {
        const value = await options.read();
        latest = { value, startedMs, tookMs: Math.max(0, options.nowMs() - startedMs) };
      } catch (error) {
        options.onError(error);
      } finally {
        inFlight = null;
      }
    })();
    return inFlight;
  };

  return {
    async fresh() {
      if (latest !== null && options.nowMs() - latest.startedMs < options.maxAgeMs) return latest;
      const wait = waitsForReading(latest, options.waitMs);
      const reading = start();
      if (wait) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([reading, new Promise<void>((resolve) => (timer = setTimeout(resolve, options.waitMs)))]);
        clearTimeout(timer);
      }
      return latest;
    },
    latest: () => latest,
  };
}
