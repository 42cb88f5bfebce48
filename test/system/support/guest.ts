// The small guest that the libvirt system tests boot under QEMU (software emulation is enough):
// Debian's kernel, taken out of its package without installing it, and an initramfs of
// busybox-static whose /init prints a line containing `nodemgr-ready` on the console (ttyS0) and
// then keeps a shell on it (having first shown a virtual cluster node's injected vc-out.xml, when
// one of its disks holds one). The initramfs also holds QEMU's guest agent (qemu-ga and the libraries
// it loads, from Debian's package: guest-agent-files.ts), which /init starts when the domain has
// the agent's channel; a variant leaves the agent out. Built once and kept in a directory named by a hash of what went into it,
// so that later runs (and other test files) reuse it.
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand } from '../../../src/host/exec.js';
import { AGENT_BINARY, agentFiles, agentPackageVersion, type GuestFile } from './guest-agent-files.js';

export interface TestGuest {
  /** Debian's kernel (vmlinuz) for direct kernel boot. */
  kernel: string;
  /** The initramfs whose /init reports ready. */
  initrd: string;
  /** The same initramfs, except that it never reports ready. */
  silentInitrd: string;
  /** The same initramfs without the guest agent: it reports ready, but no agent ever answers. */
  agentlessInitrd: string;
  /** An empty 64 MiB qcow2 image, a base for overlays. */
  disk: string;
  /** The marker the guest prints, on a line that goes on with what it saw (see GUEST_INIT). */
  marker: string;
}

export const READY_MARKER = 'nodemgr-ready';
/** The lines around the /root/vc-out.xml that the guest found on a disk (see GUEST_INIT). */
export const VC_OUT_BEGIN = 'nodemgr-vc-out-begin';
export const VC_OUT_END = 'nodemgr-vc-out-end';
/** The lines a cluster node writes of its private network: its address, and a compute's ping of the frontend. */
export const VC_NET_PREFIX = 'nodemgr-vc-net';

/** Where buildTestGuest keeps its builds unless told otherwise. */
export const DEFAULT_GUEST_CACHE = join(tmpdir(), 'nodemgr-test-guest');

// Loaded in this order (each after what it depends on, as the modules' "depends=" say): virtio PCI
// devices (disk and network, so that the guest can say which it sees; the console device that
// carries the agent's channel), ext4 (so that a staging disk can be mounted), and the ACPI power
// button with evdev (so that a shutdown request from libvirt powers the guest off). ext4 and jbd2
// ask the crypto layer for crc32c, which nothing would load for them without modprobe.
const MODULES = [
  'drivers/virtio/virtio_ring.ko',
  'drivers/virtio/virtio.ko',
  'drivers/virtio/virtio_pci_legacy_dev.ko',
  'drivers/virtio/virtio_pci_modern_dev.ko',
  'drivers/virtio/virtio_pci.ko',
  'drivers/block/virtio_blk.ko',
  'net/core/failover.ko',
  'drivers/net/net_failover.ko',
  'drivers/net/virtio_net.ko',
  'drivers/char/virtio_console.ko',
  'lib/crc16.ko',
  'fs/mbcache.ko',
  'crypto/crc32c_generic.ko',
  'fs/jbd2/jbd2.ko',
  'fs/ext4/ext4.ko',
  'drivers/acpi/button.ko',
  'drivers/input/evdev.ko',
];

/** The agent's channel, as nodemgr names it in the domain. */
const AGENT_CHANNEL = 'org.qemu.guest_agent.0';

