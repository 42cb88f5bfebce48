// The fleet rehearsal: N real node daemons on this host, each in network and mount namespaces of
// its own, all fed by one authority served by nginx, as PlanetLab's nodes were fed by one PLC.
// Measures how long a changed document takes to be in force on every node by polling and by a
// signed push over ssh, what the authority serves per poll cycle (and so for larger fleets), and
// the daemons' idle CPU and memory. Prints figures only; everything it made is removed at its end
// and on Ctrl-C.
//
//   npm run bench:fleet -- [--nodes 100] [--poll-period 10] [--poll-jitter 5] [--push-parallel 16]
//                          [--start-parallel 4] [--idle-seconds 30]          (root; runs dist/: build first)
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { makeAuthority } from '../test/support/authority-keys.js';
import { fleetDocument } from './lib/fleet-document.js';
import { authorityLoad, bytesText, type PollCycle, type Spread } from './lib/fleet-figures.js';
import { authorityAddress, createBridge, MAX_NODES, removeBridge } from './lib/fleet-net.js';
import { startAuthority } from './lib/fleet-nginx.js';
import type { NodeSettings } from './lib/fleet-nodes.js';
import { measureCycle, measureDocumentSizes, measureIdle, measurePush, WATCH_MS, type CycleFigures, type DocumentSize, type Fleet } from './lib/fleet-phases.js';
import { makeDelegateKey, startFleet, takeRehearsalDir } from './lib/fleet-setup.js';
import { createUndoStack, unwindOnSignals } from './lib/undo-stack.js';

const OPTIONS = {
  '--nodes': { key: 'nodes', min: 1, max: MAX_NODES, value: 100 },
  '--poll-period': { key: 'pollPeriod', min: 10, max: 3600, value: 10 },
  '--poll-jitter': { key: 'pollJitter', min: 0, max: 3600, value: 5 },
  '--push-parallel': { key: 'pushParallel', min: 1, max: 1000, value: 16 },
  '--start-parallel': { key: 'startParallel', min: 1, max: 100, value: 4 },
  '--idle-seconds': { key: 'idleSeconds', min: 1, max: 3600, value: 30 },
} as const;
type Options = { -readonly [K in keyof typeof OPTIONS as (typeof OPTIONS)[K]['key']]: number };

function parseOptions(argv: readonly string[]): Options {
  const options = Object.fromEntries(Object.values(OPTIONS).map((o) => [o.key, o.value])) as Options;
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i]!;
    const spec = OPTIONS[flag as keyof typeof OPTIONS];
    if (!spec) throw new Error(`unknown option ${flag}; the options are ${Object.keys(OPTIONS).join(', ')}`);
    const value = Number(argv[i + 1]);
    if (!Number.isInteger(value) || value < spec.min || value > spec.max) {
      throw new Error(`${flag} takes a whole number from ${spec.min} to ${spec.max}, not ${JSON.stringify(argv[i + 1] ?? '')}`);
    }
    options[spec.key] = value;
  }
  return options;
}

const projectRoot = resolve(import.meta.dirname, '..');

/** Why the rehearsal cannot run here, or null. */
function missingPrerequisite(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (namespaces, accounts, cgroups, a bridge)';
  for (const command of ['nginx', 'ssh', 'ssh-keygen', 'ip', 'nsenter', 'unshare', 'openssl', 'useradd']) {
    try {
      execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
    } catch {
      return `needs ${command} (bash test/host-setup.sh installs the Debian packages)`;
    }
  }
  if (!existsSync(join(projectRoot, 'dist/src/cli/main.js'))) return 'needs the compiled daemon in dist/ (npm run build)';
  if (!existsSync(join(projectRoot, 'native/build/forward_api_calls'))) return 'needs the native build (npm run build:native)';
  return null;
}

const seconds = (s: Spread) => `p50 ${s.p50.toFixed(2)} s, p95 ${s.p95.toFixed(2)} s, max ${s.max.toFixed(2)} s`;

