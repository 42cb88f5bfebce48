// Injection of a virtual cluster node's files into its qcow2 overlay, for real: QEMU's storage
// daemon exports the overlay through FUSE (root here) and debugfs writes into the file system.
// What was written is read back from a raw copy of the overlay with debugfs, and the guest itself
// shows it when booted under libvirtd.
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { InjectError, injectIntoOverlay, RENAMED_SUFFIX } from '../../src/clusters/inject.js';
import { buildTestGuest, VC_OUT_BEGIN, VC_OUT_END } from './support/guest.js';
import { accountPrefix, isRoot, run, waitFor } from './support/host.js';
import { libvirtUnavailable } from './support/libvirt.js';
import { buildVcDisk, VC_DISK_FILES, type VcDisk } from './support/vc-disk.js';

async function unavailable(): Promise<string | null> {
  if (!isRoot) return 'not root: the storage daemon mounts its FUSE export, which needs root here';
  for (const tool of ['qemu-storage-daemon', 'debugfs', 'blkid', 'sfdisk', 'mkfs.ext2', 'qemu-img']) {
    try {
      await run('sh', ['-c', `command -v ${tool}`]);
    } catch {
      return `${tool} is not installed (test/libvirt-setup.sh installs it)`;
    }
  }
  if (!(await readFile('/proc/filesystems', 'utf8')).includes('\tfuse\n')) return 'the kernel has no FUSE';
  return null;
}

const reason = await unavailable();
const bootReason = reason ?? (await libvirtUnavailable('qemu:///system'));
const serial = reason === null ? test.serial : test.serial.skip;
if (reason !== null) test.skip(`injection tests: ${reason}`, () => undefined);
if (reason === null && bootReason !== null) test.skip(`booting an injected guest: ${bootReason}`, () => undefined);

const VC_OUT = '<?xml version="1.0"?>\n<vc><frontend fqdn="fe.example.org"><public ip="192.0.2.10"/></frontend></vc>\n';
const RENAMES = ['/etc/sysconfig/network-scripts/ifcfg-eth*', '/etc/udev/rules.d/70-persistent-net.rules'];

let dir: string;
let bare: VcDisk;
let partitioned: VcDisk;
let gpt: VcDisk;

test.before(async () => {
  if (reason !== null) return;
  dir = await mkdtemp(join(tmpdir(), 'nodemgr-vc-inject-test-'));
  await run('chmod', ['0755', dir]);
  bare = await buildVcDisk(dir, 'bare', { partitioned: false });
  partitioned = await buildVcDisk(dir, 'partitioned', { partitioned: true });
  gpt = await buildVcDisk(dir, 'gpt', { partitioned: true, gpt: true });
});

test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

async function overlayOver(base: string, name: string): Promise<string> {
  const overlay = join(dir, `${name}.qcow2`);
  await rm(overlay, { force: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, overlay]);
  return overlay;
}

/** Reads the overlay's file system as the guest would see it, from a raw copy (no mount). */
async function guestView(overlay: string, offset: number) {
  const raw = `${overlay}.view.raw`;
  await run('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', overlay, raw]);
  const spec = offset > 0 ? `${raw}?offset=${offset}` : raw;
  const debugfs = async (command: string) => (await run('debugfs', ['-R', command, spec])).stdout;
  const names = async (path: string) => new Map(
    (await debugfs(`ls -p ${path}`)).split('\n').map((l) => /^\/\d+\/([0-7]+)\/(\d+)\/(\d+)\/(.*)\/\d*\/$/.exec(l)).filter((m) => m !== null)
      .map((m) => [m[4]!, { mode: parseInt(m[1]!, 8), uid: Number(m[2]), gid: Number(m[3]) }]),
  );
  // e2fsck on a copy: a clean check means the writes left the file system consistent
  const fsck = await run('e2fsck', ['-fn', spec]).then(() => 'clean', (e: { stdout?: string }) => e.stdout ?? 'failed');
  return { debugfs, names, fsck, done: () => rm(raw, { force: true }) };
}

/** What of an injection is left on the host: FUSE mounts, storage daemons, loop devices, work directories. */
async function leftovers(overlay: string): Promise<string[]> {
  const found: string[] = [];
  for (const line of (await readFile('/proc/mounts', 'utf8')).split('\n')) if (line.includes('nodemgr-inject-')) found.push(`mount: ${line}`);
  for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(overlay)) found.push(`process ${pid}: ${cmdline.replace(/\0/g, ' ')}`);
  }
  const loops = (await run('losetup', ['-a'])).stdout;
  if (loops.includes(overlay) || loops.includes('nodemgr-inject-')) found.push(`loop: ${loops}`);
  for (const name of await readdir(tmpdir())) if (name.startsWith('nodemgr-inject-')) found.push(`directory: ${name}`);
  return found;
}

