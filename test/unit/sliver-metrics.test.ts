// The per-sliver metrics without a host: a sliver's reading from the limits in force and the byte
// counts, the series it makes in base units, the readings a scrape serves (fresh when quick, the
// newest complete one otherwise), and which slivers are read.
import test from 'ava';
import type { SliverByteCaps } from '../../src/limits/bwmon.js';
import type { LimitsInForce } from '../../src/limits/in-force.js';
import { emptyDatabase, type AccountStatus, type NodeDatabase } from '../../src/db/types.js';
import { createReadingCache, waitsForReading } from '../../src/metrics/reading-cache.js';
import { createMetrics } from '../../src/metrics/registry.js';
import { guestSliverReading, unixSliverReading, type SliverReading } from '../../src/metrics/sliver-series.js';
import { readSlivers, slivers } from '../../src/metrics/sliver-source.js';
import { mapBounded } from '../../src/util/bounded.js';
import { parseExposition, valueOf } from '../support/exposition.js';
import { recordsOf, sliverRecord } from './support/records.js';

// As readLimitsInForce puts them: KiB, kbit/s, percent of a CPU, seconds to 1/100.
const IN_FORCE: LimitsInForce = {
  cpu_shares: 32, cpu_cap: 150, mem_max: 1_048_576, mem_used: 2_500, proc_max: 512, processes: 3, oom_kills: 1,
  cpu_used_seconds: 12.34, net_min_rate: 100, net_max_rate: 10_000, net_i2_max_rate: 50_000, net_throttled: true,
  net_i2_throttled: false, net_kbyte_used: 9, not_enforced: 'disk: not enforced: no disk limits on this host',
};
const CAPS: SliverByteCaps = {
  main: { periodStart: 1_700_000_000, usedBytes: 9_500, lastCounter: 123_456, notified: true },
  exempt: { periodStart: 1_700_000_000, usedBytes: 0, lastCounter: 77, notified: false },
};

test('a Unix sliver\'s reading: the limits in force and usage in base units, its byte counts from the enforcer', (t) => {
  const r = unixSliverReading('pl_a', IN_FORCE, CAPS);
  t.is(r.runtime, 'unix');
  t.is(r.cpuSeconds, 12.34);
  t.is(r.memoryBytes, 2_560_000);
  t.is(r.memoryMaxBytes, 1_073_741_824);
  t.is(r.cpuCapCpus, 1.5);
  t.is(r.cpuShares, 32);
  t.is(r.processes, 3);
  t.is(r.processesMax, 512);
  t.is(r.oomKills, 1);
  t.deepEqual(r.traffic.ordinary, {
    sentBytes: 123_456, periodSentBytes: 9_500, throttled: true, ceilingBytesPerSecond: 1_250_000, guaranteeBytesPerSecond: 12_500,
  });
  t.deepEqual(r.traffic.exempt, { sentBytes: 77, periodSentBytes: 0, throttled: false, ceilingBytesPerSecond: 6_250_000, guaranteeBytesPerSecond: null });
});

test('a sliver without a cgroup or a traffic class has no values, not zeros', (t) => {
  const r = unixSliverReading('pl_new', { not_enforced: 'cpu, memory, processes: not enforced: the sliver has no cgroup (yet)' }, undefined);
  t.deepEqual([r.cpuSeconds, r.memoryBytes, r.processes, r.cpuShares, r.cpuCapCpus, r.memoryMaxBytes, r.processesMax], [null, null, null, null, null, null, null]);
  t.deepEqual(r.traffic, {});
});

test('a libvirt sliver\'s reading: its domain\'s vCPUs, memory and shares, and no usage', (t) => {
  const r = guestSliverReading('pl_vm', {
    runtime: 'qemu', state: 'running', vcpus: 2, memory_kib: 524_288, cpu_shares: 2048, vnc_port: null, console: null,
    addresses: '', overlay: null, bandwidth: 'none asked',
  });
  t.like(r, { runtime: 'qemu', vcpus: 2, memoryMaxBytes: 536_870_912, cpuShares: 2048, cpuSeconds: null, memoryBytes: null });
});

