// API throughput: GetRSpec calls per second and p50/p99 latency at 1 and 32 concurrent keep-alive
// clients, for nodemgr's API server (with its answer cache, as the daemon runs it, and without)
// beside (a) the original's Python ThreadingMixIn +
// SimpleXMLRPCServer (HTTP/1.0, one connection per call), (b) a bare node:http server returning a
// fixed response (the ceiling on this machine) and, for reference, the `xmlrpc` package's own
// server. Each server runs in its own process, the load generator (bench/lib/http-load.ts) in this
// one. First nodemgr's servers and the bare one take turns at 32 clients for the share of the bare
// server's calls/s (see pairedShares), then the rounds. Prints figures only, no thresholds.
//
//   npm run build && node --import tsx bench/api.ts [seconds per run, default 4] [rounds, default 5]
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, sep } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { sliverRecords } from '../src/db/records.js';
import { BENCH_SLIVERS } from './lib/api-server-size.js';
import { daemonFlags } from './lib/daemon-flags.js';
import { loadServer, openClients, type LoadFigures } from './lib/http-load.js';
import { nodeOfRecords } from './lib/node-of-records.js';
import { medianBy, quantile } from './lib/median.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, here.includes(`${sep}dist${sep}`) ? '../..' : '..');
const seconds = Number(process.argv[2] ?? 4);
const rounds = Number(process.argv[3] ?? 5);
const CONCURRENCY = [1, 32];

interface Running {
  readonly port: number;
  /** CPU seconds the server process has used so far (user + system, all its threads). */
  cpuSeconds(): number;
  stop(): Promise<void>;
}

