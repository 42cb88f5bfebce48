// The daemon itself (its compiled command, all of its services) on a node of N real Unix slivers,
// for bench/sync.ts: from a new document to all running, its resident set size while it works and
// once it has settled, and from a document without them to all removed. Root only: it makes N
// accounts (a uid range of its own), their homes under a scratch directory and their cgroups, and
// removes them all; shaping is off (the host's uplink is not the bench's to shape).
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { disabledSlices, generateSlicesXml } from './generate-slices.js';
import { unexpiring } from './node-of-records.js';
import { removeCgroupParent } from '../../test/system/support/host.js';

export interface ScaleFigures {
  /** The slivers the document enables: those that run (the others are made and stay stopped). */
  readonly enabled: number;
  readonly runningSeconds: number;
  /** The largest resident set size seen (MB) until every sliver ran. */
  readonly peakMb: number;
  /** RSS samples (MB), every 10 s for two minutes once every sliver ran. */
  readonly idleMb: readonly number[];
  readonly removedSeconds: number;
}

/** A uid range of the bench's own: outside the tests' pool and bench/sync.ts's other ranges. */
const UIDS = { min: 100_000, max: 111_999 };
const PREFIX = 'nds_';
const CGROUP_PARENT = 'nodemgr-bench-scale';

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function daemonAtScale(count: number, command: { node: string; flags: string[]; cli: string }): Promise<ScaleFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'nodemgr-bench-scale-'));
  chmodSync(dir, 0o755);
  mkdirSync(join(dir, 'home'), { mode: 0o755 });
  const doc = join(dir, 'slices.xml');
  const text = unexpiring(generateSlicesXml({ slices: count, nodeId: 1, onNodeFraction: 1, seed: 5, namePrefix: PREFIX }));
  writeFileSync(doc, text);
  const enabled = count - disabledSlices(text);
  const settings = {
    node_id: 1, authority_url: `file://${doc}`, state_dir: join(dir, 'state'), run_dir: join(dir, 'run'), log_dir: join(dir, 'log'),
    home_base: join(dir, 'home'), sliver_uid_min: UIDS.min, sliver_uid_max: UIDS.max, api_port: 0, metrics_port: 0, ssh_port: 0,
    poll_period: 3600, poll_jitter: 0, cgroup_parent: CGROUP_PARENT, shaping_device: 'none',
    delegate_shell: join(dir, 'libexec', 'forward_api_calls'), image_cache_dir: join(dir, 'images'), guest_dir: join(dir, 'guests'),
    address_pool: join(dir, 'mac-addresses'),
  };
  const config = join(dir, 'nodemgr.conf');
  writeFileSync(config, Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
  const log = openSync(join(dir, 'daemon.log'), 'a');
  const daemon = spawn(command.node, [...command.flags, command.cli, 'daemon', '--config', config], { stdio: ['ignore', log, log] });
  const exited = new Promise((resolve) => daemon.once('exit', resolve));
  const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${daemon.pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
  const running = () => {
    try {
      const db = JSON.parse(readFileSync(join(dir, 'state', 'nodemgr.json'), 'utf8')) as { accounts?: Record<string, { state: string }> };
      return Object.values(db.accounts ?? {}).filter((a) => a.state === 'running').length;
    } catch {
      return 0; // not written yet, or being replaced
    }
  };
  const ours = () => readFileSync('/etc/passwd', 'utf8').split('\n').filter((line) => line.startsWith(PREFIX)).length;
  try {
    const started = Date.now();
    let peakMb = 0;
    while (running() < enabled) {
      if (daemon.exitCode !== null) throw new Error(`the daemon exited (${daemon.exitCode}); its log is ${join(dir, 'daemon.log')}`);
      peakMb = Math.max(peakMb, rssMb());
      await pause(2000);
    }
    const runningSeconds = (Date.now() - started) / 1000;
    const idleMb: number[] = [];
    for (let i = 0; i < 12; i++) {
      await pause(10_000);
      idleMb.push(rssMb());
    }
    writeFileSync(doc, `<slices timestamp="${Math.floor(Date.now() / 1000)}"></slices>\n`);
    const removing = Date.now();
    daemon.kill('SIGHUP'); // sync now
    while (ours() > 0) await pause(1000);
    return { enabled, runningSeconds, peakMb, idleMb, removedSeconds: (Date.now() - removing) / 1000 };
  } finally {
    daemon.kill('SIGTERM');
    await exited;
    // Its slivers' groups if a run stopped before they were removed, then the parent, in every hierarchy.
    await removeCgroupParent(CGROUP_PARENT);
    // BENCH_LOG=file keeps the daemon's log, as for bench/sync.ts's other figures.
    if (process.env.BENCH_LOG) copyFileSync(join(dir, 'daemon.log'), process.env.BENCH_LOG);
    rmSync(dir, { recursive: true, force: true });
  }
}