async function checkInjected(t: ExecutionContext, disk: VcDisk, name: string, partition: number | null) {
  const before = await sha256(disk.qcow2);
  const overlay = await overlayOver(disk.qcow2, name);
  const report = await injectIntoOverlay(overlay, [{ path: '/root/vc-out.xml', content: VC_OUT, mode: 0o600 }], RENAMES);
  t.like(report.fileSystem, { type: 'ext2', partition, offset: disk.offset });
  t.deepEqual(report.written, ['/root/vc-out.xml']);
  t.deepEqual(report.renamed.map((r) => r.from).sort(), ['/etc/sysconfig/network-scripts/ifcfg-eth0', '/etc/udev/rules.d/70-persistent-net.rules']);
  t.log(`${name}: injected in ${report.durationMs} ms`);

  const view = await guestView(overlay, disk.offset);
  try {
    t.is(await view.debugfs('cat /root/vc-out.xml'), VC_OUT);
    t.deepEqual((await view.names('/root')).get('vc-out.xml'), { mode: 0o100600, uid: 0, gid: 0 });
    const scripts = await view.names('/etc/sysconfig/network-scripts');
    t.false(scripts.has('ifcfg-eth0'), 'ifcfg-eth0 is moved away');
    t.true(scripts.has(`ifcfg-eth0${RENAMED_SUFFIX}`));
    t.true(scripts.has('ifcfg-lo'), 'a name that does not match stays');
    t.is(await view.debugfs(`cat /etc/sysconfig/network-scripts/ifcfg-eth0${RENAMED_SUFFIX}`), VC_DISK_FILES['/etc/sysconfig/network-scripts/ifcfg-eth0']!);
    t.deepEqual([...(await view.names('/etc/udev/rules.d')).keys()].filter((n) => n !== '.' && n !== '..'), [`70-persistent-net.rules${RENAMED_SUFFIX}`]);
    t.is(view.fsck, 'clean');
  } finally {
    await view.done();
  }
  t.is(await sha256(disk.qcow2), before, 'the base image is byte-identical');
  t.deepEqual(await leftovers(overlay), []);
  return overlay;
}

serial('files go into an overlay over a bare ext2 image; the network configuration is moved aside; the base is untouched', async (t) => {
  const overlay = await checkInjected(t, bare, 'bare-node', null);
  // Again on the same overlay (a node given a new vc-out.xml): the file is replaced, nothing else moves.
  const again = await injectIntoOverlay(overlay, [{ path: '/root/vc-out.xml', content: 'second\n', mode: 0o644 }, { path: '/etc/nodemgr/new/deep.conf', content: Buffer.from([0, 1, 2]), mode: 0o640 }], RENAMES);
  t.deepEqual(again.renamed, []);
  const view = await guestView(overlay, 0);
  try {
    t.is(await view.debugfs('cat /root/vc-out.xml'), 'second\n');
    t.deepEqual((await view.names('/etc/nodemgr/new')).get('deep.conf'), { mode: 0o100640, uid: 0, gid: 0 });
    t.like((await view.names('/etc/nodemgr')).get('new'), { mode: 0o040755 });
    t.is(view.fsck, 'clean');
  } finally {
    await view.done();
  }
});

serial('files go into the Linux partition of an overlay over an MBR-partitioned image', async (t) => {
  await checkInjected(t, partitioned, 'partitioned-node', 1);
});

serial('files go into the Linux partition of an overlay over a GPT-partitioned image', async (t) => {
  await checkInjected(t, gpt, 'gpt-node', 1);
});

serial('a corrupt overlay fails with an InjectError and leaves no mount, loop device or storage daemon', async (t) => {
  const overlay = join(dir, 'corrupt.qcow2');
  await writeFile(overlay, createHash('sha512').update('not an image').digest().toString('hex').repeat(4096));
  const error = await t.throwsAsync(injectIntoOverlay(overlay, [{ path: '/root/vc-out.xml', content: VC_OUT, mode: 0o600 }], RENAMES), { instanceOf: InjectError });
  t.regex(error!.message, /the image is corrupt: .*not in qcow2 format/);
  t.is(error!.overlay, overlay);
  t.deepEqual(await leftovers(overlay), []);
});

