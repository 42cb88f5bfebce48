import test from 'ava';
import { request } from 'node:http';
import { connect } from 'node:net';
import { ApiFault, FaultCode } from '../../src/api/faults.js';
import { ConfigError, parseConfig } from '../../src/config/config.js';
import { emptyDatabase, type AccountStatus, type ClusterRecord, type NodeDatabase, type TaskRecord } from '../../src/db/types.js';
import { createLogger } from '../../src/log.js';
import { countedSyncStatus, measuredCall, timedConverger } from '../../src/metrics/instrument.js';
import { createMetrics } from '../../src/metrics/registry.js';
import { startMetricsServer } from '../../src/metrics/server.js';
import type { Converger } from '../../src/sync/converge.js';
import type { SyncStatusFile } from '../../src/sync/sync-status.js';
import { parseExposition, valueOf } from '../support/exposition.js';
import { delegateRecord, recordsOf, sliverRecord } from './support/records.js';

const NOW = new Date('2026-01-01T00:00:00Z');
const DOCUMENT = NOW.getTime() / 1000 - 90;

function account(name: string, kind: AccountStatus['kind'], state: AccountStatus['state']): AccountStatus {
  return { name, kind, state, reason: null, since: NOW.toISOString(), appliedHash: null, uid: 70_000, attempts: 0 };
}

function sampleDatabase(): NodeDatabase {
  const { records } = recordsOf([
    sliverRecord('pl_unix1'), sliverRecord('pl_unix2'),
    sliverRecord('pl_box', { guest: { runtime: 'lxc', kernel: null, initrd: null, size: null } }),
    delegateRecord('pl_deleg'),
  ], DOCUMENT);
  const accounts = Object.fromEntries([
    account('pl_unix1', 'sliver', 'running'), account('pl_unix2', 'sliver', 'running'),
    account('pl_box', 'sliver', 'failed'), account('pl_deleg', 'delegate', 'running'),
  ].map((a) => [a.name, a]));
  const task = (id: string, kind: TaskRecord['kind'], state: TaskRecord['state'], runtime: TaskRecord['runtime']) =>
    ({ task_id: id, kind, state, runtime }) as unknown as TaskRecord;
  const cluster = (name: string, state: ClusterRecord['state'], nodes: number) =>
    ({ name, state, nodes: Array.from({ length: nodes }, (_, i) => ({ name: `compute-${i}` })) }) as unknown as ClusterRecord;
  return {
    ...emptyDatabase(), records, accounts,
    tasks: {
      a: task('a', 'task', 'Running:Executing', 'qemu'), b: task('b', 'task', 'Running:Executing', 'lxc'), c: task('c', 'instance', 'Finished', 'qemu'),
    },
    clusters: { x: cluster('x', 'running', 3), y: cluster('y', 'booting', 2) },
  };
}

function metricsOf(db: NodeDatabase) {
  return createMetrics({ version: '9.8.7', db: () => db, images: () => [{ bytes: 1000 }, { bytes: 24 }], defaultRuntime: 'unix', now: () => NOW });
}

test('the registry exposes the database at scrape time, in the exposition format', async (t) => {
  const db = sampleDatabase();
  const e = parseExposition(await metricsOf(db).text());
  t.is(e.types.get('nodemgr_accounts'), 'gauge');
  t.is(valueOf(e, 'nodemgr_build_info', { version: '9.8.7' }), 1);
  t.is(valueOf(e, 'nodemgr_accounts', { kind: 'sliver', runtime: 'unix', state: 'running' }), 2);
  t.is(valueOf(e, 'nodemgr_accounts', { kind: 'sliver', runtime: 'lxc', state: 'failed' }), 1);
  t.is(valueOf(e, 'nodemgr_accounts', { kind: 'delegate', runtime: 'unix', state: 'running' }), 1);
  t.is(e.samples.filter((s) => s.name === 'nodemgr_accounts').length, 3);
  t.is(valueOf(e, 'nodemgr_tasks', { kind: 'task', state: 'Running:Executing' }), 2);
  t.is(valueOf(e, 'nodemgr_tasks', { kind: 'instance', state: 'Finished' }), 1);
  t.is(valueOf(e, 'nodemgr_clusters', { state: 'running' }), 1);
  t.is(valueOf(e, 'nodemgr_clusters', { state: 'booting' }), 1);
  // Guests, whoever owns them: a libvirt sliver, tasks and instances by runtime, each node of a cluster.
  t.is(valueOf(e, 'nodemgr_guests', { owner: 'sliver', runtime: 'lxc', state: 'failed' }), 1);
  t.is(valueOf(e, 'nodemgr_guests', { owner: 'task', runtime: 'qemu', state: 'Running:Executing' }), 1);
  t.is(valueOf(e, 'nodemgr_guests', { owner: 'task', runtime: 'lxc', state: 'Running:Executing' }), 1);
  t.is(valueOf(e, 'nodemgr_guests', { owner: 'instance', runtime: 'qemu', state: 'Finished' }), 1);
  t.is(valueOf(e, 'nodemgr_guests', { owner: 'cluster', runtime: 'qemu', state: 'running' }), 3);
  t.is(valueOf(e, 'nodemgr_guests', { owner: 'cluster', runtime: 'qemu', state: 'booting' }), 2);
  t.false(e.samples.some((s) => s.name === 'nodemgr_guests' && s.labels['runtime'] === 'unix'));
  t.is(valueOf(e, 'nodemgr_document_timestamp_seconds'), DOCUMENT);
  t.is(valueOf(e, 'nodemgr_document_age_seconds'), 90);
  t.is(valueOf(e, 'nodemgr_image_cache_bytes'), 1024);
  t.is(valueOf(e, 'nodemgr_image_cache_entries'), 2);
});