function metricsServing(read: () => Promise<readonly SliverReading[]>, options: { maxAgeMs?: number; waitMs?: number } = {}) {
  let clock = 1_000_000;
  const errors: unknown[] = [];
  const metrics = createMetrics({
    version: '1', db: () => emptyDatabase(), images: () => [], defaultRuntime: 'unix', now: () => new Date(clock),
    slivers: { read, onError: (e) => errors.push(e), ...options },
  });
  return { metrics, errors, advance: (ms: number) => (clock += ms), scrape: async () => parseExposition(await metrics.text()) };
}

test('a scrape shows each sliver\'s series, labelled sliver, runtime and traffic, counters as counters', async (t) => {
  const vm = guestSliverReading('pl_vm', {
    runtime: 'lxc', state: 'running', vcpus: 1, memory_kib: 1024, cpu_shares: 1024, vnc_port: null, console: null, addresses: '', overlay: null, bandwidth: '',
  });
  const { scrape } = metricsServing(async () => [unixSliverReading('pl_a', IN_FORCE, CAPS), vm], { waitMs: 1_000 });
  const e = await scrape();
  const a = { sliver: 'pl_a', runtime: 'unix' };
  t.is(e.types.get('nodemgr_sliver_cpu_seconds_total'), 'counter');
  t.is(e.types.get('nodemgr_sliver_sent_bytes_total'), 'counter');
  t.is(e.types.get('nodemgr_sliver_memory_bytes'), 'gauge');
  t.is(valueOf(e, 'nodemgr_sliver_cpu_seconds_total', a), 12.34);
  t.is(valueOf(e, 'nodemgr_sliver_memory_bytes', a), 2_560_000);
  t.is(valueOf(e, 'nodemgr_sliver_processes', a), 3);
  t.is(valueOf(e, 'nodemgr_sliver_sent_bytes_total', { ...a, traffic: 'ordinary' }), 123_456);
  t.is(valueOf(e, 'nodemgr_sliver_throttled', { ...a, traffic: 'ordinary' }), 1);
  t.is(valueOf(e, 'nodemgr_sliver_throttled', { ...a, traffic: 'exempt' }), 0);
  t.is(valueOf(e, 'nodemgr_sliver_rate_ceiling_bytes_per_second', { ...a, traffic: 'exempt' }), 6_250_000);
  t.is(valueOf(e, 'nodemgr_sliver_cpu_cap_cpus', a), 1.5);
  t.is(valueOf(e, 'nodemgr_sliver_vcpus', { sliver: 'pl_vm', runtime: 'lxc' }), 1);
  t.is(valueOf(e, 'nodemgr_sliver_memory_max_bytes', { sliver: 'pl_vm', runtime: 'lxc' }), 1_048_576);
  // What a guest's status does not carry is absent, not zero.
  t.is(valueOf(e, 'nodemgr_sliver_cpu_seconds_total', { sliver: 'pl_vm' }), undefined);
  t.is(valueOf(e, 'nodemgr_sliver_readings_age_seconds'), 0);
});

test('the readings follow the slivers: one gone from a reading is gone from the scrape that serves it', async (t) => {
  let names = ['pl_a', 'pl_b'];
  const { scrape, advance } = metricsServing(async () => names.map((n) => unixSliverReading(n, IN_FORCE, undefined)), { waitMs: 1_000 });
  t.is((await scrape()).samples.filter((s) => s.name === 'nodemgr_sliver_processes').length, 2);
  names = ['pl_b'];
  // Within the second, the same reading is served again; after it, a new one.
  t.is((await scrape()).samples.filter((s) => s.name === 'nodemgr_sliver_processes').length, 2);
  advance(1_000);
  const e = await scrape();
  t.deepEqual(e.samples.filter((s) => s.name === 'nodemgr_sliver_processes').map((s) => s.labels['sliver']), ['pl_b']);
  t.is(valueOf(e, 'nodemgr_sliver_readings_age_seconds'), 0);
});

test('a scrape waits for a reading only while readings fit its budget', (t) => {
  t.true(waitsForReading(null, 20));
  t.true(waitsForReading({ tookMs: 20 }, 20));
  t.false(waitsForReading({ tookMs: 21 }, 20));
});

