// The metrics endpoint of the real daemon, as root: a document served on loopback becomes
// accounts, and a scrape of /metrics counts them; a sliver with a process in its cgroup shows its
// usage and the limits `nodemgr status` reads back, and ssh logins are counted; a real Prometheus
// (Debian's package) scrapes the daemon and answers queries for them, and promtool finds the
// scrape well-formed.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseExposition, valueOf, type Exposition } from '../support/exposition.js';
import {
  accountPrefix, freePort, isRoot, leaseTestUids, nodemgr, removeAccounts, run, sandbox, serveDocument,
  startDaemonProcess, stopDaemonProcess, waitFor, type DaemonProcess, type UidLease,
} from './support/host.js';
import { publicKeys, slicesXml } from './support/slices.js';

const prefix = accountPrefix();
let uids: UidLease | null = null;
const cleanups: Array<() => Promise<unknown>> = [];
const which = async (command: string) => (await run('sh', ['-c', `command -v ${command} || true`])).stdout.trim();
const prometheus = await which('prometheus');
const promtool = await which('promtool');

if (!isRoot) test.skip('the metrics endpoint of the real daemon: needs root (real accounts and a real daemon)', () => undefined);
const serial = isRoot ? test.serial : test.skip;

test.before(async () => {
  if (!isRoot) return;
  uids = await leaseTestUids(20, 'test/system/metrics.test.ts');
});

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (isRoot) await removeAccounts(prefix);
  await uids?.release();
});

const name = (suffix: string) => `${prefix}_${suffix}`;

async function scrape(port: number): Promise<{ text: string; exposition: Exposition }> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (response.status !== 200) throw new Error(`GET /metrics: ${response.status}`);
  const text = await response.text();
  return { text, exposition: parseExposition(text) };
}

/** A daemon of two slivers and a delegate, with its metrics on a free port; resolves once all three run. */
async function runningDaemon(t: ExecutionContext): Promise<{ daemon: DaemonProcess; port: number; config: string }> {
  const keys = await publicKeys(2);
  const server = await serveDocument(slicesXml(1000, [
    { name: name('one'), users: { 1: keys[0]! } },
    { name: name('two'), users: { 2: keys[1]! } },
  ], [{ name: name('ctl'), keys: [keys[0]!] }]));
  const port = await freePort();
  const box = await sandbox({ authority_url: server.url, metrics_port: port }, { uids: uids! });
  cleanups.push(() => server.close(), () => box.cleanup());
  const daemon = startDaemonProcess(box.config);
  cleanups.push(() => stopDaemonProcess(daemon, 'SIGKILL'));
  await waitFor(`three accounts running in the metrics\n${daemon.output().slice(-2000)}`, async () => {
    const { exposition } = await scrape(port).catch(() => ({ exposition: null }));
    if (!exposition) return null;
    const slivers = valueOf(exposition, 'nodemgr_accounts', { kind: 'sliver', runtime: 'unix', state: 'running' });
    const delegates = valueOf(exposition, 'nodemgr_accounts', { kind: 'delegate', runtime: 'unix', state: 'running' });
    return slivers === 2 && delegates === 1 ? exposition : null;
  });
  t.log(`daemon metrics on 127.0.0.1:${port}`);
  return { daemon, port, config: box.config };
}