test('a gauge read from the database follows it: an account gone is gone from the next scrape', async (t) => {
  let db = sampleDatabase();
  const metrics = createMetrics({ version: '1', db: () => db, images: () => [], defaultRuntime: 'qemu', now: () => NOW });
  db = { ...db, accounts: { pl_box: db.accounts['pl_box']! }, records: recordsOf([], null).records };
  const e = parseExposition(await metrics.text());
  // Without its record, the account's runtime is unix; without a document, a timestamp and an age of 0.
  t.deepEqual(e.samples.filter((s) => s.name === 'nodemgr_accounts'), [
    { name: 'nodemgr_accounts', labels: { kind: 'sliver', runtime: 'unix', state: 'failed' }, value: 1 },
  ]);
  t.is(valueOf(e, 'nodemgr_document_timestamp_seconds'), 0);
  t.is(valueOf(e, 'nodemgr_document_age_seconds'), 0);
});

test('events: syncs by outcome, operations and their failures, converge passes, API calls by method and fault', async (t) => {
  const metrics = metricsOf(emptyDatabase());
  const recorded: string[] = [];
  const file: SyncStatusFile = { current: null, record: (s) => recorded.push(s.outcome), flush: async () => undefined };
  const counted = countedSyncStatus(file, metrics);
  for (const outcome of ['applied', 'unchanged', 'unchanged', 'unreachable'] as const) {
    counted.record({ at: NOW.toISOString(), outcome, detail: '', source: 'x', documentTimestamp: null });
  }
  t.deepEqual(recorded, ['applied', 'unchanged', 'unchanged', 'unreachable']);
  metrics.operation('create', true, 0.2);
  metrics.operation('create', false, 3);
  metrics.operation('destroy', true, 0.01);
  const converger = timedConverger({ converge: async () => ({ ops: [] }) as never, desired: () => ({}) as never } as Converger, metrics);
  await converger.converge('test');
  await converger.converge('test');
  const call = measuredCall(async (_caller, method) => {
    if (method === 'GetRecord') throw new ApiFault(FaultCode.invalidArgument, 'no such record');
    return 1;
  }, ['Help', 'GetRecord'], metrics);
  const caller = { uid: 0, kind: 'root', name: 'root' } as never;
  await call(caller, 'Help', []);
  await t.throwsAsync(call(caller, 'GetRecord', []));
  await call(caller, 'NoSuchMethod_xyz', []);
  // The answer cache adds to the tally it was given; asked again, the metrics give the same one.
  metrics.cachedAnswers('Help').hits++;
  metrics.cachedAnswers('Help').hits++;

  const e = parseExposition(await metrics.text());
  t.is(e.types.get('nodemgr_syncs_total'), 'counter');
  t.is(valueOf(e, 'nodemgr_syncs_total', { outcome: 'unchanged' }), 2);
  t.is(valueOf(e, 'nodemgr_syncs_total', { outcome: 'applied' }), 1);
  t.is(valueOf(e, 'nodemgr_syncs_total', { outcome: 'unreachable' }), 1);
  t.is(valueOf(e, 'nodemgr_operations_total', { kind: 'create' }), 2);
  t.is(valueOf(e, 'nodemgr_operation_failures_total', { kind: 'create' }), 1);
  t.is(valueOf(e, 'nodemgr_operation_failures_total', { kind: 'destroy' }), undefined);
  t.is(e.types.get('nodemgr_operation_duration_seconds'), 'histogram');
  t.is(valueOf(e, 'nodemgr_operation_duration_seconds_count', { kind: 'create' }), 2);
  t.is(valueOf(e, 'nodemgr_operation_duration_seconds_sum', { kind: 'create' }), 3.2);
  t.is(valueOf(e, 'nodemgr_operation_duration_seconds_bucket', { kind: 'create', le: '1' }), 1);
  t.is(valueOf(e, 'nodemgr_operation_duration_seconds_bucket', { kind: 'create', le: '+Inf' }), 2);
  t.is(valueOf(e, 'nodemgr_converge_duration_seconds_count'), 2);
  t.is(valueOf(e, 'nodemgr_api_calls_total', { method: 'Help', fault: 'none' }), 3, 'one call that ran and two answers from the cache');
  t.is(valueOf(e, 'nodemgr_api_calls_total', { method: 'GetRecord', fault: 'invalidArgument' }), 1);
  // A method the API lacks is not a label value of the caller's choosing.
  t.is(valueOf(e, 'nodemgr_api_calls_total', { method: 'unknown', fault: 'none' }), 1);
  t.false(e.samples.some((s) => s.labels['method'] === 'NoSuchMethod_xyz'));
  t.is(valueOf(e, 'nodemgr_api_call_duration_seconds_count', { method: 'Help' }), 1);
  // A tally is taken in once: the next scrape counts only the answers given since.
  metrics.cachedAnswers('Help').hits++;
  const again = parseExposition(await metrics.text());
  t.is(valueOf(again, 'nodemgr_api_calls_total', { method: 'Help', fault: 'none' }), 4);
});

