// A small disk shaped like a virtual cluster node's image, for the injection tests and for the
// test guest (guest.ts shows what it finds in /root/vc-out.xml): an ext2 file system made by
// mkfs.ext2 -d from a directory holding /root/ and /etc/sysconfig/network-scripts/ifcfg-eth0
// (and the udev rule pragma_boot's images carry), either bare or in the first partition of an MBR
// (or GPT) table made by sfdisk, as raw and as qcow2 images. Needs e2fsprogs, fdisk and qemu-utils; no root.
import { chmod, mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand } from '../../../src/host/exec.js';

export interface VcDisk {
  /** The disk as a raw file. */
  readonly raw: string;
  /** The same disk as a qcow2 image: a base for overlays. */
  readonly qcow2: string;
  /** Where the file system starts in the disk (0 for a bare one). */
  readonly offset: number;
}

/** What the image holds before any injection: path -> content. */
export const VC_DISK_FILES: Readonly<Record<string, string>> = {
  '/etc/sysconfig/network-scripts/ifcfg-eth0': 'DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\n',
  '/etc/sysconfig/network-scripts/ifcfg-lo': 'DEVICE=lo\nIPADDR=127.0.0.1\n',
  '/etc/udev/rules.d/70-persistent-net.rules': 'SUBSYSTEM=="net", ATTR{address}=="52:54:00:00:00:01", NAME="eth0"\n',
  '/etc/hostname': 'vc-node\n',
};

const FS_MIB = 16;
const PARTITION_START_SECTOR = 2048; // 1 MiB, as partitioning tools align

/**
 * Builds the disk in `dir` (made 0755, files 0644 so that QEMU, running as its own user, can read
 * them): `<name>.raw` and `<name>.qcow2`.
 */
export async function buildVcDisk(dir: string, name: string, opts: { partitioned: boolean; gpt?: boolean }): Promise<VcDisk> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tree = await mkdtemp(join(tmpdir(), 'nodemgr-vc-tree-'));
  const raw = join(dir, `${name}.raw`);
  const qcow2 = join(dir, `${name}.qcow2`);
  try {
    await mkdir(join(tree, 'root'), { mode: 0o700 });
    for (const [path, content] of Object.entries(VC_DISK_FILES)) {
      await mkdir(join(tree, path, '..'), { recursive: true });
      await writeFile(join(tree, path), content, { mode: 0o644 });
    }
    const fsImage = opts.partitioned ? join(tree, '..', `${name}-fs-${process.pid}.img`) : raw;
    await rm(fsImage, { force: true });
    await runCommand('mkfs.ext2', ['-q', '-F', '-L', 'vcroot', '-d', tree, fsImage, `${FS_MIB}M`]);
    let offset = 0;
    if (opts.partitioned) {
      offset = PARTITION_START_SECTOR * 512;
      await partitionedDisk(raw, fsImage, offset, opts.gpt === true);
      await rm(fsImage, { force: true });
    }
    await runCommand('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    for (const file of [raw, qcow2]) await chmod(file, 0o644);
    return { raw, qcow2, offset };
  } finally {
    await rm(tree, { recursive: true, force: true });
  }
}

// GPT's Linux filesystem data type; GPT keeps a copy of its table in the disk's last 33 sectors.
const LINUX_GPT_TYPE = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

/** A disk whose one Linux partition starts at `offset` and holds `fsImage`. */
async function partitionedDisk(raw: string, fsImage: string, offset: number, gpt: boolean): Promise<void> {
  const size = offset + FS_MIB * 1024 * 1024 + (gpt ? 1024 * 1024 : 0);
  await rm(raw, { force: true });
  await writeFile(raw, '');
  await runCommand('truncate', ['-s', String(size), raw]);
  const script = `label: ${gpt ? 'gpt' : 'dos'}\nunit: sectors\n\nstart=${offset / 512}, size=${(FS_MIB * 1024 * 1024) / 512}, type=${gpt ? LINUX_GPT_TYPE : '83'}\n`;
  await runCommand('sfdisk', ['-q', raw], { input: script });
  const source = await open(fsImage, 'r');
  const target = await open(raw, 'r+');
  try {
    const chunk = Buffer.alloc(1024 * 1024);
    for (let at = 0; ; at += chunk.length) {
      const { bytesRead } = await source.read(chunk, 0, chunk.length, at);
      if (bytesRead === 0) break;
      await target.write(chunk, 0, bytesRead, offset + at);
    }
  } finally {
    await source.close();
    await target.close();
  }
}
