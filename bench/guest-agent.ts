// Staging a task's input into a guest: 16 MiB of random bytes into a running virtual machine
// (software emulation, the test guest with Debian's qemu-ga) by three ways, side by side:
//   agent files   putFile: guest-file-open/write/close in base64 chunks through virsh qemu-agent-command
//   staging disk  an ext2 image made on the host with mkfs.ext2 -d, attached live as a second disk,
//                 mounted in the guest and copied from (the whole way: mkfs, attach, mount, cp)
//   host cp       cp of the same file on the host: the ceiling
// and, where containers run, putFile into a container (a copy through its root on the host).
// Every copy is checked (sha256 in the guest). Prints figures only; no thresholds. Needs root and
// libvirtd (test/libvirt-setup.sh); without them it says why and exits 0.
//
//   node --import tsx bench/guest-agent.ts [runs, default 2]
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { AddressBook } from '../src/addresses/address-book.js';
import { memoryLogger } from '../src/log.js';
import { GUEST_DRIVERS, GUEST_KINDS } from '../src/runtimes/libvirt/drivers/index.js';
import type { ExecRequest, GuestAgent } from '../src/runtimes/libvirt/guest-agent.js';
import type { GuestDefinition } from '../src/runtimes/libvirt/guest-definition.js';
import { createGuestLifecycle, type GuestLifecycle } from '../src/runtimes/libvirt/guests.js';
import { libvirtHypervisor } from '../src/runtimes/libvirt/hypervisor.js';
import { READ_CHUNK_BYTES, WRITE_CHUNK_BYTES } from '../src/runtimes/libvirt/qemu-agent.js';
import { buildTestGuest } from '../test/system/support/guest.js';
import { libvirtUnavailable, lxcUnavailable } from '../test/system/support/libvirt.js';
import { buildTestRootfs } from '../test/system/support/rootfs.js';

const run = promisify(execFile);
const URI = 'qemu:///system';
const SIZE = 16 << 20;
const runs = Number(process.argv[2] ?? 2);

const noAddresses: AddressBook = {
  lease: async () => [], release: async () => undefined, reclaim: async () => [], holders: () => [], leasesOf: () => [],
};

function lifecycle(guestDir: string): GuestLifecycle {
  const logger = memoryLogger();
  const drivers = GUEST_KINDS.map((kind) => GUEST_DRIVERS[kind]({ hypervisor: libvirtHypervisor(`${kind}:///system`, logger), guestDir, accel: 'qemu', logger }));
  return createGuestLifecycle({
    drivers, guestDir, bridge: null, readyMarker: 'nodemgr-ready', readyTimeoutMs: 60_000, addresses: noAddresses, now: () => new Date(),
    images: { resolve: async (ref) => ({ name: ref, path: ref, format: 'raw' }) },
  }, logger);
}

