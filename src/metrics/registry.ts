// The daemon's Prometheus metrics: one registry of its own (never prom-client's global one), the
// events the daemon reports (syncs, converge passes, account operations, API calls), and gauges
// read from the node database and the image cache when a scrape asks for them.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { adoptedRecords, delegateRecords, documentTimestampInForce, sliverRecords } from '../db/records.js';
import type { NodeDatabase, SyncOutcome } from '../db/types.js';
import type { RuntimeKind } from '../slices/types.js';
import type { AnswerTally } from '../api/answer-cache.js';
import { LOGIN_REFUSALS, SESSION_KINDS, type GatewayObserver } from '../ssh/observer.js';
import { registerSliverMetrics, type SliverMetricsOptions } from './sliver-metrics.js';

/** What the gauges are read from at every scrape. */
export interface MetricsSources {
  readonly version: string;
  /** The node database as it is now. */
  db(): NodeDatabase;
  /** The image cache's entries' sizes. */
  images(): ReadonlyArray<{ readonly bytes: number }>;
  readonly defaultRuntime: RuntimeKind;
  now(): Date;
  /** The per-sliver readings (cgroups, traffic classes, guests); without them, no per-sliver metrics. */
  readonly slivers?: Omit<SliverMetricsOptions, 'nowMs'>;
}

export interface NodeMetrics {
  readonly registry: Registry;
  /** A sync attempt (fetch, push or the last good document) ended with `outcome`. */
  sync(outcome: SyncOutcome): void;
  /** A fetch of the authority document and its application took `seconds`. */
  syncDuration(seconds: number): void;
  /** A converge pass took `seconds`. */
  converge(seconds: number): void;
  /** An account operation (create, configure, start, stop, destroy) ended. */
  operation(kind: string, ok: boolean, seconds: number): void;
  /** An API call was answered; `fault` is the fault's name, or "none". */
  apiCall(method: string, fault: string, seconds: number): void;
  /**
   * Where the answer cache counts a method's answers: each counts as a call, not timed (it ran no
   * method). The same tally for a method every time, added to the calls when they are collected.
   */
  cachedAnswers(method: string): AnswerTally;
  /** The ssh gateway's sessions and failed logins. */
  readonly ssh: GatewayObserver;
  /** The exposition text of every metric. */
  text(): Promise<string>;
  readonly contentType: string;
}

/** Durations from a few milliseconds (an API read) to many minutes (a guest's first boot). */
const DURATION_BUCKETS = [0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900];

/** The runtime of each account the database has a status of (the records say it; unix otherwise). */
export function runtimesOf(db: NodeDatabase, defaultRuntime: RuntimeKind): Map<string, RuntimeKind> {
  const runtimes = new Map<string, RuntimeKind>();
  for (const d of delegateRecords(db)) runtimes.set(d.name, 'unix');
  for (const a of adoptedRecords(db)) runtimes.set(a.name, a.runtime);
  for (const s of sliverRecords(db)) runtimes.set(s.name, s.guest.runtime ?? defaultRuntime);
  return runtimes;
}

/** Cluster nodes are QEMU guests (clusters/boot.ts). */
const CLUSTER_RUNTIME: RuntimeKind = 'qemu';

/** Every guest the database has a record of, with its owner's kind and state. Pure. */
export function guestsOf(db: NodeDatabase, defaultRuntime: RuntimeKind): Array<{ owner: string; runtime: string; state: string }> {
  const runtimes = runtimesOf(db, defaultRuntime);
  const guests: Array<{ owner: string; runtime: string; state: string }> = [];
  for (const a of Object.values(db.accounts)) {
    const runtime = runtimes.get(a.name) ?? 'unix';
    if (a.kind === 'sliver' && runtime !== 'unix') guests.push({ owner: 'sliver', runtime, state: a.state });
  }
  for (const t of Object.values(db.tasks)) guests.push({ owner: t.kind, runtime: t.runtime, state: t.state });
  for (const c of Object.values(db.clusters)) {
    for (const _node of c.nodes) guests.push({ owner: 'cluster', runtime: CLUSTER_RUNTIME, state: c.state });
  }
  return guests;
}

