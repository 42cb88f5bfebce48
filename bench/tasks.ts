// On-demand guests for real, with the real daemon and libvirtd (software emulation) and the test
// guest (Debian's kernel, a busybox initramfs with Debian's qemu-ga):
//   1. reserve -> Running:Executing of one task: the whole, the guest's own boot (its agent's first
//      answer, from the daemon's `guest ready … boot_ms`) and nodemgr's share (the rest);
//   2. 10 instances launched at once, until every one's agent answers (Running:Executing);
//   3. stage-in of a 64 MiB file from a loopback HTTP server into a guest (fetch, staging disk,
//      copy in the guest), in MB/s, beside `cp` of the same file on the host.
// Prints figures only; no thresholds. Needs root and libvirtd (test/libvirt-setup.sh); without them
// it says why and exits 0. Removes its domains and files, also after a failure.
//
//   node --import tsx bench/tasks.ts [runs of 1 and 3, default 3]
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { xsdlJob, type JobParts } from '../test/support/xsdl.js';
import { buildTestGuest, type TestGuest } from '../test/system/support/guest.js';
import { cli, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess, waitFor, type DaemonProcess, type Sandbox } from '../test/system/support/host.js';
import { fileUri, libvirtUnavailable } from '../test/system/support/libvirt.js';
import { slicesXml } from '../test/system/support/slices.js';
import { median } from './lib/median.js';

const run = promisify(execFile);
const URI = 'qemu:///system';
const runs = Number(process.argv[2] ?? 3);
const INSTANCES = 10;
const STAGE_BYTES = 64 << 20;

interface Node {
  box: Sandbox;
  daemon: DaemonProcess;
  cli(...args: string[]): Promise<unknown>;
}

async function startNode(guest: TestGuest): Promise<Node & { close(): Promise<void> }> {
  const document = await serveDocument(slicesXml(1_800_000_000, []));
  const box = await sandbox({ authority_url: document.url, guest_accel: 'qemu', task_start_timeout: 300, cpu_overcommit: 20, mem_overcommit: 2 });
  const pool = Array.from({ length: INSTANCES + 2 }, (_, i) => `52:54:00:4e:42:${(i + 1).toString(16).padStart(2, '0')} 192.0.2.${100 + i}/24`);
  await writeFile(join(box.dir, 'mac-addresses'), `${pool.join('\n')}\n`);
  const daemon = startDaemonProcess(box.config);
  const node = {
    box, daemon,
    cli: async (...args: string[]) => JSON.parse((await run(process.execPath, [cli, ...args, '--json', '--config', box.config], { maxBuffer: 1 << 24 })).stdout) as unknown,
    async close() {
      await stopDaemonProcess(daemon);
      const { stdout } = await run('virsh', ['-c', URI, 'list', '--all', '--name']);
      for (const name of stdout.split('\n').map((l) => l.trim()).filter((l) => /^(task|instance)\.[0-9a-f]{8}$/.test(l))) {
        const xml = (await run('virsh', ['-c', URI, 'dumpxml', name]).catch(() => ({ stdout: '' }))).stdout;
        if (!xml.includes(box.dir)) continue;
        await run('virsh', ['-c', URI, 'destroy', name]).catch(() => undefined);
        await run('virsh', ['-c', URI, 'undefine', name]).catch(() => undefined);
      }
      await document.close();
      await box.cleanup();
    },
  };
  await waitFor('the API', async () => { await node.cli('instance', 'ls'); return true; }, 60_000);
  for (const [file, type, name] of [[guest.kernel, 'kernel', 'k'], [guest.initrd, 'initrd', 'i'], [guest.disk, 'image', 'd']] as const) {
    await run(process.execPath, [cli, 'image', 'add', fileUri(file), '--type', type, '--desc', name, '--name', name, '--config', box.config]);
  }
  return node;
}

interface Status { task_id: string; state: string; times: Record<string, string>; reason: string | null }

async function submitAndWait(node: Node, parts: JobParts, until: string): Promise<Status> {
  const file = join(node.box.dir, `job-${randomBytes(4).toString('hex')}.xsdl`);
  await writeFile(file, xsdlJob({ kernel: 'k', initrd: 'i', ...parts }));
  const { ticket } = (await node.cli('task', 'submit', file)) as { ticket: string };
  return waitFor(`the task to reach ${until}`, async () => {
    const [status] = (await node.cli('task', 'status', ticket)) as Status[];
    if (status!.state === 'Failed' || status!.state === 'Terminated') throw new Error(`${status!.state}: ${status!.reason}`);
    return status!.times[until] !== undefined ? status : null;
  }, { timeoutMs: 600_000, intervalMs: 100 });
}

/** The daemon's boot_ms of the guest of a task (the agent's first answer after the domain started). */
function bootMs(daemon: DaemonProcess, taskId: string): number {
  const line = daemon.output().split('\n').find((l) => l.includes('guest ready') && l.includes(`task.${taskId}`));
  return Number(/boot_ms=(\d+)/.exec(line ?? '')?.[1] ?? NaN);
}