function cycleLine(label: string, f: CycleFigures): string {
  const c: PollCycle = f.cycle;
  const statuses = Object.entries(c.byStatus).map(([status, n]) => `${n}×${status}`).join(' ');
  return `  ${label.padEnd(26)} ${String(c.requests).padStart(5)} requests (${statuses}; ${c.conditional} conditional, ${c.gzipped} gzip)  `
    + `in ${bytesText(c.requestBytes)}, out ${bytesText(c.responseBytes)} (${bytesText((c.requestBytes + c.responseBytes) / c.requests)} a request); nginx CPU ${(f.authorityCpuSeconds * 1000).toFixed(0)} ms`;
}

/** What the measured cycles mean for larger fleets: requests/s and bytes/s at two poll periods. */
function printScaling(o: Options, idle: CycleFigures, sizes: readonly DocumentSize[]): void {
  const perNotModified = (idle.cycle.requestBytes + idle.cycle.responseBytes) / idle.cycle.requests;
  const requestBytes = idle.cycle.requestBytes / idle.cycle.requests;
  console.log('\nthe authority for larger fleets (one document for the whole fleet, the same slivers a node; a node polls every period + up to the jitter):');
  for (const [period, jitter] of [[o.pollPeriod, o.pollJitter], [900, 60]] as const) {
    for (const size of sizes) {
      const steady = authorityLoad(size.nodes, perNotModified, period, jitter);
      const changedGzip = authorityLoad(size.nodes, requestBytes + size.gzipBytes, period, jitter);
      const changedPlain = authorityLoad(size.nodes, requestBytes + size.identityBytes, period, jitter);
      console.log(`  ${String(size.nodes).padStart(6)} nodes, poll ${period} s + ≤${jitter} s: ${steady.requestsPerSecond.toFixed(1)} requests/s; `
        + `unchanged (304) ${bytesText(steady.bytesPerSecond)}/s; the cycle after a change (200) ${bytesText(changedGzip.bytesPerSecond)}/s gzip, `
        + `${bytesText(changedPlain.bytesPerSecond)}/s without (document ${bytesText(size.gzipBytes)} gzip, ${bytesText(size.identityBytes)} plain)`);
    }
  }
}