serial('a scrape of the real daemon counts the accounts it made, its sync, its operations and its API calls', async (t) => {
  const { daemon, port, config } = await runningDaemon(t);
  const help = await nodemgr(['call', 'Help', '--config', config]);
  t.is(help.code, 0, help.stderr);
  t.not((await nodemgr(['call', 'GetRecord', '--config', config])).code, 0);
  const { exposition: e } = await scrape(port);
  t.is(valueOf(e, 'nodemgr_api_calls_total', { method: 'Help', fault: 'none' }), 1);
  t.is(valueOf(e, 'nodemgr_api_calls_total', { method: 'GetRecord', fault: 'argumentCount' }), 1);
  t.is(valueOf(e, 'nodemgr_api_call_duration_seconds_count', { method: 'Help' }), 1);
  t.is(valueOf(e, 'nodemgr_document_timestamp_seconds'), 1000);
  t.true((valueOf(e, 'nodemgr_syncs_total', { outcome: 'applied' }) ?? 0) >= 1);
  t.true((valueOf(e, 'nodemgr_sync_duration_seconds_count') ?? 0) >= 1);
  t.true((valueOf(e, 'nodemgr_converge_duration_seconds_count') ?? 0) >= 1);
  t.is(valueOf(e, 'nodemgr_operations_total', { kind: 'create' }), 3);
  t.is(valueOf(e, 'nodemgr_operation_failures_total', { kind: 'create' }), undefined);
  t.is(valueOf(e, 'nodemgr_operation_duration_seconds_count', { kind: 'create' }), 3);
  t.is(e.samples.filter((s) => s.name === 'nodemgr_build_info').length, 1);
  // Anything but GET /metrics is 404.
  t.is((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
  t.is(await stopDaemonProcess(daemon), 0);
  // Stopped, the daemon no longer listens.
  await t.throwsAsync(fetch(`http://127.0.0.1:${port}/metrics`));
});

/** The OpenSSH client as `user` with the private key at `key`, running `command`. */
function ssh(port: number, user: string, key: string, command: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('ssh', [
      '-p', String(port), '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
      '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', `${user}@127.0.0.1`, command,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

serial('a real sliver\'s CPU, memory and processes, its limits as `nodemgr status --json` reads them, and ssh logins and a bad key', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-metrics-keys-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const key = async (label: string) => {
    const path = join(dir, `id_${label}`);
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${label}@test`, '-f', path]);
    return { path, line: (await readFile(`${path}.pub`, 'utf8')).trim() };
  };
  const [user, stranger] = [await key('user'), await key('stranger')];
  const busy = name('busy');
  const server = await serveDocument(slicesXml(1000, [
    { name: busy, users: { 1: user.line }, resources: { cpu_share: 3, cpu_cap: 50, mem_max: 262_144, proc_max: 64 } },
  ]));
  const [port, sshPort] = [await freePort(), await freePort()];
  const box = await sandbox({ authority_url: server.url, metrics_port: port, ssh_port: sshPort, ssh_address: '127.0.0.1' }, { uids: uids! });
  cleanups.push(() => server.close(), () => box.cleanup());
  const daemon = startDaemonProcess(box.config);
  cleanups.push(() => stopDaemonProcess(daemon, 'SIGKILL'));
  const sliver = { sliver: busy, runtime: 'unix' };
  await waitFor(`the sliver in the per-sliver metrics\n${daemon.output().slice(-2000)}`, async () => {
    const { exposition } = await scrape(port).catch(() => ({ exposition: null }));
    return exposition && valueOf(exposition, 'nodemgr_sliver_cpu_shares', sliver) !== undefined ? exposition : null;
  });
  const before = (await scrape(port)).exposition;
  t.is(valueOf(before, 'nodemgr_ssh_sessions_total', { kind: 'sliver' }), 0);
  t.is(valueOf(before, 'nodemgr_ssh_failed_logins_total', { reason: 'key_not_allowed' }), 0);

  // A login that leaves a process behind in the sliver's cgroup, after some work.
  const login = await ssh(sshPort, busy, user.path, 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; nohup sleep 600 >/dev/null 2>&1 &');
  t.is(login.code, 0, login.stderr);
  const refused = await ssh(sshPort, busy, stranger.path, 'true');
  t.is(refused.code, 255);

  const e = await waitFor(`the sliver's process and CPU time in the metrics\n${daemon.output().slice(-2000)}`, async () => {
    const { exposition } = await scrape(port);
    const processes = valueOf(exposition, 'nodemgr_sliver_processes', sliver) ?? 0;
    const cpu = valueOf(exposition, 'nodemgr_sliver_cpu_seconds_total', sliver) ?? 0;
    return processes >= 1 && cpu > 0 ? exposition : null;
  });
  t.true((valueOf(e, 'nodemgr_sliver_memory_bytes', sliver) ?? 0) > 0);
  t.is(valueOf(e, 'nodemgr_ssh_sessions_total', { kind: 'sliver' }), 1);
  t.is(valueOf(e, 'nodemgr_ssh_sessions_open', { kind: 'sliver' }), 0);
  t.is(valueOf(e, 'nodemgr_ssh_failed_logins_total', { reason: 'key_not_allowed' }), 1);

  // The limits in force are those the status reads back from the kernel, in base units.
  const status = await nodemgr(['status', '--json', '--config', box.config]);
  t.is(status.code, 0, status.stderr);
  const inForce = (JSON.parse(status.stdout) as { limitsInForce: Record<string, Record<string, unknown>> }).limitsInForce[busy]!;
  t.is(valueOf(e, 'nodemgr_sliver_cpu_shares', sliver), inForce['cpu_shares'] as number);
  t.is(valueOf(e, 'nodemgr_sliver_cpu_cap_cpus', sliver), (inForce['cpu_cap'] as number) / 100);
  t.is(valueOf(e, 'nodemgr_sliver_memory_max_bytes', sliver), (inForce['mem_max'] as number) * 1024);
  t.is(valueOf(e, 'nodemgr_sliver_processes_max', sliver), inForce['proc_max'] as number);
  t.is(inForce['proc_max'], 64);
  t.is(inForce['cpu_cap'], 50);
  t.true(Number(inForce['cpu_used_seconds']) >= (valueOf(e, 'nodemgr_sliver_cpu_seconds_total', sliver) ?? Infinity));
});

const withPrometheus = isRoot && prometheus !== '' && promtool !== '' ? test.serial : test.skip;
if (isRoot && (prometheus === '' || promtool === '')) {
  test.skip('a real Prometheus scrapes the daemon: Debian\'s prometheus package is not installed (test/host-setup.sh installs it)', () => undefined);
}

withPrometheus('a real Prometheus scrapes the daemon and answers for its accounts and its slivers\' CPU shares as status reads them; promtool finds the scrape well-formed', async (t) => {
  const { port, config } = await runningDaemon(t);
  // promtool checks the per-sliver families too, once the slivers' first reading is served.
  const text = await waitFor('the per-sliver series in a scrape', async () => {
    const { text } = await scrape(port);
    return text.includes('nodemgr_sliver_cpu_shares{') ? text : null;
  });
  const check = spawn(promtool, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let checkOutput = '';
  check.stdout.on('data', (d) => (checkOutput += d));
  check.stderr.on('data', (d) => (checkOutput += d));
  check.stdin.end(text);
  const code = await new Promise<number | null>((resolve) => check.on('exit', resolve));
  t.is(code, 0, checkOutput);

  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-prometheus-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'prometheus.yml'), [
    'global:', '  scrape_interval: 1s', '  evaluation_interval: 1s',
    'scrape_configs:', '  - job_name: nodemgr', '    static_configs:', `      - targets: ['127.0.0.1:${port}']`, '',
  ].join('\n'));
  const webPort = await freePort();
  const server = spawn(prometheus, [
    `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${webPort}`,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  server.stdout.on('data', (d) => (output += d));
  server.stderr.on('data', (d) => (output += d));
  const exited = new Promise((resolve) => server.on('exit', resolve));
  cleanups.push(async () => {
    server.kill('SIGTERM');
    await exited;
  });
  const ask = (promql: string, series: number) => waitFor(`Prometheus answering ${promql}\n${output.slice(-2000)}`, async () => {
    const response = await fetch(`http://127.0.0.1:${webPort}/api/v1/query?query=${encodeURIComponent(promql)}`).catch(() => null);
    if (!response || response.status !== 200) return null;
    const body = (await response.json()) as { status: string; data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
    return body.status === 'success' && body.data.result.length === series ? body.data.result : null;
  }, { timeoutMs: 60_000 });
  const result = await ask('sum by (kind) (nodemgr_accounts{job="nodemgr",state="running"})', 2);
  const byKind = Object.fromEntries(result.map((r) => [r.metric['kind'], Number(r.value[1])]));
  t.deepEqual(byKind, { sliver: 2, delegate: 1 });
  // Each sliver's CPU shares and memory limit in Prometheus are those `nodemgr status --json` reads back.
  const status = await nodemgr(['status', '--json', '--config', config]);
  t.is(status.code, 0, status.stderr);
  const inForce = (JSON.parse(status.stdout) as { limitsInForce: Record<string, Record<string, number>> }).limitsInForce;
  const shares = await ask('nodemgr_sliver_cpu_shares{job="nodemgr"}', 2);
  t.deepEqual(
    Object.fromEntries(shares.map((r) => [r.metric['sliver'], Number(r.value[1])])),
    Object.fromEntries([name('one'), name('two')].map((n) => [n, inForce[n]!['cpu_shares']])),
  );
});