const seconds = (ms: number) => (ms / 1000).toFixed(2);
const span = (s: Status, from: string, to: string) => Date.parse(s.times[to]!) - Date.parse(s.times[from]!);

async function reserveToExecuting(node: Node): Promise<void> {
  const rows: Array<{ total: number; boot: number }> = [];
  for (let i = 0; i < runs; i++) {
    const status = await submitAndWait(node, { executable: '/bin/true' }, 'execution-start');
    rows.push({ total: span(status, 'submit', 'execution-start'), boot: bootMs(node.daemon, status.task_id) });
  }
  console.log(`\n1. reserve -> Running:Executing (${runs} tasks, one at a time; median)`);
  console.log('   whole        guest boot (agent answers)   nodemgr\'s share');
  const total = median(rows.map((r) => r.total));
  const boot = median(rows.map((r) => r.boot));
  console.log(`   ${seconds(total).padStart(6)} s   ${seconds(boot).padStart(6)} s                      ${seconds(total - boot).padStart(6)} s`);
}

async function tenInstances(node: Node): Promise<void> {
  const started = Date.now();
  const launched = (await node.cli('instance', 'launch', 'd', '--kernel', 'k', '--initrd', 'i', '--count', String(INSTANCES))) as Array<{ id: string }>;
  const answered = Date.now();
  const firsts: number[] = [];
  await waitFor('every instance to answer its agent', async () => {
    const rows = (await node.cli('instance', 'ls')) as Array<{ id: string; state: string }>;
    const up = rows.filter((r) => r.state === 'Running:Executing').length;
    while (firsts.length < up) firsts.push(Date.now() - started);
    if (rows.some((r) => r.state === 'Failed')) throw new Error('an instance failed');
    return up === INSTANCES;
  }, { timeoutMs: 1_200_000, intervalMs: 200 });
  console.log(`\n2. ${INSTANCES} instances launched at once (small: 1 vCPU / 512 MiB each, on ${availableParallelism()} CPUs)`);
  console.log(`   LaunchInstances answered in ${seconds(answered - started)} s; first agent answered after ${seconds(firsts[0]!)} s, `
    + `half after ${seconds(firsts[INSTANCES / 2 - 1]!)} s, all after ${seconds(firsts[INSTANCES - 1]!)} s`);
  await node.cli('instance', 'terminate', ...launched.map((l) => l.id));
}

async function stageIn(node: Node): Promise<void> {
  const file = join(node.box.dir, 'input.bin');
  await writeFile(file, randomBytes(STAGE_BYTES));
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': String(STAGE_BYTES) });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const uri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/input.bin`;
  const rows: Array<{ host: number; guest: number }> = [];
  for (let i = 0; i < runs; i++) {
    const status = await submitAndWait(node, { executable: '/bin/true', stageIn: [{ name: 'input.bin', uri }] }, 'execution-start');
    // Host: fetch and staging disk; guest: mount and copy (the time to Executing less the boot).
    rows.push({ host: span(status, 'stage-in-start', 'instance-start'), guest: span(status, 'instance-start', 'execution-start') - bootMs(node.daemon, status.task_id) });
  }
  server.close();
  const cpStarted = process.hrtime.bigint();
  await run('cp', [file, `${file}.copy`]);
  const cpMs = Number(process.hrtime.bigint() - cpStarted) / 1e6;
  const mbps = (ms: number) => (STAGE_BYTES / 1e6 / (ms / 1000)).toFixed(1).padStart(7);
  const host = median(rows.map((r) => r.host));
  const guest = median(rows.map((r) => r.guest));
  console.log(`\n3. stage-in of ${STAGE_BYTES >> 20} MiB from loopback HTTP into a virtual machine (${runs} runs; median)`);
  console.log('   way                                             time       MB/s');
  console.log(`   nodemgr: fetch + staging disk (host)          ${seconds(host).padStart(6)} s ${mbps(host)}`);
  console.log(`   nodemgr: mount + copy in the guest            ${seconds(guest).padStart(6)} s ${mbps(guest)}`);
  console.log(`   nodemgr: the whole stage-in                   ${seconds(host + guest).padStart(6)} s ${mbps(host + guest)}`);
  console.log(`   cp of the same file on the host (ceiling)     ${seconds(cpMs).padStart(6)} s ${mbps(cpMs)}`);
}

async function main(): Promise<void> {
  const reason = await libvirtUnavailable(URI);
  if (reason !== null) {
    console.log(`bench/tasks: skipped: ${reason}`);
    return;
  }
  console.log(`bench/tasks: ${cpus()[0]?.model ?? 'cpu'} x${availableParallelism()}, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}; software emulation`);
  const guest = await buildTestGuest();
  const node = await startNode(guest);
  try {
    await reserveToExecuting(node);
    await stageIn(node);
    await tenInstances(node);
  } finally {
    await node.close();
  }
}

await main();