async function rehearse(o: Options, dir: string, undo: ReturnType<typeof createUndoStack>): Promise<void> {
  const log = (line: string) => console.log(line);
  await takeRehearsalDir(dir, undo, log);
  const keys = await makeAuthority(dir);
  const delegateKey = await makeDelegateKey(dir);
  await createBridge();
  undo.push('the bridge', () => removeBridge());
  const authority = await startAuthority(join(dir, 'nginx'), authorityAddress());
  undo.push('nginx', () => authority.stop());
  const document = { nodes: o.nodes, delegate: { name: 'fleet_plc', key: delegateKey.publicKey } };
  const first = fleetDocument({ ...document, version: 1 });
  await authority.publish('slices.xml', first);
  console.log(`authority: nginx at ${authority.url}, gzip and ETags; the document: ${o.nodes} nodes, ${bytesText(Buffer.byteLength(first))}`);

  const settings: NodeSettings[] = Array.from({ length: o.nodes }, (_, i) => ({
    id: i + 1, dir: join(dir, 'nodes', String(i + 1)), authorityUrl: authority.url, authorityCert: keys.certPath,
    authorityDelegate: document.delegate.name, pollPeriod: o.pollPeriod, pollJitter: o.pollJitter,
  }));
  const startedAt = performance.now();
  const nodes = await startFleet(settings, o.startParallel, undo, log);
  console.log(`${o.nodes} nodes up (document in force, slivers and delegate running), ${o.startParallel} started at a time: ${((performance.now() - startedAt) / 1000).toFixed(1)} s`);
  const fleet: Fleet = { dir, nodes, dirOf: (id) => settings[id - 1]!.dir, authority, document, pollPeriod: o.pollPeriod, pollJitter: o.pollJitter };

  console.log(`\npoll cycles (poll_period ${o.pollPeriod} s, poll_jitter ${o.pollJitter} s; one request a node: each node's first after the cycle's start):`);
  const unchangedGzip = await measureCycle(fleet, true, null);
  console.log(cycleLine('unchanged, gzip on', unchangedGzip));
  const changedGzip = await measureCycle(fleet, true, 2);
  console.log(cycleLine('changed, gzip on', changedGzip));
  const unchangedPlain = await measureCycle(fleet, false, null);
  console.log(cycleLine('unchanged, gzip off', unchangedPlain));
  const changedPlain = await measureCycle(fleet, false, 3);
  console.log(cycleLine('changed, gzip off', changedPlain));
  console.log(`\na changed document in force on all ${o.nodes} nodes BY POLLING (from its publication; databases read every ${WATCH_MS} ms):`);
  console.log(`  gzip on:  ${seconds(changedGzip.inForce!)}`);
  console.log(`  gzip off: ${seconds(changedPlain.inForce!)}`);

  const idle = await measureIdle(fleet, o.idleSeconds);
  console.log(`\nidle node daemons over ${idle.seconds.toFixed(0)} s (no change; their polls answered 304), per daemon:`);
  console.log(`  CPU: p50 ${idle.cpuPercent.p50.toFixed(2)}%, p95 ${idle.cpuPercent.p95.toFixed(2)}%, max ${idle.cpuPercent.max.toFixed(2)}% of one core`);
  console.log(`  RSS: p50 ${bytesText(idle.rssBytes.p50)}, max ${bytesText(idle.rssBytes.max)}; all ${o.nodes}: ${bytesText(idle.totalRssBytes)}`);
  if (idle.libvirtdPercent !== null) {
    console.log(`  the host's libvirtd, which every daemon here asks for its domains at each pass: ${idle.libvirtdPercent.toFixed(2)}% of one core (${(idle.libvirtdPercent / o.nodes).toFixed(3)}% a node)`);
  }

  const push = await measurePush(fleet, 4, { authorityKey: keys.keyPath, delegateIdentity: delegateKey.identity }, o.pushParallel);
  console.log(`\na changed document in force on all ${o.nodes} nodes BY SIGNED PUSH (ssh to each node's gateway as ${document.delegate.name}, DeliverSlices, ${o.pushParallel} at a time):`);
  console.log(`  from the push's start to each node's "applied": ${seconds(push.inForce)}`);
  console.log(`  one connection (OpenSSH login + the ${bytesText(push.requestBytes)} call + apply): ${seconds(push.perConnection)}; signing once: ${(push.signSeconds * 1000).toFixed(0)} ms`);

  await authority.setGzip(true);
  const sizes = await measureDocumentSizes(fleet, [...new Set([o.nodes, 1_000, 10_000])]);
  printScaling(o, unchangedGzip, sizes);
}

// A reader that goes away (`| head`) must not cut the cleanup short.
process.stdout.on('error', () => undefined);
const options = parseOptions(process.argv.slice(2));
console.log(`machine: ${cpus()[0]?.model ?? 'unknown cpu'}, ${cpus().length} cores, ${bytesText(totalmem())} memory, node ${process.version}`);
const missing = missingPrerequisite();
if (missing) {
  console.log(`fleet rehearsal skipped: it ${missing}`);
} else {
  const undo = createUndoStack();
  unwindOnSignals(undo);
  try {
    await rehearse(options, join(tmpdir(), 'nodemgr-fleet'), undo);
  } catch (error) {
    console.error(`fleet rehearsal failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  } finally {
    const cleanupStart = performance.now();
    await undo.unwind();
    console.log(`\ncleaned up (daemons, namespaces, veths, bridge, nginx, cgroups, accounts and homes) in ${((performance.now() - cleanupStart) / 1000).toFixed(1)} s`);
  }
}