test('a slow reading: the scrape serves the newest complete one at once, and readings never overlap', async (t) => {
  const HOUR = 3_600_000;
  let clock = 0;
  let started = 0;
  let finish: (value: number) => void = () => undefined;
  // A scrape's budget of an hour: were it waited out, the test would time out.
  const cache = createReadingCache<number>({
    read: () => {
      started++;
      return new Promise<number>((resolve) => (finish = (v) => {
        clock += 2 * HOUR; // the reading took longer than the budget
        resolve(v);
      }));
    },
    maxAgeMs: 1_000, waitMs: HOUR, onError: () => undefined, nowMs: () => clock,
  });
  // The first scrape waits for the first reading.
  const first = cache.fresh();
  finish(1);
  t.like(await first, { value: 1, tookMs: 2 * HOUR });
  // The last reading took longer than the budget: served at once, with a new reading under way.
  t.like(await cache.fresh(), { value: 1 });
  t.like(await cache.fresh(), { value: 1 });
  t.is(started, 2);
  finish(2);
  await new Promise((r) => setImmediate(r));
  t.like(cache.latest(), { value: 2 });
});

test('a reading that fails is reported, and the one before it is served', async (t) => {
  let clock = 0;
  let fail = false;
  const errors: unknown[] = [];
  const cache = createReadingCache<string>({
    read: async () => {
      if (fail) throw new Error('cgroups unreadable');
      return 'ok';
    },
    maxAgeMs: 1_000, waitMs: 50, onError: (e) => errors.push(e), nowMs: () => clock,
  });
  t.like(await cache.fresh(), { value: 'ok' });
  fail = true;
  clock += 1_000;
  t.like(await cache.fresh(), { value: 'ok' });
  t.is(errors.length, 1);
});

function account(name: string, kind: AccountStatus['kind'], state: AccountStatus['state'], uid: number | null): AccountStatus {
  return { name, kind, state, reason: null, since: '', appliedHash: null, uid, attempts: 0 };
}

function nodeDatabase(): NodeDatabase {
  const { records } = recordsOf([
    sliverRecord('pl_unix'), sliverRecord('pl_nouid'), sliverRecord('pl_gone'),
    sliverRecord('pl_vm', { guest: { runtime: 'qemu', kernel: null, initrd: null, size: null } }),
  ], 1);
  return {
    ...emptyDatabase(), records,
    accounts: Object.fromEntries([
      account('pl_unix', 'sliver', 'running', 70_001), account('pl_nouid', 'sliver', 'creating', null),
      account('pl_gone', 'sliver', 'absent', 70_003), account('pl_vm', 'sliver', 'running', null), account('del', 'delegate', 'running', 70_004),
    ].map((a) => [a.name, a])),
  };
}

test('the slivers read: Unix ones with a uid, guests by their runtime; no delegate, none absent', (t) => {
  t.deepEqual(slivers(nodeDatabase(), 'unix'), { unix: [{ name: 'pl_unix', uid: 70_001 }], guests: ['pl_vm'] });
});

test('a reading of the node: limits in force asked for the Unix slivers at once, each guest\'s status', async (t) => {
  const asked: string[][] = [];
  const readings = await readSlivers({
    db: nodeDatabase, defaultRuntime: 'unix',
    limitsInForce: async (s) => {
      asked.push(s.map((x) => x.name));
      return new Map(s.map((x) => [x.name, IN_FORCE]));
    },
    byteCaps: () => ({ pl_unix: CAPS }),
    guestStatus: async (name) => (name === 'pl_vm' ? {
      runtime: 'qemu', state: 'running', vcpus: 4, memory_kib: 1024, cpu_shares: null, vnc_port: null, console: null, addresses: '', overlay: null, bandwidth: '',
    } : null),
  });
  t.deepEqual(asked, [['pl_unix']]);
  t.deepEqual(readings.map((r) => [r.name, r.runtime]), [['pl_unix', 'unix'], ['pl_vm', 'qemu']]);
  t.is(readings[0]!.traffic.ordinary?.sentBytes, 123_456);
  t.is(readings[1]!.vcpus, 4);
});

test('bounded reads: every result in order, never more than the limit in flight', async (t) => {
  let inFlight = 0;
  let most = 0;
  const results = await mapBounded([5, 1, 4, 2, 3, 0, 6], 3, async (n) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, n));
    inFlight--;
    return n * 10;
  });
  t.deepEqual(results, [50, 10, 40, 20, 30, 0, 60]);
  t.is(most, 3);
  await t.throwsAsync(mapBounded([1], 0, async () => 1), { message: /positive integer, got 0/ });
});
