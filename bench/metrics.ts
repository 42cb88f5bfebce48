// The cost of a scrape of /metrics on a node of N slivers (1,000 by default), with the registry
// and the slivers' reading the daemon uses: the node's records, each sliver's real cgroup (under a throwaway
// parent) and real HTB classes (on a veth in a throwaway network namespace), their limits applied
// by the daemon's own enforcer and its byte counters sampled once. Printed beside its peer in the
// same run: a bare prom-client registry holding the same series, set once, with nothing read.
// Needs root.
//
//   node --import tsx bench/metrics.ts [slivers] [scrapes]
import { rm } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { Counter, Gauge, Registry } from 'prom-client';
import { sliverSourcesOf } from '../src/app/metrics.js';
import { createMetrics } from '../src/metrics/registry.js';
import { readSlivers } from '../src/metrics/sliver-source.js';
import { createEnforcer, limitInputOf } from '../src/limits/enforcer.js';
import { createTrafficShaper } from '../src/limits/tc.js';
import { createLogger } from '../src/log.js';
import { desiredOfRecords } from '../src/reconcile/desired.js';
import { mapBounded } from '../src/util/bounded.js';
import { parseExposition } from '../test/support/exposition.js';
import { BENCH_DEVICE, limitsBenchHost } from './lib/limits-host.js';
import { nodeOfRecords } from './lib/node-of-records.js';

const count = Number(process.argv[2] ?? 1000);
const scrapes = Number(process.argv[3] ?? 100);
if (process.getuid?.() !== 0) {
  console.log('bench/metrics.ts needs root (it makes cgroups and a network namespace); skipped');
  process.exit(0);
}

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
const ms = (x: number) => `${x.toFixed(1)} ms`;

/** Wall and CPU milliseconds of the task (CPU: this process's, whatever else runs in it meanwhile). */
async function timed<T>(task: () => Promise<T>): Promise<{ ms: number; cpuMs: number; value: T }> {
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  const value = await task();
  const used = process.cpuUsage(cpu);
  return { ms: Number(process.hrtime.bigint() - started) / 1e6, cpuMs: (used.user + used.system) / 1000, value };
}

interface Runs {
  readonly ms: number[];
  readonly cpuMs: number[];
  readonly text: string;
}

/** `runs` scrapes, a pause between them as between a server's scrapes (shortened). */
async function scrapeRuns(scrape: () => Promise<string>, runs: number): Promise<Runs> {
  const result = { ms: [] as number[], cpuMs: [] as number[], text: '' };
  for (let i = 0; i < runs; i++) {
    const run = await timed(scrape);
    result.ms.push(run.ms);
    result.cpuMs.push(run.cpuMs);
    result.text = run.value;
    await new Promise((r) => setTimeout(r, 20));
  }
  return result;
}

/** A registry with the same families and label sets as `text`, values set once: what prom-client costs alone. */
function bareRegistry(text: string): Registry {
  const e = parseExposition(text);
  const registry = new Registry();
  for (const [name, type] of e.types) {
    const samples = e.samples.filter((s) => s.name === name);
    if (type === 'histogram' || samples.length === 0) continue;
    const labelNames = Object.keys(samples[0]!.labels);
    if (type === 'counter') {
      const c = new Counter({ name, help: 'bare', labelNames, registers: [registry] });
      for (const s of samples) c.inc(s.labels, s.value);
    } else {
      const g = new Gauge({ name, help: 'bare', labelNames, registers: [registry] });
      for (const s of samples) g.set(s.labels, s.value);
    }
  }
  return registry;
}