/** Counts of items by a key made of label values. */
function tally<T>(items: Iterable<T>, labels: (item: T) => Record<string, string>): Array<[Record<string, string>, number]> {
  const counts = new Map<string, [Record<string, string>, number]>();
  for (const item of items) {
    const l = labels(item);
    const key = JSON.stringify(l);
    const found = counts.get(key);
    if (found) found[1]++;
    else counts.set(key, [l, 1]);
  }
  return [...counts.values()];
}

function databaseGauges(registry: Registry, sources: MetricsSources): void {
  const gauge = (name: string, help: string, labelNames: string[], fill: (set: (labels: Record<string, string>, v: number) => void) => void) =>
    new Gauge({
      name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        fill((labels, v) => this.set(labels, v));
      },
    });
  gauge('nodemgr_accounts', 'Accounts the node database has a status of, by kind, runtime and state.', ['kind', 'runtime', 'state'], (set) => {
    const db = sources.db();
    const runtimes = runtimesOf(db, sources.defaultRuntime);
    for (const [l, n] of tally(Object.values(db.accounts), (a) => ({ kind: a.kind, runtime: runtimes.get(a.name) ?? 'unix', state: a.state }))) set(l, n);
  });
  gauge('nodemgr_tasks', 'On-demand tasks and instances in the node database, by kind and state.', ['kind', 'state'], (set) => {
    for (const [l, n] of tally(Object.values(sources.db().tasks), (t) => ({ kind: t.kind, state: t.state }))) set(l, n);
  });
  gauge('nodemgr_clusters', 'Virtual clusters in the node database, by state.', ['state'], (set) => {
    for (const [l, n] of tally(Object.values(sources.db().clusters), (c) => ({ state: c.state }))) set(l, n);
  });
  gauge('nodemgr_document_timestamp_seconds', 'Timestamp of the authority document in force; 0 while none is.', [], (set) => {
    const ts = documentTimestampInForce(sources.db());
    set({}, ts ?? 0);
  });
  gauge('nodemgr_document_age_seconds', 'Seconds since the timestamp of the authority document in force; 0 while none is.', [], (set) => {
    const ts = documentTimestampInForce(sources.db());
    set({}, ts === null ? 0 : Math.max(0, sources.now().getTime() / 1000 - ts));
  });
  gauge('nodemgr_guests', 'libvirt guests in the node database, by owner (sliver, task, instance, cluster), runtime and their owner\'s state.', ['owner', 'runtime', 'state'], (set) => {
    for (const [l, n] of tally(guestsOf(sources.db(), sources.defaultRuntime), (g) => g)) set(l, n);
  });
  gauge('nodemgr_image_cache_bytes', 'Bytes the image cache holds.', [], (set) => set({}, sources.images().reduce((sum, e) => sum + e.bytes, 0)));
  gauge('nodemgr_image_cache_entries', 'Entries of the image cache.', [], (set) => set({}, sources.images().length));
}

function sshMetrics(registry: Registry): GatewayObserver {
  const registers = [registry];
  const open = new Gauge({ name: 'nodemgr_ssh_sessions_open', help: 'ssh sessions open now, by kind (delegate, sliver, guest).', labelNames: ['kind'], registers });
  const opened = new Counter({ name: 'nodemgr_ssh_sessions_total', help: 'ssh sessions opened, by kind (delegate, sliver, guest).', labelNames: ['kind'], registers });
  const refused = new Counter({ name: 'nodemgr_ssh_sessions_refused_total', help: 'ssh sessions refused by the node\'s or an account\'s session limit.', registers });
  const failed = new Counter({ name: 'nodemgr_ssh_failed_logins_total', help: 'ssh login attempts refused, by reason.', labelNames: ['reason'], registers });
  // Every kind and reason from the start, so that a first event is an increase and not a new series.
  for (const kind of SESSION_KINDS) {
    open.set({ kind }, 0);
    opened.inc({ kind }, 0);
  }
  for (const reason of LOGIN_REFUSALS) failed.inc({ reason }, 0);
  return {
    sessionOpened(kind) {
      open.inc({ kind });
      opened.inc({ kind });
    },
    sessionClosed: (kind) => open.dec({ kind }),
    sessionRefused: () => refused.inc(),
    loginRefused: (reason) => failed.inc({ reason }),
  };
}

