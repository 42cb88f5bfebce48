// Virtual clusters for real: `nodemgr vc boot` of a frontend and 2 computes (1 + 2 nodes, the
// computes after a clock wait of 1 s) from a repository on loopback HTTP, with the real daemon and
// libvirtd (software emulation) and the test guest. Where the time goes: the whole `vc boot`, the
// image's first fetch (decompression into the cache), nodemgr's share (allocation, network, overlays,
// injection of vc-out.xml, definitions: the daemon's log up to the frontend's start) and the guests'
// boot (QEMU's start to each node's ready line on its console). Prints figures only; no thresholds.
// Needs root and libvirtd; without them it says why and exits 0.
//
//   node --import tsx bench/clusters.ts [runs, default 3]
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildTestGuest } from '../test/system/support/guest.js';
import { cli, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess, waitFor } from '../test/system/support/host.js';
import { libvirtUnavailable } from '../test/system/support/libvirt.js';
import { slicesXml } from '../test/system/support/slices.js';
import { serveVcRepository } from '../test/system/support/vc-repository.js';
import { median } from './lib/median.js';

const run = promisify(execFile);
const URI = 'qemu:///system';
const runs = Number(process.argv[2] ?? 3);
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNsdXN0ZXJrZXlmb3Jub2RlbWdydGVzdHNvbmx5MTIzNDU= bench@nodemgr';

const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`.padStart(9);

/** The daemon's lines' times: `<ISO time> <level> <message> …`. */
function lineTime(output: string, pattern: RegExp, after: number): number {
  for (const line of output.split('\n')) {
    const m = /^(\S+Z) \w+ (.*)$/.exec(line);
    if (m && pattern.test(m[2]!) && Date.parse(m[1]!) >= after) return Date.parse(m[1]!);
  }
  return NaN;
}

/** When QEMU last started the domain (libvirt's "starting up" line in its log). */
async function qemuStartedAt(name: string): Promise<number> {
  const log = await readFile(`/var/log/libvirt/qemu/${name}.log`, 'utf8');
  const starts = [...log.matchAll(/^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+\d{4}): starting up/gm)];
  return Date.parse(starts[starts.length - 1]![1]!.replace(' ', 'T').replace(/([+-]\d\d)(\d\d)$/, '$1:$2'));
}

async function main(): Promise<void> {
  const reason = await libvirtUnavailable(URI);
  if (reason !== null) {
    console.log(`bench/clusters: skipped: ${reason}`);
    return;
  }
  console.log(`bench/clusters: ${cpus()[0]?.model ?? 'cpu'} x${availableParallelism()}, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}; software emulation`);
  const guest = await buildTestGuest();
  const document = await serveDocument(slicesXml(1_800_000_000, []));
  const box = await sandbox({ authority_url: document.url, guest_accel: 'qemu' });
  const repo = await serveVcRepository(guest, box.dir, 1);
  await writeFile(join(box.dir, 'mac-addresses'), '52:54:00:4e:42:71 192.0.2.71/24\n');
  await writeFile(box.config, `${await readFile(box.config, 'utf8')}vc_repository_url = ${repo.url}\n`);
  await writeFile(join(box.dir, 'id.pub'), `${KEY}\n`);
  const daemon = startDaemonProcess(box.config);
  const vc = (...args: string[]) => run(process.execPath, [cli, 'vc', ...args, '--config', box.config], { timeout: 20 * 60_000 });
  const rows: Array<{ whole: number; share: number; boot: number }> = [];
  let firstFetch = NaN;
  try {
    await waitFor('the API', async () => { await vc('list'); return true; }, 60_000);
    for (let i = 0; i < runs; i++) {
      const name = `bench${i}`;
      const started = Date.now();
      await vc('boot', 'testvc', '2', '--name', name, '--key', join(box.dir, 'id.pub'));
      const whole = Date.now() - started;
      const output = daemon.output();
      if (i === 0) firstFetch = lineTime(output, /^virtual cluster image assembled/, started) - started;
      const frontendStarted = await qemuStartedAt(`vc.${name}.frontend`);
      const guestsDir = join(box.stateDir, 'clusters', 'guests');
      const readyOf = async (node: string) => {
        await waitFor(`${node} ready`, async () => (await readFile(join(guestsDir, node, 'console.log'), 'utf8').catch(() => '')).includes('nodemgr-ready'), 300_000);
        return Date.now();
      };
      const ready = Math.max(...(await Promise.all([`vc.${name}.frontend`, `vc.${name}.compute-0`].map(readyOf))));
      // nodemgr's share: from the request until QEMU starts the frontend (every node defined and injected by then).
      rows.push({ whole, share: frontendStarted - started, boot: ready - frontendStarted });
      await vc('shutdown', name);
      await vc('clean', name);
    }
  } finally {
    await stopDaemonProcess(daemon);
    repo.close();
    await document.close();
    await box.cleanup();
  }
  console.log(`\nvc boot testvc 2: a frontend (1 vCPU) and a compute (2 vCPUs), ${runs} runs, median`);
  console.log(`   first fetch of the image (gzip, 16 MiB, into the cache): ${s(firstFetch)}`);
  console.log(`   nodemgr's share (packing, lease, network, overlays, vc-out.xml injected, definitions): ${s(median(rows.map((r) => r.share)))}`);
  console.log(`   the guests' boots to their ready lines (frontend, then computes, clock wait 1 s):  ${s(median(rows.map((r) => r.boot)))}`);
  console.log(`   the whole vc boot (until every node is started):                               ${s(median(rows.map((r) => r.whole)))}`);
}

await main();
