// The per-sliver metrics on the registry: every series of SLIVER_SERIES is filled at scrape time
// (prom-client's collect) from the newest reading of the slivers, which the scrape refreshes
// first (reading-cache.ts says how long it may wait for it).
import { Counter, Gauge, type Registry } from 'prom-client';
import { createReadingCache, type ReadingCache } from './reading-cache.js';
import { SLIVER_SERIES, type SliverReading } from './sliver-series.js';

export interface SliverMetricsOptions {
  read(): Promise<readonly SliverReading[]>;
  /** A reading this young is served again as it is. */
  readonly maxAgeMs?: number;
  /** How long a scrape may wait for a fresh reading. */
  readonly waitMs?: number;
  onError(error: unknown): void;
  nowMs(): number;
}

/** Two scrapes within a second (two Prometheus servers, say) share one reading. */
const MAX_AGE_MS = 1_000;
/** Within the scrape's budget of 50 ms, with room for the text of a thousand slivers' series. */
const WAIT_MS = 20;

export interface SliverMetrics {
  /** Refreshes the readings the next collect serves, within the scrape's budget. */
  prepare(): Promise<void>;
}

export function registerSliverMetrics(registry: Registry, options: SliverMetricsOptions): SliverMetrics {
  const cache: ReadingCache<readonly SliverReading[]> = createReadingCache({
    read: options.read, maxAgeMs: options.maxAgeMs ?? MAX_AGE_MS, waitMs: options.waitMs ?? WAIT_MS, onError: options.onError, nowMs: options.nowMs,
  });
  const none: readonly SliverReading[] = [];
  const readings = () => cache.latest()?.value ?? none;
  for (const s of SLIVER_SERIES) {
    const labelNames = ['sliver', 'runtime', ...s.extraLabels];
    // Filled once per reading: a scrape that serves the same reading again (a second Prometheus,
    // say) finds the series as they are, which is most of a scrape's cost saved.
    let filledFrom: readonly SliverReading[] | null = null;
    const refill = (reset: () => void, set: (labels: Record<string, string>, value: number) => void) => {
      const current = readings();
      if (current === filledFrom) return;
      reset();
      for (const r of current) {
        for (const [extra, value] of s.values(r)) set({ sliver: r.name, runtime: r.runtime, ...extra }, value);
      }
      filledFrom = current;
    };
    if (s.type === 'counter') {
      new Counter({ name: s.name, help: s.help, labelNames, registers: [registry], collect() {
        refill(() => this.reset(), (labels, value) => this.inc(labels, value));
      } });
    } else {
      new Gauge({ name: s.name, help: s.help, labelNames, registers: [registry], collect() {
        refill(() => this.reset(), (labels, value) => this.set(labels, value));
      } });
    }
  }
  new Gauge({
    name: 'nodemgr_sliver_readings_age_seconds', help: 'Age of the per-sliver readings this scrape serves (they are refreshed at scrapes); 0 before the first.',
    registers: [registry],
    collect() {
      const latest = cache.latest();
      this.set(latest === null ? 0 : Math.max(0, (options.nowMs() - latest.startedMs) / 1000));
    },
  });
  new Gauge({
    name: 'nodemgr_sliver_readings_duration_seconds', help: 'Seconds the newest per-sliver reading took (cgroups, traffic classes, guests).',
    registers: [registry],
    collect() {
      this.set((cache.latest()?.tookMs ?? 0) / 1000);
    },
  });
  return { prepare: async () => void (await cache.fresh()) };
}