// The ready line reads, for example:
//   nodemgr-ready mac=52:54:00:00:00:01, disk=vda:131072, cmdline=console=ttyS0 nodemgr.x=1
// mac: the guest's network interfaces' addresses; disk: its virtio disks with their size in
// 512-byte sectors; cmdline: the kernel command line, last because it has spaces. With the word
// nodemgr.silent on the command line, or in the silent initramfs, the line is never printed.
// Before it, a disk with an ext2/3/4 file system holding /root/vc-out.xml has that file printed
// between a line starting with VC_OUT_BEGIN (and the device) and a VC_OUT_END line.
const GUEST_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for module in ${MODULES.map((m) => m.replace(/^.*\//, '').replace(/\.ko$/, '')).join(' ')}; do
  insmod /lib/modules/$module.ko 2>/dev/null
done
for event in /sys/class/input/event*; do
  if grep -q 'Power Button' "$event/device/name" 2>/dev/null; then
    (head -c 1 "/dev/input/\${event##*/}" >/dev/null && poweroff -f) &
  fi
done
# The agent's port: without udev nothing makes /dev/virtio-ports/NAME, so it is made here from the
# names the ports have in sysfs. The host adds ports after the driver loaded, so they are waited
# for in the background, and only where there is a virtio-serial device at all.
if [ -x /${AGENT_BINARY} ] && [ -n "$(ls /sys/bus/virtio/drivers/virtio_console 2>/dev/null | grep virtio)" ]; then
  (
    for try in $(seq 100); do
      for port in /sys/class/virtio-ports/*; do
        [ "$(cat "$port/name" 2>/dev/null)" = ${AGENT_CHANNEL} ] || continue
        mkdir -p /dev/virtio-ports /var/run /var/log
        ln -sf "../\${port##*/}" /dev/virtio-ports/${AGENT_CHANNEL}
        exec /${AGENT_BINARY} --daemonize --pidfile=/var/run/qemu-ga.pid --method=virtio-serial --path=/dev/virtio-ports/${AGENT_CHANNEL} --logfile=/var/log/qemu-ga.log </dev/null >/dev/null 2>&1
      done
      sleep 0.2
    done
  ) &
fi
mac=
for net in /sys/class/net/*; do
  [ "\${net##*/}" = lo ] || mac="$mac$(cat "$net/address"),"
done
disk=
for block in /sys/block/vd*; do
  [ -e "$block" ] && disk="$disk\${block##*/}:$(cat "$block/size"),"
done
# A virtual cluster node's disk: the first ext2/3/4 file system (whole disk or partition) that
# holds /root/vc-out.xml is shown between marker lines, read-only, and let go before the ready line.
# The node then takes the private address vc-out.xml gives its first interface's MAC, and a compute
# pings its gateway (the frontend) and says whether it answered, as pragma's images configure
# themselves from the file.
vc_node_network() {
  mac0=$(cat /sys/class/net/eth0/address)
  line=$(grep "mac=\\"$mac0\\"" /tmp/vc-out.xml | head -n 1)
  ip=$(echo "$line" | sed -n 's/.* ip="\\([0-9.]*\\)".*/\\1/p')
  mask=$(echo "$line" | sed -n 's/.* netmask="\\([0-9.]*\\)".*/\\1/p')
  [ -n "$ip" ] || return
  ifconfig eth0 "$ip" netmask "$mask" up
  echo "${VC_NET_PREFIX} address $ip"
  gw=$(sed -n -e 's/.*<compute .*gw="\\([0-9.]*\\)".*/\\1/p' -e 's/.*<node .*gw="\\([0-9.]*\\)".*/\\1/p' /tmp/vc-out.xml | head -n 1)
  [ -n "$gw" ] || return
  for try in $(seq 60); do
    if ping -c 1 -W 1 "$gw" >/dev/null 2>&1; then echo "${VC_NET_PREFIX} ping $gw answered"; return; fi
    sleep 1
  done
  echo "${VC_NET_PREFIX} ping $gw unanswered"
}
mkdir -p /mnt/vc
for dev in /dev/vd[a-z] /dev/vd[a-z][0-9]; do
  [ -b "$dev" ] || continue
  mount -t ext4 -o ro "$dev" /mnt/vc 2>/dev/null || continue
  if [ -f /mnt/vc/root/vc-out.xml ]; then
    echo "${VC_OUT_BEGIN} $dev"
    cat /mnt/vc/root/vc-out.xml
    echo "${VC_OUT_END}"
    cp /mnt/vc/root/vc-out.xml /tmp/vc-out.xml
    umount /mnt/vc
    vc_node_network &
    break
  fi
  umount /mnt/vc
done
if [ -e /etc/nodemgr-silent ] || grep -qw nodemgr.silent /proc/cmdline; then
  echo "guest up; silent, as asked"
else
  echo "${READY_MARKER} mac=$mac disk=$disk cmdline=$(cat /proc/cmdline)"
fi
while true; do
  setsid cttyhack sh
done
`;

const BUSYBOX = '/bin/busybox';

const building = new Map<string, Promise<TestGuest>>();

/**
 * The test guest's files, built under cacheDir (created 0755, files 0644: QEMU runs as another
 * user and must reach them) unless a build of the same inputs is there already. Needs root for
 * nothing but apt-get download; needs busybox-static, qemu-utils and Debian's package lists.
 */
export function buildTestGuest(cacheDir: string = DEFAULT_GUEST_CACHE): Promise<TestGuest> {
  let build = building.get(cacheDir);
  if (!build) {
    build = buildOnce(cacheDir);
    building.set(cacheDir, build);
    build.catch(() => building.delete(cacheDir));
  }
  return build;
}

async function buildOnce(cacheDir: string): Promise<TestGuest> {
  const kernelPackage = await kernelPackageName();
  const agentVersion = await agentPackageVersion();
  const key = createHash('sha256')
    .update(JSON.stringify([kernelPackage, agentVersion, GUEST_INIT, MODULES, INITRD_LAYOUT]))
    .update(await readFile(BUSYBOX))
    .digest('hex')
    .slice(0, 16);
  await mkdir(cacheDir, { recursive: true });
  await chmod(cacheDir, 0o755);
  const dir = join(cacheDir, key);
  const guest = filesIn(dir);
  if (await exists(join(dir, 'complete'))) return guest;

  const work = await mkdtemp(join(cacheDir, '.build-'));
  try {
    const out = join(work, 'out');
    await mkdir(out);
    const kernelVersion = await unpackKernel(kernelPackage, work, out);
    const modules = join(work, 'deb', 'lib', 'modules', kernelVersion, 'kernel');
    const agent = await agentFiles();
    await writeFile(join(out, 'initrd.cpio'), await initramfs(modules, agent, false));
    await writeFile(join(out, 'silent-initrd.cpio'), await initramfs(modules, agent, true));
    await writeFile(join(out, 'agentless-initrd.cpio'), await initramfs(modules, [], false));
    await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', join(out, 'base.qcow2'), '64M']);
    await writeFile(join(out, 'complete'), `${kernelPackage}\n`);
    for (const name of await readdir(out)) await chmod(join(out, name), 0o644);
    await chmod(out, 0o755);
    // another process may have finished the same build meanwhile: then its copy stands
    await rename(out, dir).catch(async (err: NodeJS.ErrnoException) => {
      if (!(await exists(join(dir, 'complete')))) throw err;
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return guest;
}

function filesIn(dir: string): TestGuest {
  return {
    kernel: join(dir, 'vmlinuz'),
    initrd: join(dir, 'initrd.cpio'),
    silentInitrd: join(dir, 'silent-initrd.cpio'),
    agentlessInitrd: join(dir, 'agentless-initrd.cpio'),
    disk: join(dir, 'base.qcow2'),
    marker: READY_MARKER,
  };
}

/** The versioned kernel package that Debian's linux-image-amd64 points at now. */
async function kernelPackageName(): Promise<string> {
  const lookup = async () => {
    const { stdout } = await runCommand('apt-cache', ['depends', 'linux-image-amd64']).catch(() => ({ stdout: '' }));
    return /Depends:\s*(linux-image-\S+-amd64)\b/.exec(stdout)?.[1];
  };
  // package lists that were never fetched list nothing: fetch them once
  const name = (await lookup()) ?? (await runCommand('apt-get', ['update', '-qq'], { timeoutMs: 600_000 }), await lookup());
  if (!name) throw new Error('test guest: apt-cache depends linux-image-amd64 names no kernel package');
  return name;
}

/** Downloads the kernel package into work, unpacks it to work/deb, copies vmlinuz to out. */
async function unpackKernel(kernelPackage: string, work: string, out: string): Promise<string> {
  // as root apt hands downloads to its sandbox user, which cannot enter a 0700 directory
  const download = () =>
    runCommand('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', kernelPackage], { cwd: work, timeoutMs: 600_000 });
  // package lists older than the mirror name a file that is gone: fetch them and try once more
  await download().catch(async () => {
    await runCommand('apt-get', ['update', '-qq'], { timeoutMs: 600_000 });
    await download();
  });
  const deb = (await readdir(work)).find((name) => name.startsWith(`${kernelPackage}_`) && name.endsWith('.deb'));
  if (!deb) throw new Error(`test guest: apt-get download ${kernelPackage} left no .deb in ${work}`);
  await runCommand('dpkg-deb', ['-x', join(work, deb), join(work, 'deb')], { timeoutMs: 300_000 });
  const vmlinuz = (await readdir(join(work, 'deb', 'boot'))).find((name) => name.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new Error(`test guest: ${deb} has no /boot/vmlinuz-*`);
  await copyFile(join(work, 'deb', 'boot', vmlinuz), join(out, 'vmlinuz'));
  return vmlinuz.slice('vmlinuz-'.length);
}

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
}

// The initramfs's directories: the agent's files go into lib/x86_64-linux-gnu, lib64 and usr/sbin.
const INITRD_LAYOUT = ['bin', 'dev', 'etc', 'lib', 'lib/modules', 'lib/x86_64-linux-gnu', 'lib64', 'mnt', 'proc', 'sys', 'tmp', 'usr', 'usr/sbin', 'var'];

async function initramfs(modules: string, agent: readonly GuestFile[], silent: boolean): Promise<Buffer> {
  const entries: CpioEntry[] = INITRD_LAYOUT.map((name) => ({ name, mode: 0o040755 }));
  entries.push({ name: 'bin/busybox', mode: 0o100755, data: await readFile(BUSYBOX) });
  entries.push({ name: 'init', mode: 0o100755, data: Buffer.from(GUEST_INIT) });
  for (const module of MODULES) {
    entries.push({ name: `lib/modules/${module.replace(/^.*\//, '')}`, mode: 0o100644, data: await readFile(join(modules, module)) });
  }
  entries.push(...agent);
  if (silent) entries.push({ name: 'etc/nodemgr-silent', mode: 0o100644, data: Buffer.alloc(0) });
  return newcArchive(entries);
}

/**
 * An uncompressed cpio archive in the "newc" format the kernel unpacks as an initramfs: per entry
 * a header of "070701" and thirteen 8-digit hex fields, the name with its NUL, the data, each
 * padded to 4 bytes; the last entry is TRAILER!!!. Owners are root, times 0.
 */
export function newcArchive(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (buffer: Buffer) => {
    parts.push(buffer);
    offset += buffer.length;
  };
  const pad = () => {
    if (offset % 4) push(Buffer.alloc(4 - (offset % 4)));
  };
  const all = [...entries, { name: 'TRAILER!!!', mode: 0 }];
  all.forEach((entry, index) => {
    const data = entry.data ?? Buffer.alloc(0);
    const nlink = (entry.mode & 0o170000) === 0o040000 ? 2 : 1;
    const fields = [index + 1, entry.mode, 0, 0, nlink, 0, data.length, 0, 0, 0, 0, Buffer.byteLength(entry.name) + 1, 0];
    push(Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}${entry.name}\0`));
    pad();
    push(data);
    pad();
  });
  return Buffer.concat(parts);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
