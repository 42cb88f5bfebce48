// Staging disks: how a virtual machine's task gets its files in and out. Measured against the
// guest agent's file calls (bench/guest-agent.ts), a disk is about 30 times faster: qemu-ga takes a
// file in base64 pieces of at most 64 KiB, one libvirt call each (0.5 MB/s under software
// emulation), while an ext2 image made on the host with `mkfs.ext2 -d` is attached as a disk,
// mounted in the guest and copied from at the disk's speed. The agent's calls stay for what is small
// (an instance's ssh key) and for containers, whose root the host reaches directly.
//
// In: the stage-in files in a tree of their guest paths, made into a read-only ext2 image (serial
// nodemgr-in); in the guest, once its agent answers, the image is mounted and its tree copied onto /.
// Out: an empty ext2 image (serial nodemgr-out) attached writable; after the job each output is
// copied into it as /<n>, and once the guest is removed the host reads them back with debugfs,
// never mounting what a guest wrote.
import { link, mkdir, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { runCommand } from '../host/exec.js';
import type { Spool } from './spool.js';
import type { StageIn } from './xsdl-types.js';

export const STAGE_IN_SERIAL = 'nodemgr-in';
export const STAGE_OUT_SERIAL = 'nodemgr-out';

/** Where a task's staging images are: in the spool, in a directory the hypervisor's user may pass through. */
export function stagingImages(spool: Spool): { readonly in: string; readonly out: string } {
  return { in: join(spool.dir, 'disks', 'in.img'), out: join(spool.dir, 'disks', 'out.img') };
}

const MIB = 1024 * 1024;

/** KiB for an ext2 image holding `bytes` in `files` files (4 KiB blocks, a block's waste per file, metadata). */
export function imageKiB(bytes: number, files: number): number {
  return Math.ceil((bytes * 1.05 + files * 8192 + 8 * MIB) / 1024);
}

/** The read-only image of the stage-in files, each at its guest path with its mode; fetched files are linked, not copied. */
export async function makeStageInImage(spool: Spool, files: readonly StageIn[]): Promise<void> {
  const tree = join(spool.dir, 'disks', 'in-tree');
  const image = stagingImages(spool).in;
  await rm(tree, { recursive: true, force: true });
  await mkdir(dirname(image), { recursive: true, mode: 0o711 });
  let bytes = 0;
  try {
    for (const [n, file] of files.entries()) {
      const at = join(tree, file.path);
      await mkdir(dirname(at), { recursive: true });
      await rm(at, { force: true });
      await link(spool.input(n), at);
      bytes += (await stat(at)).size;
    }
    await rm(image, { force: true });
    await runCommand('mkfs.ext2', ['-q', '-F', '-m', '0', '-N', String(files.length + 32), '-L', STAGE_IN_SERIAL, '-d', tree, image, `${imageKiB(bytes, files.length)}k`],
      { timeoutMs: 10 * 60_000 });
  } finally {
    await rm(tree, { recursive: true, force: true });
  }
}

/** The empty, writable image the outputs are copied into: room for each at its largest (a sparse file). */
export async function makeStageOutImage(spool: Spool, outputs: number, maxBytes: number): Promise<void> {
  const image = stagingImages(spool).out;
  await mkdir(dirname(image), { recursive: true, mode: 0o711 });
  await rm(image, { force: true });
  await runCommand('mkfs.ext2', ['-q', '-F', '-m', '0', '-N', String(outputs + 32), '-L', STAGE_OUT_SERIAL, image, `${imageKiB(maxBytes * outputs, outputs)}k`]);
}

/** Reads output n out of the image written by the guest into `dest`; false when the guest wrote none. */
export async function readStagedOutput(spool: Spool, n: number, dest: string): Promise<boolean> {
  await rm(dest, { force: true });
  await mkdir(dirname(dest), { recursive: true });
  // debugfs reads the file system as data (no mount, so nothing the guest wrote runs on the host).
  await runCommand('debugfs', ['-R', `dump /${n} ${dest}`, stagingImages(spool).out], { timeoutMs: 10 * 60_000 });
  return stat(dest).then(() => true, () => false);
}

/** The guest's shell words that find the disk of `serial` (no udev needed: sysfs names it) and mount it. */
function mountScript(serial: string, at: string, options: string): string {
  return `dev=; for d in /sys/block/*; do [ "$(cat "$d/serial" 2>/dev/null)" = ${serial} ] && dev=/dev/\${d##*/}; done; `
    + '[ -n "$dev" ] || exit 3; '
    + `mkdir -p ${at} && mount -t ext2 -o ${options} "$dev" ${at} || exit 4; `;
}

/** Exit codes of the guest's staging scripts, in words. */
export const STAGING_EXITS: Readonly<Record<number, string>> = {
  3: 'the staging disk is not in the guest',
  4: 'the staging disk could not be mounted in the guest (does its kernel have ext2?)',
  5: 'copying the files in the guest failed',
};

/** The guest copies the stage-in tree onto its root (lost+found left out), then lets the disk go. */
export function stageInScript(): string {
  const at = '/run/nodemgr-in';
  return `${mountScript(STAGE_IN_SERIAL, at, 'ro')}rc=0; `
    + `for e in ${at}/* ${at}/.[!.]*; do [ -e "$e" ] || continue; [ "$e" = ${at}/lost+found ] && continue; cp -a "$e" / || rc=5; done; `
    + `umount ${at}; exit $rc`;
}

/**
 * The guest copies each output (its paths are the arguments) into the disk as /0, /1, ...; exit
 * 10 + n says output n was missing (the first found missing).
 */
export function stageOutScript(): string {
  const at = '/run/nodemgr-out';
  return `${mountScript(STAGE_OUT_SERIAL, at, 'rw')}n=0; rc=0; `
    + `for p in "$@"; do if [ -f "$p" ]; then cp -- "$p" ${at}/$n || rc=5; elif [ $rc = 0 ]; then rc=$((10 + n)); fi; n=$((n + 1)); done; `
    + `sync; umount ${at}; exit $rc`;
}
