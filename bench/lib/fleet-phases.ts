// The measurements of the fleet rehearsal, each over the running fleet: a poll cycle read from the
// authority's access log, the time for a version to be in force on every node (by polling or by
// push), and the daemons' idle CPU and memory.
import { execFile } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { signDetached } from '../../test/support/authority-keys.js';
import { fleetDocument, timestampOf, type FleetDocumentOptions } from './fleet-document.js';
import { parseAccessLog, pollCycle, spreadOf, type PollCycle, type Spread } from './fleet-figures.js';
import { nodeAddress } from './fleet-net.js';
import { fetchOnce, processCpuSeconds, type Authority } from './fleet-nginx.js';
import { residentBytes, viewNode, type RunningNode } from './fleet-nodes.js';
import { deliverSlicesRequest, inParallel, pushOverSsh, type PushResult } from './fleet-push.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Fleet {
  /** The rehearsal's own directory. */
  readonly dir: string;
  readonly nodes: readonly RunningNode[];
  readonly dirOf: (node: number) => string;
  readonly authority: Authority;
  readonly document: Omit<FleetDocumentOptions, 'version'>;
  readonly pollPeriod: number;
  readonly pollJitter: number;
}

/** How often the nodes' databases are read while waiting for a version: the figures' resolution. */
export const WATCH_MS = 100;

/**
 * Waits until every node's database holds `version` as its document in force; the seconds each
 * took from `since` (a performance.now() reading). Fails naming the nodes that did not.
 */
export async function inForceEverywhere(fleet: Fleet, version: number, since: number, timeoutMs: number): Promise<number[]> {
  const wanted = timestampOf(version);
  const seconds = new Map<number, number>();
  // A database is read only when its file changed (each write renames a new file into place: a
  // new inode): the watcher shares the cores with the nodes.
  const lastChange = new Map<number, string>();
  const deadline = since + timeoutMs;
  while (seconds.size < fleet.nodes.length) {
    await Promise.all(fleet.nodes.filter((n) => !seconds.has(n.id)).map(async (n) => {
      const file = await stat(join(fleet.dirOf(n.id), 'state', 'nodemgr.json')).catch(() => null);
      const changed = file ? `${file.ino}:${file.mtimeMs}` : 'none';
      if (changed === lastChange.get(n.id)) return;
      lastChange.set(n.id, changed);
      const view = await viewNode(fleet.dirOf(n.id));
      if (view?.documentTimestamp === wanted) seconds.set(n.id, (performance.now() - since) / 1000);
    }));
    if (performance.now() > deadline) {
      const late = fleet.nodes.filter((n) => !seconds.has(n.id)).map((n) => n.id);
      throw new Error(`version ${version} not in force after ${timeoutMs / 1000} s on ${late.length} nodes (${late.slice(0, 10).join(', ')}…)`);
    }
    await sleep(WATCH_MS);
  }
  return [...seconds.values()];
}

export interface CycleFigures {
  readonly cycle: PollCycle;
  readonly authorityCpuSeconds: number;
  /** For a cycle that carried a new version: seconds from its publication to in force, over nodes. */
  readonly inForce: Spread | null;
}

/**
 * One poll cycle with gzip on or off: the version in force stays (every node should get 304) or a
 * new one is published (every node should get 200 and put it in force).
 */
export async function measureCycle(fleet: Fleet, gzip: boolean, newVersion: number | null): Promise<CycleFigures> {
  await fleet.authority.setGzip(gzip);
  const cpuBefore = await fleet.authority.cpuSeconds();
  const started = performance.now();
  const timeoutMs = (fleet.pollPeriod + fleet.pollJitter + 60) * 1000;
  if (newVersion !== null) await fleet.authority.publish('slices.xml', fleetDocument({ ...fleet.document, version: newVersion }));
  // The cycle starts once the new version is in place: a request already under way is the last
  // cycle's.
  const since = Date.now() / 1000;
  const inForce = newVersion === null ? null : spreadOf(await inForceEverywhere(fleet, newVersion, started, timeoutMs));
  for (;;) {
    const cycle = pollCycle(parseAccessLog(await readFile(fleet.authority.accessLog, 'utf8')), '/slices.xml', since);
    if (cycle.requests >= fleet.nodes.length) {
      return { cycle, inForce, authorityCpuSeconds: (await fleet.authority.cpuSeconds()) - cpuBefore };
    }
    if (performance.now() - started > timeoutMs) throw new Error(`only ${cycle.requests} of ${fleet.nodes.length} nodes polled within ${timeoutMs / 1000} s`);
    await sleep(500);
  }
}

export interface PushFigures {
  /** Seconds from the push's start to each node's answer that the version is applied. */
  readonly inForce: Spread;
  /** One ssh connection, login and DeliverSlices call, over nodes. */
  readonly perConnection: Spread;
  readonly requestBytes: number;
  readonly signSeconds: number;
}