serial('an overlay whose disk holds no file system fails naming it, and cleans up after the export', async (t) => {
  const empty = join(dir, 'empty.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', empty, '32M']);
  const overlay = await overlayOver(empty, 'empty-node');
  const error = await t.throwsAsync(injectIntoOverlay(overlay, [{ path: '/root/vc-out.xml', content: VC_OUT, mode: 0o600 }], RENAMES), { instanceOf: InjectError });
  t.is(error!.message, `injecting into ${overlay}: no Linux file system found in ${overlay} (neither a file system nor a partition table is on the disk)`);
  t.deepEqual(await leftovers(overlay), []);
});

serial('a file system whose journal needs recovery is refused: its replay at boot would undo the writes', async (t) => {
  const raw = join(dir, 'dirty.raw');
  await run('mkfs.ext4', ['-q', '-F', raw, '16M']);
  await run('debugfs', ['-w', '-R', 'feature needs_recovery', raw]);
  const base = join(dir, 'dirty.qcow2');
  await run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, base]);
  const overlay = await overlayOver(base, 'dirty-node');
  const error = await t.throwsAsync(injectIntoOverlay(overlay, [{ path: '/root/vc-out.xml', content: VC_OUT, mode: 0o600 }], []), { instanceOf: InjectError });
  t.regex(error!.message, /the ext4 file system: its journal needs recovery/);
  t.deepEqual(await leftovers(overlay), []);
});

serial('an overlay in use by another process is refused', async (t) => {
  const overlay = await overlayOver(bare.qcow2, 'busy-node');
  const scratch = await mkdtemp(join(tmpdir(), 'nodemgr-busy-'));
  const holder = join(scratch, 'disk');
  await writeFile(holder, '');
  await run('qemu-storage-daemon', ['--blockdev', `driver=file,node-name=f,filename=${overlay}`, '--blockdev', 'driver=qcow2,node-name=q,file=f',
    '--export', `type=fuse,id=e,node-name=q,mountpoint=${holder},writable=on`, '--pidfile', join(scratch, 'pid'), '--daemonize']);
  const pid = Number((await readFile(join(scratch, 'pid'), 'utf8')).trim());
  try {
    const error = await t.throwsAsync(injectIntoOverlay(overlay, [{ path: '/root/vc-out.xml', content: VC_OUT, mode: 0o600 }], []), { instanceOf: InjectError });
    t.regex(error!.message, /the image is in use/);
  } finally {
    process.kill(pid, 'SIGTERM');
    await waitFor('the holder to stop', async () => !(await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')), 15_000);
    await run('umount', [holder]).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  }
  t.deepEqual(await leftovers(overlay), []);
});

(bootReason === null ? test.serial : test.serial.skip)('a guest booted from an injected overlay under libvirtd shows the injected vc-out.xml on its console', async (t) => {
  t.timeout(10 * 60_000, 'building the test guest, one boot under software emulation');
  const guest = await buildTestGuest();
  const overlay = await overlayOver(partitioned.qcow2, 'booted-node');
  const before = await sha256(partitioned.qcow2);
  await injectIntoOverlay(overlay, [{ path: '/root/vc-out.xml', content: VC_OUT, mode: 0o600 }], RENAMES);
  await run('chmod', ['0644', overlay]);
  const name = `${accountPrefix()}vcnode`;
  const consoleLog = join(dir, 'booted-node.console');
  const xml = `<domain type='qemu'><name>${name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>${guest.kernel}</kernel><initrd>${guest.initrd}</initrd><cmdline>console=ttyS0</cmdline></os>
  <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${overlay}'/><target dev='vda' bus='virtio'/></disk>
  <serial type='file'><source path='${consoleLog}'/><target port='0'/></serial></devices></domain>`;
  const xmlFile = join(dir, 'booted-node.xml');
  await writeFile(xmlFile, xml);
  await run('virsh', ['-c', 'qemu:///system', 'create', xmlFile]);
  try {
    await waitFor('the ready line', async () => (await readFile(consoleLog, 'utf8').catch(() => '')).includes(guest.marker), 300_000);
    const text = (await readFile(consoleLog, 'utf8')).replace(/\r/g, '');
    const shown = new RegExp(`${VC_OUT_BEGIN} (\\S+)\\n([\\s\\S]*?)${VC_OUT_END}`).exec(text);
    t.truthy(shown, 'the guest printed its vc-out.xml');
    t.is(shown![1], '/dev/vda1');
    t.is(shown![2], VC_OUT);
  } finally {
    await run('virsh', ['-c', 'qemu:///system', 'destroy', name]).catch(() => undefined);
  }
  t.is(await sha256(partitioned.qcow2), before, 'the base image is byte-identical after the boot too');
});