async function main(): Promise<void> {
  const node = nodeOfRecords(count);
  const host = await limitsBenchHost('nmmetrics');
  const { ns, dir, cgroups } = host;
  const logger = createLogger({ console: false });
  try {
    await cgroups.ensureParent();
    const { config, database } = node;
    const shaper = createTrafficShaper({
      netns: ns,
      layout: {
        device: BENCH_DEVICE, major: '4e4d', uidMin: config.sliverUidMin, uidMax: config.sliverUidMax, linkRateKbit: 10_000_000,
        nodeCapKbit: 10_000_000, exemptCapKbit: 10_000_000, exemptPrefixes: ['10.0.0.0/8'],
      },
    });
    const owned = Object.values(database.accounts).map((a) => ({ name: a.name, kind: a.kind, uid: a.uid }));
    const desired = desiredOfRecords(config.defaultRuntime);
    const enforcer = await createEnforcer({
      cgroups, shaper, disk: null, cpuCount: cpus().length, byteCapFile: join(dir, 'byte-caps.json'), byteCapPeriodSeconds: 86_400,
      input: async () => limitInputOf(desired(database).specs, { owned, foreign: new Set() }, null), logger, now: () => new Date(),
    });
    const applied = await timed(() => enforcer.refresh());
    if (enforcer.problems().size > 0) throw new Error(`limits not applied: ${JSON.stringify([...enforcer.problems()].slice(0, 3).map(([k, v]) => [k, [...v]]))}`);
    await enforcer.sampleBytes();
    const slivers = Object.keys(enforcer.byteCaps()).length;

    const parts = {
      version: 'bench', store: { data: database }, images: { list: () => [] }, limits: { cgroups, shaper, unavailable: new Map() },
      enforcer, guests: { status: async () => null }, logger, now: () => new Date(),
    };
    // The daemon's own reading of the slivers, timed alone (a scrape starts it and does not wait).
    const sources = sliverSourcesOf(config, parts);
    const readings: Array<{ ms: number; cpuMs: number; value: Awaited<ReturnType<typeof readSlivers>> }> = [];
    for (let i = 0; i < 3; i++) readings.push(await timed(() => readSlivers(sources)));

    // The registry as the daemon makes it, but for how long a reading is served: for ever, once
    // there is one (the scrape's own cost), or never (each scrape starts a reading, which runs on
    // beside the next scrapes: the worst case).
    const registryServing = (maxAgeMs: number, read = () => readSlivers(sources)) => createMetrics({
      version: 'bench', db: () => database, images: () => [], defaultRuntime: config.defaultRuntime, now: () => new Date(),
      slivers: { read, maxAgeMs, onError: (error) => console.error(error) },
    });
    const servedOnce = async (metrics: ReturnType<typeof createMetrics>) => {
      while (!(await metrics.text()).includes('nodemgr_sliver_processes{')) await new Promise((r) => setTimeout(r, 200));
      return metrics;
    };
    const kept = await servedOnce(registryServing(Infinity));
    const served = await scrapeRuns(() => kept.text(), scrapes);
    const always = await servedOnce(registryServing(0));
    const starting = await scrapeRuns(() => always.text(), scrapes);
    // Every scrape serving a new reading (one made at once from the last real one): the series
    // filled anew each time, the reading's own cost left out.
    const snapshot = readings.at(-1)!.value;
    const renewed = await servedOnce(registryServing(0, async () => snapshot.map((r) => ({ ...r }))));
    const anew = await scrapeRuns(() => renewed.text(), scrapes);
    const text = served.text;
    const e = parseExposition(text);
    const sliverSeries = e.samples.filter((s) => 'sliver' in s.labels).length;
    const bare = await scrapeRuns(() => bareRegistry(text).metrics(), 1).then(() => {
      const registry = bareRegistry(text);
      return scrapeRuns(() => registry.metrics(), scrapes);
    });

    const names = Object.keys(database.accounts).filter((n) => database.accounts[n]!.kind === 'sliver');
    const oneByOne = await timed(() => mapBounded(names, 1, (n) => cgroups.read(n)));
    const eight = await timed(() => mapBounded(names, 8, (n) => cgroups.read(n)));
    const classes = await timed(() => shaper.inspect());

    const figures = (r: Runs) => `p50 ${ms(quantile(r.ms, 0.5))} (CPU ${ms(quantile(r.cpuMs, 0.5))})  p99 ${ms(quantile(r.ms, 0.99))} (CPU ${ms(quantile(r.cpuMs, 0.99))})`;
    console.log(`metrics scrape, ${slivers} slivers with real cgroups (v${cgroups.version}) and HTB classes; ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), load ${loadavg().map((l) => l.toFixed(1)).join(' ')}; ${scrapes} scrapes each`);
    console.log(`  limits applied first:               ${ms(applied.ms)}`);
    console.log(`  scrape, from a reading under 1 s:   ${figures(served)}  ${(Buffer.byteLength(text) / 1024).toFixed(0)} KiB, ${e.samples.length} samples (${sliverSeries} per sliver)`);
    console.log(`  bare prom-client, same series:      ${figures(bare)}  ${(Buffer.byteLength(bare.text) / 1024).toFixed(0)} KiB`);
    console.log(`  scrape serving a new reading each time: ${figures(anew)}`);
    console.log(`  scrape starting a reading each time: ${figures(starting)}  (a reading under way beside most)`);
    console.log(`  the reading (not waited for):       ${readings.map((r) => `${ms(r.ms)} (CPU ${ms(r.cpuMs)})`).join(', ')}`);
    console.log(`    of which cgroup reads: one after the other ${ms(oneByOne.ms)}, 8 in flight ${ms(eight.ms)}; traffic classes and classifier: ${ms(classes.ms)}`);
  } finally {
    await host.remove();
    await rm(node.dir, { recursive: true, force: true });
  }
}

await main();