/** Fields 14 and 15 of /proc/PID/stat, in clock ticks (100 a second on Linux). */
function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function startServer(command: string, args: readonly string[]): Promise<Running> {
  const child: ChildProcess = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${command} ${args.join(' ')} exited with ${code} before listening`)));
    createInterface({ input: child.stdout! }).once('line', (line) => {
      const port = Number(/^port (\d+)$/.exec(line)?.[1]);
      if (!port) return reject(new Error(`unexpected first line from server: ${line}`));
      child.removeAllListeners('exit');
      resolve({
        port,
        cpuSeconds: () => processCpuSeconds(child.pid!),
        stop: () =>
          new Promise((done) => {
            child.once('exit', () => done());
            child.stdin!.end();
            setTimeout(() => child.kill('SIGKILL'), 5000).unref();
          }),
      });
    });
  });
}

const callBody = (name: string) =>
  `<?xml version="1.0"?>\n<methodCall><methodName>GetRSpec</methodName><params><param><value><string>${name}</string></value></param></params></methodCall>`;

const node = nodeOfRecords(BENCH_SLIVERS);
const records = sliverRecords(node.database);
const bodies = records.map((r) => Buffer.from(callBody(r.name)));
const scratch = mkdtempSync(join(tmpdir(), 'nodemgr-bench-api-'));
const rspecsFile = join(scratch, 'rspecs.json');
writeFileSync(rspecsFile, JSON.stringify(Object.fromEntries(records.map((r) => [r.name, r.rspec]))));
rmSync(node.dir, { recursive: true, force: true });

// The servers run compiled, as the daemon does: under tsx every closure would pay for its name.
const compiledServers = join(repo, 'dist', 'bench', 'lib', 'api-servers.js');
if (!existsSync(compiledServers)) throw new Error(`${compiledServers} is missing: run "npm run build" first`);
const tsServer = (mode: string, flags: string[] = []) => [process.execPath, [...flags, compiledServers, mode]] as const;
// nodemgr's servers run under the daemon's V8 flags (those of its #! line, if any), the others as Node starts.
const flags = daemonFlags(repo);
const OURS = 'nodemgr API';
const OURS_UNCACHED = 'nodemgr API without its answer cache';
const BARE = '(b) bare node:http, fixed response';
const servers: { label: string; command: readonly [string, readonly string[]] }[] = [
  { label: OURS, command: tsServer('nodemgr', flags) },
  { label: OURS_UNCACHED, command: tsServer('nodemgr-uncached', flags) },
  { label: '(a) Python ThreadingMixIn+SimpleXMLRPCServer', command: ['/usr/bin/python3', [join(repo, 'bench', 'baseline', 'xmlrpc_server.py'), rspecsFile]] },
  { label: BARE, command: tsServer('bare') },
  { label: 'xmlrpc package server', command: tsServer('xmlrpc') },
];
const commandOf = (label: string) => servers.find((s) => s.label === label)!.command;
/**
 * The turns of the paired measurement and the seconds of each: short, so that each pair of turns
 * sees the host as it was within a second (the clients stay connected from turn to turn).
 */
const TURNS = 48;
const TURN_SECONDS = 0.5;

const row = (label: string, clients: number | string, f: Run | null, extra = '') =>
  console.log(
    `${label.padEnd(46)} ${String(clients).padStart(7)} ${f ? f.callsPerSecond.toFixed(0).padStart(9) : 'calls/s'.padStart(9)} ` +
      `${f ? f.p50.toFixed(2).padStart(7) : 'p50 ms'.padStart(7)} ${f ? f.p99.toFixed(2).padStart(7) : 'p99 ms'.padStart(7)} ` +
      `${f ? f.cpuMicrosPerCall.toFixed(0).padStart(11) : 'CPU µs/call'} ${f ? String(f.errors).padStart(6) : 'errors'}${extra}`,
  );

// This kind of host is shared and noisy: the servers take turns, round after round, and each
// figure is the round with the median calls/s; the share of the bare server's is then measured
// apart (pairedShares).
console.log(`GetRSpec over 127.0.0.1, ${BENCH_SLIVERS} slivers, ${rounds} rounds of ${seconds} s per figure, ${cpus().length} CPUs, Node ${process.version}; nodemgr under ${flags.join(' ') || 'no V8 flags'}`);
type Run = LoadFigures & { readonly cpuMicrosPerCall: number };

/** One figure: `clients` clients for `secs` seconds, and the server's CPU per call over them. */
async function measure(server: Running, clients: number, secs: number): Promise<Run> {
  // Over the measured seconds only: the warm-up, where connections are opened and callers
  // identified, is not in it.
  let cpuBefore = 0;
  let cpuAfter = 0;
  const figures = await loadServer(server.port, clients, bodies, secs, {
    start: () => (cpuBefore = server.cpuSeconds()),
    end: () => (cpuAfter = server.cpuSeconds()),
  });
  return { ...figures, cpuMicrosPerCall: ((cpuAfter - cpuBefore) * 1e6) / (figures.callsPerSecond * secs) };
}

/**
 * The share of the bare server's calls/s at 32 clients, the steadiest way this host allows: the
 * servers run side by side, each with its 32 clients connected, and take turns in half-second
 * slices (the order swapped each time, the bare server's turn always next to each other's), so
 * that the host's drift, which moves every figure by half from one minute to the next, falls on
 * both. Each turn gives one ratio; the median of them is the figure.
 */
async function pairedShares(labels: string[], turns: number): Promise<Map<string, number[]>> {
  // The bare server in the middle of the order: each turn of the others is next to one of its own.
  const order = [...labels.slice(0, Math.ceil(labels.length / 2)), BARE, ...labels.slice(Math.ceil(labels.length / 2))];
  const started = await Promise.all(order.map(async (label) => [label, await startServer(...commandOf(label))] as const));
  const loads = started.map(([label, server]) => [label, openClients(server.port, 32, bodies)] as const);
  const shares = new Map<string, number[]>(labels.map((label) => [label, []]));
  try {
    // The connections opened and their callers known, as in the rounds' warm-up.
    for (const [, load] of loads) await load.run(1);
    for (let i = 0; i < turns; i++) {
      const rate = new Map<string, number>();
      for (const [label, load] of i % 2 === 0 ? loads : [...loads].reverse()) rate.set(label, (await load.run(TURN_SECONDS)).callsPerSecond);
      for (const label of labels) shares.get(label)!.push(rate.get(label)! / rate.get(BARE)!);
    }
  } finally {
    for (const [, load] of loads) load.close();
    await Promise.all(started.map(([, server]) => server.stop()));
  }
  return shares;
}

/** The share at quantile `q` of the turns, in percent. */
const shareAt = (each: readonly number[], q: number) => `${(100 * quantile(each, q)).toFixed(0)}%`;

const runs = new Map<string, Run[]>();
let shares: Map<string, number[]>;
try {
  // The turns come first, on a host that no one-connection-per-call load has touched: the Python
  // baseline's rounds leave thousands of its connections in TIME_WAIT for a minute. While nodemgr's
  // server read the kernel's socket tables (megabytes then) to identify each new connection's
  // caller, a server started then measured 76-95% of the bare server in the turns, against 90-95%
  // before them; asking the kernel for the client's socket alone (sock_diag), 89-97%.
  shares = await pairedShares([OURS, OURS_UNCACHED], TURNS);
  for (let round = 1; round <= rounds; round++) {
    for (const { label, command } of servers) {
      const server = await startServer(...command);
      try {
        for (const clients of CONCURRENCY) {
          const key = `${label}/${clients}`;
          runs.set(key, [...(runs.get(key) ?? []), await measure(server, clients, seconds)]);
        }
      } finally {
        await server.stop();
      }
    }
    process.stderr.write(`round ${round} of ${rounds} done\n`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

/** The round with the median calls/s. */
const medianRun = (key: string): Run => medianBy(runs.get(key)!, (f) => f.callsPerSecond)!;
row('server', 'clients', null, '   calls/s of each round');
for (const { label } of servers) {
  for (const clients of CONCURRENCY) {
    const key = `${label}/${clients}`;
    row(label, clients, medianRun(key), `   ${runs.get(key)!.map((f) => f.callsPerSecond.toFixed(0)).join(' ')}`);
  }
}
const ours = medianRun(`${OURS}/32`);
const python = medianRun(`${servers[2]!.label}/32`);
const bare = medianRun(`${BARE}/32`);
for (const [label, each] of shares) {
  console.log(`${label} at 32 clients, as a share of the bare server's calls/s, taking turns with it ${TURNS} times ` +
    `(${TURN_SECONDS} s each): median ${shareAt(each, 0.5)}, the middle half of the turns ${shareAt(each, 0.25)}–${shareAt(each, 0.75)}, ` +
    `all ${shareAt(each, 0)}–${shareAt(each, 1)}`);
}
console.log(
  `at 32 clients nodemgr gives ${(ours.callsPerSecond / python.callsPerSecond).toFixed(1)}x the Python baseline's calls/s, ` +
    `${((100 * ours.callsPerSecond) / bare.callsPerSecond).toFixed(0)}% of the bare server's (medians of the rounds), with p99 ${(ours.p99 / bare.p99).toFixed(2)}x the bare server's; ` +
    `server CPU per call ${ours.cpuMicrosPerCall.toFixed(0)} µs against the bare server's ${bare.cpuMicrosPerCall.toFixed(0)} µs and Python's ${python.cpuMicrosPerCall.toFixed(0)} µs`,
);