/** Runs a program in the guest to its end; throws unless it exits 0. */
async function inGuest(agent: GuestAgent, request: ExecRequest): Promise<void> {
  const pid = await agent.exec(request);
  for (;;) {
    const state = await agent.execStatus(pid);
    if (state.exited) {
      if (state.exitCode !== 0) throw new Error(`${request.args.join(' ')}: exit code ${state.exitCode}, signal ${state.signal}`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The sha256 of a file in the guest, as its own sha256sum says. */
async function guestSha256(agent: GuestAgent, path: string, work: string): Promise<string> {
  await inGuest(agent, { path: '/bin/sh', args: ['-c', `sha256sum ${path} > /tmp/sum`], env: [] });
  await agent.getFile('/tmp/sum', join(work, 'sum'), 4096);
  return (await readFile(join(work, 'sum'), 'utf8')).split(' ')[0]!;
}

const timed = async (task: () => Promise<unknown>): Promise<number> => {
  const started = process.hrtime.bigint();
  await task();
  return Number(process.hrtime.bigint() - started) / 1e9;
};

interface Row { way: string; seconds: number[]; note: string }

async function stagingDisk(agent: GuestAgent, name: string, payload: string, work: string, round: number): Promise<{ total: number; parts: string }> {
  const tree = join(work, `tree-${round}`);
  const image = join(work, `staging-${round}.ext2`);
  const target = `vd${String.fromCharCode(98 + round)}`;
  await mkdir(tree);
  await run('cp', [payload, join(tree, 'payload')]);
  const mkfs = await timed(() => run('mkfs.ext2', ['-q', '-F', '-d', tree, image, `${Math.ceil((SIZE * 1.25) / (1 << 20)) + 4}M`]));
  await chmod(image, 0o644);
  const serial = `stage${round}`;
  const attach = await timed(() => run('virsh', ['-c', URI, 'attach-disk', name, image, target, '--targetbus', 'virtio', '--driver', 'qemu', '--subdriver', 'raw', '--serial', serial, '--live']));
  // The guest names its disks in the order it sees them: the staging disk is found by its serial.
  const script = [
    `for i in $(seq 300); do for b in /sys/block/vd*; do [ "$(cat $b/serial 2>/dev/null)" = ${serial} ] && dev=/dev/\${b##*/}; done; [ -n "$dev" ] && [ -b "$dev" ] && break; sleep 0.1; done`,
    `mkdir -p /mnt/${serial} && mount -o ro "$dev" /mnt/${serial} && cp /mnt/${serial}/payload /tmp/disk-staged && umount /mnt/${serial}`,
  ].join('; ');
  const copy = await timed(() => inGuest(agent, { path: '/bin/sh', args: ['-c', `exec 2>/tmp/staging-errors; ${script} || { ls /sys/block >&2; dmesg | tail -5 >&2; exit 1; }`], env: [] }).catch(async (error: unknown) => {
    await agent.getFile('/tmp/staging-errors', join(work, 'errors'), 65536);
    throw new Error(`${String(error)}: ${await readFile(join(work, 'errors'), 'utf8')}`);
  }));
  return { total: mkfs + attach + copy, parts: `mkfs ${mkfs.toFixed(2)} s, attach ${attach.toFixed(2)} s, mount+cp ${copy.toFixed(2)} s` };
}

const mbps = (seconds: number) => (SIZE / 1e6 / seconds).toFixed(2);

async function main(): Promise<void> {
  const why = await libvirtUnavailable(URI);
  if (why !== null) {
    console.log(`guest agent benchmark skipped: ${why}`);
    return;
  }
  const guest = await buildTestGuest();
  const guestDir = await mkdtemp(join(tmpdir(), 'nodemgr-bench-agent-'));
  await chmod(guestDir, 0o711);
  const work = join(guestDir, 'work');
  await mkdir(work, { mode: 0o755 });
  const guests = lifecycle(guestDir);
  const name = `nb${randomBytes(3).toString('hex')}-vm`;
  const ct = `nb${randomBytes(3).toString('hex')}-ct`;
  const made: Array<[string, 'qemu' | 'lxc']> = [];
  const rows: Row[] = [];
  try {
    const definition: GuestDefinition = {
      kind: 'qemu', boot: { image: null, kernel: guest.kernel, initrd: guest.initrd }, size: 'small', limits: {}, interfaces: 0,
      agent: true, readiness: { by: 'agent', timeoutMs: 300_000 },
    };
    await guests.create(name, definition);
    made.push([name, 'qemu']);
    await guests.start(name, definition);
    const agent = (await guests.agentFor(name))!;
    const payload = join(work, 'payload');
    await writeFile(payload, randomBytes(SIZE));
    const sum = createHash('sha256').update(await readFile(payload)).digest('hex');

    const agentRow: Row = { way: 'agent files (virtual machine)', seconds: [], note: `${WRITE_CHUNK_BYTES >> 10} KiB per guest-file-write` };
    const diskRow: Row = { way: 'staging disk (virtual machine)', seconds: [], note: '' };
    const cpRow: Row = { way: 'host cp', seconds: [], note: 'the ceiling' };
    for (let round = 0; round < runs; round++) {
      agentRow.seconds.push(await timed(() => agent.putFile(payload, '/tmp/agent-staged')));
      if ((await guestSha256(agent, '/tmp/agent-staged', work)) !== sum) throw new Error('the agent\'s copy differs');
      const disk = await stagingDisk(agent, name, payload, work, round);
      diskRow.seconds.push(disk.total);
      diskRow.note = disk.parts;
      if ((await guestSha256(agent, '/tmp/disk-staged', work)) !== sum) throw new Error('the staging disk\'s copy differs');
      cpRow.seconds.push(await timed(() => run('cp', [payload, join(work, `copy-${round}`)])));
    }
    const back = await timed(() => agent.getFile('/tmp/agent-staged', join(work, 'back'), SIZE));
    rows.push(agentRow, diskRow, cpRow);

    if ((await lxcUnavailable()) === null) {
      const rootfs = await buildTestRootfs('nodemgr-ready');
      try {
        const lxc: GuestDefinition = { kind: 'lxc', boot: { image: rootfs.ready, kernel: null, initrd: null }, size: 'small', limits: {}, interfaces: 0 };
        await guests.create(ct, lxc);
        made.push([ct, 'lxc']);
        await guests.start(ct, lxc);
        const ctAgent = (await guests.agentFor(ct))!;
        const row: Row = { way: 'agent files (container)', seconds: [], note: 'a copy through its root on the host' };
        for (let round = 0; round < runs; round++) row.seconds.push(await timed(() => ctAgent.putFile(payload, `/tmp/staged-${round}`)));
        rows.push(row);
      } finally {
        await rootfs.remove();
      }
    }

    console.log(`machine: ${cpus()[0]?.model ?? 'unknown cpu'}, ${availableParallelism()} cores, node ${process.version}; guests under software emulation (TCG); load average ${loadavg()[0]!.toFixed(2)}`);
    console.log(`staging ${SIZE >> 20} MiB of random bytes into a running guest, ${runs} run(s) each (best, then all):`);
    console.log(`${'way'.padEnd(32)} ${'best s'.padStart(8)} ${'MB/s'.padStart(8)}  runs (s)        note`);
    for (const row of rows) {
      const best = Math.min(...row.seconds);
      console.log(`${row.way.padEnd(32)} ${best.toFixed(2).padStart(8)} ${mbps(best).padStart(8)}  ${row.seconds.map((s) => s.toFixed(2)).join(' ').padEnd(15)} ${row.note}`);
    }
    console.log(`agent getFile of the same ${SIZE >> 20} MiB back out (${READ_CHUNK_BYTES >> 10} KiB per guest-file-read): ${back.toFixed(2)} s, ${mbps(back)} MB/s`);
  } finally {
    for (const [guestName, kind] of made) await guests.destroy(guestName, kind).catch((error: unknown) => console.error(`destroy ${guestName}: ${String(error)}`));
    await guests.close();
    await rm(guestDir, { recursive: true, force: true });
  }
}

await main();
