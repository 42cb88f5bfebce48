// libvirt slivers for real: the time from an authority document to a running qemu domain
// (software emulation), measured against the host's libvirtd (qemu:///system) with the real daemon,
// the test guest (Debian's kernel, a busybox initramfs that prints `nodemgr-ready` on ttyS0) and
// images fetched into the daemon's cache from file: URIs. Each run is one new sliver, then its
// removal; then several slivers from one document at once. Where the time goes is read from the
// daemon's log lines, libvirt's lifecycle events (`virsh event`), QEMU's log and the guest's
// console. Prints figures only; no thresholds. Needs root and libvirtd (test/libvirt-setup.sh);
// without them it says why and exits 0. Removes its domains and files, also after a failure.
//
//   node --import tsx bench/libvirt.ts [runs, default 3] [slivers at once, default 3]
import { execFile, spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { readDatabaseSnapshot } from '../src/db/store.js';
import { buildTestGuest, type TestGuest } from '../test/system/support/guest.js';
import {
  accountPrefix, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess, waitFor,
  type DaemonProcess, type DocumentServer, type Sandbox,
} from '../test/system/support/host.js';
import { fileUri, libvirtUnavailable, virshOn } from '../test/system/support/libvirt.js';
import { slicesXml, type TestSlice } from '../test/system/support/slices.js';
import { median } from './lib/median.js';

const run = promisify(execFile);
const URI = 'qemu:///system';
const here = dirname(fileURLToPath(import.meta.url));
const runs = Number(process.argv[2] ?? 3);
const together = Number(process.argv[3] ?? 3);
const QEMU_LOG_DIR = '/var/log/libvirt/qemu';

// ---- what the daemon, libvirt and the guest tell: lines with times -------------------------

interface LogLine { at: number; message: string; fields: Record<string, string> }

/** The daemon's lines: `<ISO time> <level> <message> key=value ...` (values JSON-quoted when needed). */
function daemonLines(output: string): LogLine[] {
  const lines: LogLine[] = [];
  for (const line of output.split('\n')) {
    const m = /^(\d{4}-\d\d-\d\dT[\d:.]+Z) \w+ (.*)$/.exec(line);
    if (!m) continue;
    const rest = m[2]!;
    const firstField = rest.search(/ [a-z_]+=/);
    const message = firstField < 0 ? rest : rest.slice(0, firstField);
    const fields: Record<string, string> = {};
    for (const f of (firstField < 0 ? '' : rest.slice(firstField)).matchAll(/ ([a-z_]+)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
      fields[f[1]!] = f[2]!.startsWith('"') ? (JSON.parse(f[2]!) as string) : f[2]!;
    }
    lines.push({ at: Date.parse(m[1]!), message, fields });
  }
  return lines;
}

/** libvirt's time format, `2024-01-02 03:04:05.678+0000`, as epoch milliseconds. */
const libvirtTime = (text: string) => Date.parse(text.replace(' ', 'T').replace(/([+-]\d\d)(\d\d)$/, '$1:$2'));

/** Lifecycle events of all domains, with libvirtd's times, for as long as the benchmark runs. */
function watchEvents() {
  const events: Array<{ at: number; domain: string; event: string }> = [];
  const child = spawn('virsh', ['-c', URI, 'event', '--event', 'lifecycle', '--loop', '--timestamp'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let buffered = '';
  child.stdout.on('data', (data: Buffer) => {
    buffered += data.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) {
      const m = /^(\S+ \S+): event 'lifecycle' for domain '([^']+)': (.*)$/.exec(line);
      if (m) events.push({ at: libvirtTime(m[1]!), domain: m[2]!, event: m[3]!.trim() });
    }
  });
  return {
    first: (domain: string, event: string, after: number) =>
      events.find((e) => e.domain === domain && e.event.startsWith(event) && e.at >= after)?.at ?? NaN,
    stop: () => child.kill(),
  };
}

/** When QEMU's process for this boot began (libvirt's "starting up" line in the domain's log). */
async function qemuLaunched(name: string, after: number): Promise<number> {
  const text = await readFile(join(QEMU_LOG_DIR, `${name}.log`), 'utf8').catch(() => '');
  const times = [...text.matchAll(/^(\S+ \S+): starting up /gm)].map((m) => libvirtTime(m[1]!)).filter((t) => t >= after - 1000);
  return times[0] ?? NaN;
}

interface ConsoleTimes {
  /**
   * Host times: when the guest kernel's clock read 0 (the earliest host time a line was seen less
   * its kernel time stamp: firmware, loading and decompressing the kernel come before it), when
   * it ran /init (its time stamp on "Run /init" after that), and when the ready line was seen.
   */
  kernelZero: number; init: number; marker: number;
}

/**
 * Watches a guest's console log (every 25 ms) and notes when lines appear, as the host sees them,
 * until stop() is called.
 */
function watchConsole(file: string) {
  const seen: Array<{ at: number; line: string }> = [];
  let text = '';
  let stopped = false;
  const poll = async () => {
    while (!stopped) {
      const now = Date.now();
      const content = await readFile(file, 'latin1').catch(() => '');
      if (content.length > text.length) {
        const lines = content.split('\n');
        const done = text.split('\n').length - 1;
        for (let i = done; i < lines.length - 1; i++) seen.push({ at: now, line: lines[i]! });
        text = content;
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  const polling = poll();
  return {
    async stop(): Promise<ConsoleTimes> {
      stopped = true;
      await polling;
      const stamp = (line: string) => Number(/^\[\s*(\d+\.\d+)\]/.exec(line)?.[1] ?? NaN) * 1000;
      const zeros = seen.map((l) => l.at - stamp(l.line)).filter(Number.isFinite);
      const kernelZero = zeros.length ? Math.min(...zeros) : NaN;
      const guestInit = stamp(seen.find((l) => /Run \/init as init process/.test(l.line))?.line ?? '');
      return { kernelZero, init: kernelZero + guestInit, marker: seen.find((l) => l.line.includes('nodemgr-ready'))?.at ?? NaN };
    },
  };
}

// ---- one daemon, fed documents ----------------------------------------------------------------

interface Bench {
  guest: TestGuest;
  server: DocumentServer;
  box: Sandbox;
  daemon: DaemonProcess;
  events: ReturnType<typeof watchEvents>;
  timestamp: number;
}

function vmSlice(guest: TestGuest, name: string): TestSlice {
  return { name, resources: { runtime: 'qemu', vref: fileUri(guest.disk), kernel: fileUri(guest.kernel), initrd: fileUri(guest.initrd) } };
}

/** Serves a document with these slivers and tells the daemon to sync now; returns when that was. */
function publish(b: Bench, names: string[]): number {
  b.server.set(slicesXml(++b.timestamp, names.map((n) => vmSlice(b.guest, n))));
  const at = Date.now();
  b.daemon.child.kill('SIGHUP');
  return at;
}

const stateOf = async (b: Bench, name: string) => (await readDatabaseSnapshot(join(b.box.stateDir, 'nodemgr.json'))).accounts[name];

const { domainState } = virshOn(URI);

interface Timeline {
  name: string;
  sent: number; applied: number; defined: number; startCalled: number;
  launched: number; started: number; ready: number; dbRunning: number;
  console: ConsoleTimes; ops: string[]; bootMs: number; images: string[];
}

/** Publishes a document with these new slivers, waits until all run, and reads each one's timeline. */
async function bootAll(b: Bench, names: string[]): Promise<Timeline[]> {
  const mark = b.daemon.output().length;
  const consoles = new Map(names.map((name) => [name, watchConsole(join(b.box.dir, 'guests', name, 'console.log'))]));
  const sent = publish(b, names);
  const dbRunning = new Map<string, number>();
  await waitFor(`${names.join(', ')} to run`, async () => {
    for (const name of names) {
      if (dbRunning.has(name)) continue;
      const s = await stateOf(b, name);
      if (s?.state === 'running') dbRunning.set(name, Date.now());
      else if (s?.state === 'failed') throw new Error(`${name} failed: ${s.reason}`);
    }
    return dbRunning.size === names.length;
  }, 600_000).finally(() => Promise.all([...consoles.values()].map((c) => c.stop())));
  await new Promise((r) => setTimeout(r, 300)); // the last log lines and events to arrive
  const lines = daemonLines(b.daemon.output().slice(mark));
  const line = (message: string, test: (f: Record<string, string>) => boolean = () => true) =>
    lines.find((l) => l.message === message && test(l.fields));
  const applied = line('document applied', (f) => Number(f.added) > 0)?.at ?? NaN;
  const timelines: Timeline[] = [];
  for (const name of names) {
    const ready = line('guest ready', (f) => f.sliver === name);
    const bootMs = Number(ready?.fields.boot_ms ?? NaN);
    const startCalled = (ready?.at ?? NaN) - bootMs;
    timelines.push({
      name, sent, applied, dbRunning: dbRunning.get(name)!, bootMs, startCalled,
      defined: b.events.first(name, 'Defined', sent),
      launched: await qemuLaunched(name, sent),
      started: b.events.first(name, 'Started', sent),
      ready: ready?.at ?? NaN,
      ops: lines.filter((l) => l.message === 'operation done' && l.fields.account === name).map((l) => `${l.fields.op} ${l.fields.duration_ms} ms`),
      console: await consoles.get(name)!.stop(),
      images: lines.filter((l) => l.message === 'image added').map((l) => `${l.fields.type} ${(Number(l.fields.bytes) / 1e6).toFixed(1)} MB ${(Number(l.fields.seconds) * 1000).toFixed(0)} ms`),
    });
  }
  return timelines;
}

/**
 * A document without them: when their domains were stopped and undefined (libvirt events, the
 * last of them), and how long the daemon's destroy operations took (the longest), from SIGHUP.
 */
async function removeAll(b: Bench, names: string[]): Promise<string> {
  const mark = b.daemon.output().length;
  const sent = publish(b, []);
  for (const name of names) await waitFor(`${name}'s domain to go`, async () => (await domainState(name)) === null, 300_000);
  for (const name of names) await waitFor(`${name} to be forgotten`, async () => (await stateOf(b, name)) === undefined);
  await new Promise((r) => setTimeout(r, 300)); // the last log lines and events to arrive
  const last = (event: string) => Math.max(...names.map((name) => b.events.first(name, event, sent)));
  const destroys = daemonLines(b.daemon.output().slice(mark))
    .filter((l) => l.message === 'operation done' && l.fields.op === 'destroy' && names.includes(l.fields.account ?? ''));
  const longest = Math.max(...destroys.map((l) => Number(l.fields.duration_ms)));
  return `stopped ${s(last('Stopped') - sent)}, undefined ${s(last('Undefined') - sent)} (destroy operation ${s(longest)})`;
}

// ---- figures ------------------------------------------------------------------------------------

const ms = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) ? `${Math.round(b - a)}` : '?');
const s = (msValue: number) => `${(msValue / 1000).toFixed(2)} s`;

const COLUMNS = ['fetch+apply', 'create', 'to start', 'qemu up', 'kernel 0', '/init', 'marker', 'seen', 'to db', 'whole'];
function row(label: string, t: Timeline): string {
  const c = t.console;
  const cells = [
    ms(t.sent, t.applied), ms(t.applied, t.defined), ms(t.defined, t.startCalled), ms(t.startCalled, t.started),
    ms(t.started, c.kernelZero), ms(c.kernelZero, c.init), ms(c.init, c.marker), ms(c.marker, t.ready),
    ms(t.ready, t.dbRunning), ms(t.sent, t.dbRunning),
  ];
  return `  ${label.padEnd(11)}${cells.map((cell) => cell.padStart(11)).join('')}`;
}

function printTable(title: string, rows: Array<[string, Timeline]>): void {
  console.log(`\n${title} (ms)`);
  console.log(`  ${''.padEnd(11)}${COLUMNS.map((c) => c.padStart(11)).join('')}`);
  for (const [label, t] of rows) console.log(row(label, t));
}

function printDetails(rows: Array<[string, Timeline]>): void {
  for (const [label, t] of rows) {
    console.log(`  ${label}: ops ${t.ops.join(', ')}; "guest ready" boot_ms=${t.bootMs}; QEMU launched ${ms(t.startCalled, t.launched)} ms after the start call, running ${ms(t.launched, t.started)} ms later`);
    if (t.images.length) console.log(`    images fetched into the cache first: ${t.images.join(', ')}`);
  }
}

// ---- the run ------------------------------------------------------------------------------------

const reason = await libvirtUnavailable(URI);
if (reason !== null) {
  console.log(`skipped: ${reason}`);
  process.exit(0);
}

// The daemon runs as installed, from the compiled code (`npm run bench` builds it first): not
// from code older than the sources, which would measure something else.
const compiledAt = (() => {
  try {
    return statSync(join(here, '..', 'dist', 'src', 'cli', 'main.js')).mtimeMs;
  } catch {
    return null;
  }
})();
const newerSource = readdirSync(join(here, '..', 'src'), { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.ts'))
  .find((f) => compiledAt !== null && statSync(join(here, '..', 'src', f)).mtimeMs > compiledAt);
if (compiledAt === null || newerSource !== undefined) {
  console.log(`skipped: ${compiledAt === null ? 'the daemon is not built' : `src/${newerSource} is newer than the compiled daemon`} (npm run build)`);
  process.exit(0);
}

const prefix = accountPrefix().replace(/^nt/, 'nb');
let bench: Bench | null = null;
let cleaning: Promise<void> | null = null;

/** Everything this run made: the daemon, our domains (by prefix) and their QEMU logs, the sandbox. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    if (bench) {
      bench.events.stop();
      // The daemon waits for a guest's boot that is under way before it exits: not for long here.
      const stopped = stopDaemonProcess(bench.daemon);
      const grace = setTimeout(() => bench?.daemon.child.kill('SIGKILL'), 5000);
      await stopped;
      clearTimeout(grace);
    }
    const { stdout } = await run('virsh', ['-c', URI, 'list', '--all', '--name']).catch(() => ({ stdout: '' }));
    for (const name of stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith(prefix))) {
      await run('virsh', ['-c', URI, 'destroy', name]).catch(() => undefined);
      await run('virsh', ['-c', URI, 'undefine', name]).catch(() => undefined);
    }
    for (const name of [...Array(runs + 1).keys()].map((i) => `${prefix}r${i}`).concat([...Array(together).keys()].map((i) => `${prefix}p${i}`))) {
      await rm(join(QEMU_LOG_DIR, `${name}.log`), { force: true });
    }
    if (bench) {
      await bench.server.close();
      await bench.box.cleanup();
    }
  })();
  return cleaning;
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void cleanup().finally(() => process.exit(130)));
}
// An output closed early (piped into head) must not end the run before its clean-up.
process.stdout.on('error', () => undefined);
process.on('uncaughtException', (error) => {
  console.error(`failed: ${error.stack ?? String(error)}`);
  void cleanup().finally(() => process.exit(1));
});

try {
  const built = Date.now();
  const guest = await buildTestGuest();
  const buildSeconds = (Date.now() - built) / 1000;
  const version = (await run('virsh', ['-c', URI, 'version'])).stdout;
  const hypervisor = /Running hypervisor: (.*)/.exec(version)?.[1] ?? 'QEMU ?';
  const library = /Using library: (.*)/.exec(version)?.[1] ?? 'libvirt ?';
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown cpu'}, ${availableParallelism()} cores, node ${process.version}; ${library}, ${hypervisor}, software emulation (TCG); load average ${loadavg()[0]!.toFixed(2)} at the start`);
  console.log(`guest: Debian kernel + busybox initramfs, small size (1 vCPU, 512 MiB), a qcow2 overlay over a 64 MiB base${buildSeconds > 5 ? `; built in ${buildSeconds.toFixed(0)} s` : ''}`);

  const server = await serveDocument(slicesXml(1_800_000_000, []));
  const box = await sandbox({ authority_url: server.url, guest_ready_timeout: 300, guest_accel: 'qemu' });
  const pool = Array.from({ length: Math.max(together, 1) }, (_, i) =>
    `52:54:00:4e:42:${(i + 1).toString(16).padStart(2, '0')} 192.0.2.${100 + i}/24 # bench address ${i + 1}`);
  await writeFile(join(box.dir, 'mac-addresses'), `# the benchmark's pool\n${pool.join('\n')}\n`);
  const events = watchEvents();
  const daemon = startDaemonProcess(box.config);
  bench = { guest, server, box, daemon, events, timestamp: 1_800_000_000 };
  await waitFor('the daemon to apply its first document', async () => daemonLines(daemon.output()).some((l) => l.message === 'document applied'), 60_000);
  await new Promise((r) => setTimeout(r, 1000)); // its first converge pass over an empty host

  console.log('\ncolumns, each from the one before: fetch+apply = SIGHUP sent to "document applied"; create = to the domain defined');
  console.log('(libvirt event); to start = to the daemon\'s start call (configure runs between); qemu up = to the domain running (libvirt');
  console.log('event); kernel 0 = to the guest kernel\'s clock at 0 (firmware, kernel loaded and decompressed; from the console\'s');
  console.log('time stamps); /init = to the kernel running /init (its own clock); marker = to the nodemgr-ready line on the console');
  console.log('log; seen = to the daemon\'s "guest ready"; to db = to "running" read from the node database; whole = SIGHUP to');
  console.log('"running" in the database. Console lines are noted every 25 ms (a figure next to them is within about 25 ms).');

  const sequential: Array<[string, Timeline]> = [];
  const removals: string[] = [];
  for (let i = 0; i <= runs; i++) {
    const name = `${prefix}r${i}`;
    const [t] = await bootAll(bench, [name]);
    sequential.push([i === 0 ? 'cold cache' : `run ${i}`, t!]);
    removals.push(await removeAll(bench, [name]));
  }
  printTable(`one sliver, document to running domain: a first run with an empty image cache, then ${runs} runs`, sequential);
  const warm = sequential.slice(1).map(([, t]) => t);
  if (warm.length > 0) {
    const med = (f: (t: Timeline) => number) => s(median(warm.map(f)));
    console.log(`  median of the ${warm.length} runs: whole ${med((t) => t.dbRunning - t.sent)}; document applied -> defined ${med((t) => t.defined - t.applied)}, -> started ${med((t) => t.started - t.applied)}, -> ready ${med((t) => t.ready - t.applied)}, -> running in the database ${med((t) => t.dbRunning - t.applied)}`);
  }
  printDetails(sequential);
  console.log(`  a document without the sliver -> ${removals.join('; ')}`);

  if (together > 0) {
    const names = Array.from({ length: together }, (_, i) => `${prefix}p${i}`);
    const timelines = await bootAll(bench, names);
    const rows = timelines.map((t): [string, Timeline] => [t.name.slice(prefix.length), t]);
    printTable(`${together} slivers from one document at once (${availableParallelism()} cores: ${together} emulated vCPUs share them)`, rows);
    const last = Math.max(...timelines.map((t) => t.dbRunning));
    const applied = timelines[0]!.applied;
    console.log(`  all ${together} running in the database: ${s(last - timelines[0]!.sent)} after SIGHUP (${s(last - applied)} after "document applied"); ` +
      `last defined ${s(Math.max(...timelines.map((t) => t.defined)) - applied)}, last started ${s(Math.max(...timelines.map((t) => t.started)) - applied)}, last ready ${s(Math.max(...timelines.map((t) => t.ready)) - applied)} after it`);
    printDetails(rows);
    console.log(`  a document without them -> all ${together} ${await removeAll(bench, names)}`);
  }
} catch (error) {
  console.log(`failed: ${(error as Error).message}`);
  if (bench) console.log((bench as Bench).daemon.output().split('\n').slice(-30).join('\n'));
  process.exitCode = 1;
} finally {
  console.log(`\nload average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')} (1, 5, 15 min)`);
  await cleanup();
}