/** Signs `version` once and pushes it to every node through its ssh gateway, `parallel` at a time. */
export async function measurePush(fleet: Fleet, version: number, keys: { authorityKey: string; delegateIdentity: string }, parallel: number): Promise<PushFigures> {
  const document = fleetDocument({ ...fleet.document, version });
  const signStart = performance.now();
  const signature = await signDetached(Buffer.from(document), keys.authorityKey);
  const signSeconds = (performance.now() - signStart) / 1000;
  const request = deliverSlicesRequest(document, signature);
  const requestFile = join(fleet.dir, 'deliver-slices.xml');
  await writeFile(requestFile, request);
  const started = performance.now();
  const results = await inParallel(fleet.nodes, parallel, async (node): Promise<PushResult & { at: number }> => {
    const result = await pushOverSsh({ address: nodeAddress(node.id), port: 2222, user: fleet.document.delegate.name, identity: keys.delegateIdentity }, requestFile);
    return { ...result, at: (performance.now() - started) / 1000 };
  });
  const failed = results.map((r, i) => ({ r, id: fleet.nodes[i]!.id })).filter(({ r }) => !('outcome' in r.answer) || r.answer.outcome !== 'applied');
  if (failed.length > 0) {
    const first = failed[0]!;
    throw new Error(`the push was not applied on ${failed.length} nodes; node ${first.id}: ${JSON.stringify(first.r.answer)}`);
  }
  // The answer says applied and on disk; the databases must agree.
  await inForceEverywhere(fleet, version, performance.now(), 10_000);
  return {
    inForce: spreadOf(results.map((r) => r.at)),
    perConnection: spreadOf(results.map((r) => r.ms / 1000)),
    requestBytes: Buffer.byteLength(request),
    signSeconds,
  };
}

export interface IdleFigures {
  readonly seconds: number;
  /** Per daemon, percent of one core. */
  readonly cpuPercent: Spread;
  readonly rssBytes: Spread;
  readonly totalRssBytes: number;
  /**
   * The host's libvirtd over the same time (null: none runs), percent of one core: every daemon
   * lists the domains at its libvirt URIs on each pass, and here all of them ask the one libvirtd
   * that a fleet would have on every node.
   */
  readonly libvirtdPercent: number | null;
}

async function libvirtdPid(): Promise<number | null> {
  const { stdout } = await run('pgrep', ['-o', '-x', 'libvirtd']).catch(() => ({ stdout: '' }));
  return stdout.trim() === '' ? null : Number(stdout.trim());
}

/** The daemons' CPU over `seconds` of no change (their polls answered 304) and their memory after it. */
export async function measureIdle(fleet: Fleet, seconds: number): Promise<IdleFigures> {
  const libvirtd = await libvirtdPid();
  const cpu = async () => Promise.all([...fleet.nodes.map((n) => n.pid), libvirtd ?? -1].map(async (pid) => (await processCpuSeconds(pid)) ?? Number.NaN));
  const before = await cpu();
  const started = performance.now();
  await sleep(seconds * 1000);
  const after = await cpu();
  const elapsed = (performance.now() - started) / 1000;
  const percent = after.map((a, i) => (100 * (a - before[i]!)) / elapsed);
  const libvirtdPercent = percent.pop()!;
  if (percent.some(Number.isNaN)) throw new Error('a node daemon ended during the idle measurement');
  const rss = await Promise.all(fleet.nodes.map(async (n) => (await residentBytes(n.pid)) ?? 0));
  return {
    seconds: elapsed, cpuPercent: spreadOf(percent), rssBytes: spreadOf(rss), totalRssBytes: rss.reduce((a, b) => a + b, 0),
    libvirtdPercent: Number.isNaN(libvirtdPercent) ? null : libvirtdPercent,
  };
}

export interface DocumentSize {
  readonly nodes: number;
  readonly identityBytes: number;
  readonly gzipBytes: number;
}

/**
 * What one 200 costs for the document of a larger fleet, served by the same nginx: each fetched
 * once with gzip and once without, sizes read from the access log (headers included).
 */
export async function measureDocumentSizes(fleet: Fleet, fleetSizes: readonly number[]): Promise<DocumentSize[]> {
  await fleet.authority.setGzip(true);
  const sizes: DocumentSize[] = [];
  for (const nodes of fleetSizes) {
    const name = `slices-${nodes}.xml`;
    await fleet.authority.publish(name, fleetDocument({ ...fleet.document, nodes, version: 1 }));
    const url = fleet.authority.url.replace(/slices\.xml$/, name);
    const since = Date.now() / 1000;
    await fetchOnce(url, true);
    await fetchOnce(url, false);
    // nginx logs a request after its answer is sent: the client may have it first.
    for (let attempt = 1; ; attempt++) {
      const entries = parseAccessLog(await readFile(fleet.authority.accessLog, 'utf8')).filter((e) => e.uri === `/${name}` && e.time >= since);
      const gzip = entries.find((e) => e.gzip);
      const identity = entries.find((e) => !e.gzip);
      if (gzip && identity) {
        sizes.push({ nodes, identityBytes: identity.responseBytes, gzipBytes: gzip.responseBytes });
        break;
      }
      if (attempt === 50) throw new Error(`the access log lacks the fetches of ${name} 5 s after them`);
      await sleep(100);
    }
  }
  return sizes;
}
