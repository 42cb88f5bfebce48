// Writing a virtual cluster node's files into its qcow2 overlay before it boots (/root/vc-out.xml
// written, ifcfg-eth0 and the udev net rule renamed), three ways, side by side:
//   guestfish        libguestfs (Debian's libguestfs-tools, direct backend): boots its appliance
//                    under QEMU for each injection; "first" includes building the appliance
//                    (supermin) into an empty cache, "steady" reuses it
//   export + mount   qemu-storage-daemon exports the overlay through FUSE as a raw file, a loop
//                    device on it, mount, write, unmount, detach, stop the daemon
//   export + debugfs the same export, debugfs writes into the ext2 file system without any mount
//                    (nodemgr's way: src/clusters/inject.ts)
// Each injection gets a fresh overlay over the same bare ext2 base, and each way's result is read
// back once. Prints seconds per injection (first, and the median of the steady ones); no
// thresholds. Needs root (FUSE, loop devices); guestfish is left out where it is not installed or
// the host has no kernel for its appliance (it says which).
//
//   node --import tsx bench/vc-inject.ts [steady runs, default 5]
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { injectIntoOverlay, RENAMED_SUFFIX } from '../src/clusters/inject.js';
import { startRawExport, stopRawExport } from '../src/clusters/inject-export.js';
import { buildVcDisk } from '../test/system/support/vc-disk.js';
import { median } from './lib/median.js';

const run = promisify(execFile);
const runs = Number(process.argv[2] ?? 5);
const VC_OUT = '<?xml version="1.0"?>\n<vc><frontend fqdn="fe.example.org"/></vc>\n';
const IFCFG = '/etc/sysconfig/network-scripts/ifcfg-eth0';
const UDEV = '/etc/udev/rules.d/70-persistent-net.rules';

type Injector = (overlay: string, work: string) => Promise<void>;

const viaDebugfs: Injector = async (overlay) => {
  await injectIntoOverlay(overlay, [{ path: '/root/vc-out.xml', content: VC_OUT, mode: 0o600 }], [
    '/etc/sysconfig/network-scripts/ifcfg-eth*',
    UDEV,
  ]);
};

const viaMount: Injector = async (overlay, work) => {
  await mkdir(work, { recursive: true });
  const mnt = join(work, 'mnt');
  await mkdir(mnt);
  let loop = '';
  let mounted = false;
  try {
    const disk = await startRawExport(overlay, work, 60_000);
    loop = (await run('losetup', ['-f', '--show', disk.file])).stdout.trim();
    await run('mount', ['-t', 'ext2', loop, mnt]);
    mounted = true;
    await writeFile(join(mnt, 'root/vc-out.xml'), VC_OUT, { mode: 0o600 });
    for (const path of [IFCFG, UDEV]) await rename(join(mnt, path), join(mnt, `${path}${RENAMED_SUFFIX}`));
  } finally {
    if (mounted) await run('umount', [mnt]);
    if (loop) await run('losetup', ['-d', loop]);
    await stopRawExport(work);
  }
};

function viaGuestfish(cacheDir: string): Injector {
  return async (overlay, work) => {
    await mkdir(work, { recursive: true });
    const local = join(work, 'vc-out.xml');
    await writeFile(local, VC_OUT);
    const script = [
      `upload ${local} /root/vc-out.xml`,
      'chmod 0600 /root/vc-out.xml',
      ...[IFCFG, UDEV].map((p) => `mv ${p} ${p}${RENAMED_SUFFIX}`),
    ].join('\n');
    const env = { ...process.env, LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_CACHEDIR: cacheDir };
    await new Promise<void>((resolve, reject) => {
      const child = execFile('guestfish', ['--rw', '-a', overlay, '-m', '/dev/sda'], { env, timeout: 900_000 }, (error, _out, stderr) =>
        error ? reject(new Error(`guestfish: ${stderr.trim() || error.message}`)) : resolve(),
      );
      child.stdin!.end(`${script}\n`);
    });
  };
}

/** Why guestfish cannot run here, or null. */
async function guestfishMissing(): Promise<string | null> {
  try {
    await run('sh', ['-c', 'command -v guestfish']);
  } catch {
    return 'guestfish is not installed (Debian package libguestfs-tools)';
  }
  const kernels = await run('sh', ['-c', 'ls /boot/vmlinuz-* 2>/dev/null']).then((r) => r.stdout.trim(), () => '');
  if (!kernels) return 'no kernel in /boot for the libguestfs appliance (Debian package linux-image-amd64)';
  return null;
}

async function readBack(overlay: string, work: string): Promise<string> {
  const raw = join(work, 'view.raw');
  await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', overlay, raw]);
  const { stdout } = await run('debugfs', ['-R', 'cat /root/vc-out.xml', raw]);
  const names = (await run('debugfs', ['-R', 'ls /etc/sysconfig/network-scripts', raw])).stdout;
  await rm(raw, { force: true });
  if (stdout !== VC_OUT) return `vc-out.xml reads ${JSON.stringify(stdout.slice(0, 40))}`;
  if (!names.includes(`ifcfg-eth0${RENAMED_SUFFIX}`)) return 'ifcfg-eth0 was not renamed';
  return 'ok';
}

async function measure(name: string, inject: Injector, base: string, dir: string) {
  const times: number[] = [];
  let check = '';
  for (let i = 0; i <= runs; i++) {
    const overlay = join(dir, `${name.replace(/\W+/g, '-')}-${i}.qcow2`);
    const work = join(dir, `work-${name.replace(/\W+/g, '-')}-${i}`);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, overlay]);
    const started = process.hrtime.bigint();
    await inject(overlay, work);
    times.push(Number(process.hrtime.bigint() - started) / 1e9);
    if (i === 0) {
      await mkdir(work, { recursive: true });
      check = await readBack(overlay, work);
    }
    await rm(work, { recursive: true, force: true });
    await rm(overlay, { force: true });
  }
  return { name, first: times[0]!, steady: median(times.slice(1)), check };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.log('bench/vc-inject: needs root (FUSE export, loop devices); skipped');
    return;
  }
  const qemu = (await run('qemu-storage-daemon', ['--version'])).stdout.split('\n')[0];
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, kernel ${release()}, ${qemu}`);
  console.log(`/dev/kvm: ${(await readFile('/dev/kvm').then(() => 'yes', (e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? 'no (QEMU under TCG)' : 'yes')))}`);
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-bench-vc-inject-'));
  await chmod(dir, 0o755);
  try {
    const disk = await buildVcDisk(dir, 'base', { partitioned: false });
    const results = [];
    results.push(await measure('export + debugfs', viaDebugfs, disk.qcow2, dir));
    results.push(await measure('export + mount', viaMount, disk.qcow2, dir));
    const missing = await guestfishMissing();
    if (missing === null) results.push(await measure('guestfish', viaGuestfish(join(dir, 'appliance-cache')), disk.qcow2, dir));
    console.log(`\nseconds per injection (first; median of ${runs} steady), 16 MiB ext2 base, fresh overlay each`);
    console.log(`${'way'.padEnd(18)} ${'first s'.padStart(8)} ${'steady s'.padStart(9)}  result`);
    for (const r of results) console.log(`${r.name.padEnd(18)} ${r.first.toFixed(2).padStart(8)} ${r.steady.toFixed(2).padStart(9)}  ${r.check}`);
    if (missing !== null) console.log(`guestfish          left out: ${missing}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