export function createMetrics(sources: MetricsSources): NodeMetrics {
  const registry = new Registry();
  const registers = [registry];
  new Gauge({ name: 'nodemgr_build_info', help: 'Always 1; the label says the version of nodemgr running.', labelNames: ['version'], registers })
    .set({ version: sources.version }, 1);
  const syncs = new Counter({ name: 'nodemgr_syncs_total', help: 'Sync attempts (fetches and pushes of the authority document), by outcome.', labelNames: ['outcome'], registers });
  const syncSeconds = new Histogram({ name: 'nodemgr_sync_duration_seconds', help: 'Seconds a fetch of the authority document and its application took.', buckets: DURATION_BUCKETS, registers });
  const convergeSeconds = new Histogram({ name: 'nodemgr_converge_duration_seconds', help: 'Seconds a converge pass (plan and hand-over to the supervisors) took.', buckets: DURATION_BUCKETS, registers });
  const ops = new Counter({ name: 'nodemgr_operations_total', help: 'Account operations run by the supervisors, by kind.', labelNames: ['kind'], registers });
  const opFailures = new Counter({ name: 'nodemgr_operation_failures_total', help: 'Account operations that failed, by kind.', labelNames: ['kind'], registers });
  const opSeconds = new Histogram({ name: 'nodemgr_operation_duration_seconds', help: 'Seconds an account operation took, by kind.', labelNames: ['kind'], buckets: DURATION_BUCKETS, registers });
  // Answers from the cache come tens of thousands a second: each is one addition to its method's
  // tally, handed to the counter when it is collected (a labelled increment costs as much as the
  // answer, and even a lookup by method name is a good part of it).
  const cachedSinceCollected = new Map<string, AnswerTally>();
  const calls = new Counter({
    name: 'nodemgr_api_calls_total', help: 'API calls answered, by method and fault ("none" for a result), answers from the cache included.',
    labelNames: ['method', 'fault'], registers,
    collect() {
      for (const [method, tally] of cachedSinceCollected) {
        if (tally.hits > 0) this.inc({ method, fault: 'none' }, tally.hits);
        tally.hits = 0;
      }
    },
  });
  const callSeconds = new Histogram({
    name: 'nodemgr_api_call_duration_seconds', help: 'Seconds an API call took to answer, by method (answers from the cache, which run no method, are not timed).',
    labelNames: ['method'], buckets: DURATION_BUCKETS, registers,
  });
  databaseGauges(registry, sources);
  const ssh = sshMetrics(registry);
  // The families are there without a source too (with no series), so that what is exported never depends on it.
  const slivers = registerSliverMetrics(registry, { read: async () => [], onError: () => undefined, ...sources.slivers, nowMs: () => sources.now().getTime() });
  return {
    ssh,
    registry,
    contentType: registry.contentType,
    sync: (outcome) => syncs.inc({ outcome }),
    syncDuration: (seconds) => syncSeconds.observe(seconds),
    converge: (seconds) => convergeSeconds.observe(seconds),
    operation(kind, ok, seconds) {
      ops.inc({ kind });
      if (!ok) opFailures.inc({ kind });
      opSeconds.observe({ kind }, seconds);
    },
    apiCall(method, fault, seconds) {
      calls.inc({ method, fault });
      callSeconds.observe({ method }, seconds);
    },
    cachedAnswers(method) {
      let tally = cachedSinceCollected.get(method);
      if (tally === undefined) cachedSinceCollected.set(method, (tally = { hits: 0 }));
      return tally;
    },
    async text() {
      await slivers.prepare();
      return registry.metrics();
    },
  };
}