function get(port: number, path: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    }).on('error', reject).end();
  });
}

test('the endpoint answers GET /metrics with the exposition, anything else with 404', async (t) => {
  const server = await startMetricsServer(metricsOf(sampleDatabase()), '127.0.0.1', 0, createLogger({ level: 'error' }));
  t.teardown(() => server.close());
  const ok = await get(server.port, '/metrics');
  t.is(ok.status, 200);
  t.regex(ok.type, /^text\/plain; version=0\.0\.4/);
  t.is(valueOf(parseExposition(ok.body), 'nodemgr_accounts', { kind: 'delegate', runtime: 'unix', state: 'running' }), 1);
  t.is((await get(server.port, '/')).status, 404);
  t.is((await get(server.port, '/metrics/x')).status, 404);
  t.is((await get(server.port, '/metrics', 'POST')).status, 404);
});

test('the endpoint cuts a connection on which nothing moves', async (t) => {
  // (A scraper that stops reading a large exposition is cut the same way as the API's peers:
  // util/idle-cut.ts, tested through the API in api-server-idle.test.ts.)
  const IDLE_MS = 300;
  const server = await startMetricsServer(metricsOf(sampleDatabase()), '127.0.0.1', 0, createLogger({ level: 'error' }), IDLE_MS);
  t.teardown(() => server.close());
  const socket = connect(server.port, '127.0.0.1');
  socket.on('error', () => undefined);
  const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now())));
  await new Promise((resolve) => socket.once('connect', resolve));
  const opened = Date.now();
  // Well before node:http's own limit for a request that does not come (30 s).
  const cut = await Promise.race([closed, new Promise<null>((resolve) => setTimeout(() => resolve(null), 4000))]);
  socket.destroy();
  t.not(cut, null, 'a connection that sends nothing is cut');
  t.true(cut! - opened >= IDLE_MS - 5, `not before its idle time (${cut! - opened} ms)`);
});

const FILE = 'etc/nodemgr.conf';

function errorOf(text: string): string {
  try {
    parseConfig(text, FILE);
  } catch (error) {
    if (error instanceof ConfigError) return error.message;
    throw error;
  }
  throw new Error('no error');
}

test('the metrics keys: an address and a port, 0 for none, never another listener\'s', (t) => {
  const config = parseConfig('metrics_address = 0.0.0.0\nmetrics_port = 9100', FILE);
  t.is(config.metricsAddress, '0.0.0.0');
  t.is(config.metricsPort, 9100);
  t.is(parseConfig('metrics_port = 0', FILE).metricsPort, 0);
  t.is(
    errorOf('metrics_port = 812'),
    'etc/nodemgr.conf line 1: metrics_port: metrics_port must differ from api_port, got metrics_port = 812 (line 1) and api_port = 812 (default)',
  );
  t.regex(errorOf('metrics_port = 2222'), /metrics_port must differ from ssh_port/);
  // The API's TCP listener is on loopback only: elsewhere its port is free.
  t.is(parseConfig('metrics_port = 812\nmetrics_address = 192.0.2.1', FILE).metricsPort, 812);
  t.regex(errorOf('metrics_port = 70000'), /metrics_port: expected a whole number from 0 to 65535/);
  t.regex(errorOf('metrics_address = localhost'), /metrics_address: expected an IPv4 or IPv6 address/);
});
