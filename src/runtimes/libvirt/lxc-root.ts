// An lxc sliver's root file system, copy-on-write over a cached image, and how it reports ready.
//
// The image is a tar archive of a root file system (a cache entry of type data). It is unpacked
// once per archive into a base under guest_dir/.lxc-roots (never a sliver name: those are Unix
// user names), and each sliver gets an overlayfs mount of its own at <sliver>/rootfs: the base
// below, read-only and shared, and the sliver's writes in <sliver>/upper. Removing the sliver's
// directory therefore removes everything it wrote, and a hundred slivers of one image hold one
// copy of it. A sliver keeps the base it was made with (recorded in <sliver>/lxc-base) for its
// whole life, because overlayfs must never see its lower layer change under an upper one; a base
// that no sliver names any more is removed.
//
// The overlay is mounted in the host's mount namespace before the container starts (libvirt bind-
// mounts it as the container's /) and unmounted when the container is stopped or destroyed, and
// by recovery before it removes the directory of a sliver that has no domain any more.
//
// Ready: an LXC console drops what is written before someone attaches, so the container's init
// writes the ready marker into a file instead: /var/lib/nodemgr/ready inside the container. Not
// /run or /tmp: a distribution's init mounts a tmpfs there, which the host cannot see; /var/lib is
// on the root file system in every layout, and so in the sliver's overlay, where the host reads
// it. The file is removed before each start, so a marker from an earlier boot never counts.
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type { Logger } from '../../log.js';
import { runCommand } from '../../host/exec.js';
import type { GuestFiles } from './guest-files.js';
import { describeError } from '../../util/errors.js';
import { pollUntil } from '../../util/poll.js';
import { serialQueue } from '../../util/serial.js';

/** Where the bases live, under guest_dir. */
export const LXC_ROOTS_DIR = '.lxc-roots';
/** The file a container's init writes the ready marker into, as the container sees it. */
export const LXC_READY_FILE = '/var/lib/nodemgr/ready';

const BASE_REF_FILE = 'lxc-base';
const READY_BYTES = 4096;
const PARTIAL = '.partial';
// Characters that mount(8)'s overlay options cannot carry in a directory's name.
const UNSAFE_IN_OPTIONS = /[,:\\\s=]/;

export interface LxcRootPaths {
  /** The overlay's mount point: the container's root as the host sees it. */
  readonly merged: string;
  readonly upper: string;
  readonly work: string;
  /** Names the sliver's base (a directory under .lxc-roots). */
  readonly baseRef: string;
  /** The ready file as the host sees it (through the mounted overlay). */
  readonly ready: string;
}

export function lxcRootPaths(files: GuestFiles): LxcRootPaths {
  const merged = join(files.dir, 'rootfs');
  return {
    merged,
    upper: join(files.dir, 'upper'),
    work: join(files.dir, 'work'),
    baseRef: join(files.dir, BASE_REF_FILE),
    ready: join(merged, LXC_READY_FILE),
  };
}

/** A cached archive's base: named by the cache entry's file and identity, so a new file under an old name is a new base. */
export async function baseKeyOf(archive: string): Promise<string> {
  const st = await stat(archive);
  if (!st.isFile()) throw new Error(`root file system archive ${archive} is not a file`);
  return createHash('sha256').update(JSON.stringify([archive, st.size, st.mtimeMs, st.ino, st.dev])).digest('hex').slice(0, 24);
}

/** Undoes the octal escapes (\040 for a space, ...) of /proc/self/mountinfo's paths. */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** How many mounts /proc/self/mountinfo (its text) shows at `path`. Pure. */
export function mountsAt(mountinfo: string, path: string): number {
  let count = 0;
  for (const line of mountinfo.split('\n')) {
    const mountPoint = line.split(' ')[4];
    if (mountPoint !== undefined && unescapeMountPath(mountPoint) === path) count++;
  }
  return count;
}

/** The option string of the overlay mount; throws, naming the directory, where mount(8) would misread it. Pure. */
export function overlayOptions(lower: string, paths: Pick<LxcRootPaths, 'upper' | 'work'>): string {
  for (const [field, dir] of [['base', lower], ['upper', paths.upper], ['work', paths.work]] as const) {
    if (UNSAFE_IN_OPTIONS.test(dir)) {
      throw new Error(`lxc root: the ${field} directory ${dir} has a character (comma, colon, backslash, "=" or white space) that an overlay mount cannot name; choose a guest_dir without one`);
    }
  }
  return `lowerdir=${lower},upperdir=${paths.upper},workdir=${paths.work}`;
}

async function mountCount(path: string): Promise<number> {
  return mountsAt(await readFile('/proc/self/mountinfo', 'utf8'), path);
}

/**
 * Whether every directory between the root (`merged`) and `file` is a directory and no link. The
 * container owns its root, so a link there would lead the host (as root) out of it.
 */
async function realDirectoriesTo(merged: string, file: string): Promise<boolean> {
  const parts = relative(merged, dirname(file)).split(sep).filter((p) => p !== '');
  let dir = merged;
  for (const part of parts) {
    dir = join(dir, part);
    const st = await lstat(dir).catch(() => null);
    if (!st?.isDirectory()) return false;
  }
  return true;
}

/**
 * The start of the ready file, or '' while there is none. Never follows a link, never waits on a
 * FIFO, reads regular files only, and at most READY_BYTES: the container writes it, the host reads.
 * (A directory swapped for a link between the check and the open leads, at worst, to a few bytes
 * of some host file being compared with the marker.)
 */
async function readReadyFile(merged: string, file: string): Promise<string> {
  if (!(await realDirectoriesTo(merged, file))) return '';
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => null);
  if (!handle) return '';
  try {
    if (!(await handle.stat()).isFile()) return '';
    const buffer = Buffer.alloc(READY_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, READY_BYTES, 0);
    return buffer.subarray(0, bytesRead).toString('latin1');
  } finally {
    await handle.close();
  }
}

export interface LxcRoots {
  /**
   * Gives the sliver a fresh root over the archive's base (unpacked first if no sliver has it):
   * an empty upper layer, nothing mounted. What an earlier root of the sliver held is gone.
   */
  prepare(files: GuestFiles, archive: string): Promise<void>;
  /** Mounts the sliver's overlay unless it is mounted already. */
  mount(files: GuestFiles): Promise<void>;
  /** Unmounts the sliver's overlay; nothing mounted is no error. */
  unmount(files: GuestFiles): Promise<void>;
  /** Removes a ready file left by an earlier boot. */
  clearReady(files: GuestFiles): Promise<void>;
  /**
   * Waits until the ready file holds `marker`. True when it does, false when `timeoutMs` passes
   * or `gone()` says the container stopped.
   */
  waitForReady(files: GuestFiles, marker: string, opts: { timeoutMs: number; pollMs?: number; gone?: () => Promise<boolean> }): Promise<boolean>;
  /** Removes the bases that no sliver names (and what an interrupted unpack left). */
  collect(): Promise<void>;
}

export function createLxcRoots(guestDir: string, logger: Logger): LxcRoots {
  const rootsDir = join(guestDir, LXC_ROOTS_DIR);
  /** Unpacks in progress, by base key: one per archive however many slivers ask. */
  const unpacking = new Map<string, Promise<void>>();
  // Naming a base and removing unnamed ones exclude each other, or a base could be removed
  // between a create seeing it and naming it. Held briefly: unpacking runs outside it.
  const bases = serialQueue();
  const exclusive = <T>(task: () => Promise<T>): Promise<T> => bases.run(task);

  const unpack = async (key: string, archive: string) => {
    const base = join(rootsDir, key);
    const partial = base + PARTIAL;
    const started = Date.now();
    await rm(partial, { recursive: true, force: true });
    await mkdir(partial, { mode: 0o755 });
    // --numeric-owner: the ids as the archive has them, not as this host's names map them.
    await runCommand('tar', ['-x', '-f', archive, '-C', partial, '--numeric-owner'], { timeoutMs: 30 * 60_000 });
    await rename(partial, base);
    logger.info('lxc base unpacked', { archive, base, duration_ms: Date.now() - started });
  };

  const ensureBase = (key: string, archive: string): Promise<void> => {
    let running = unpacking.get(key);
    if (!running) {
      running = unpack(key, archive).finally(() => unpacking.delete(key));
      unpacking.set(key, running);
    }
    return running;
  };

  const baseOf = async (files: GuestFiles): Promise<string> => {
    const ref = lxcRootPaths(files).baseRef;
    const key = (await readFile(ref, 'utf8').catch(() => '')).trim();
    if (!/^[0-9a-f]{24}$/.test(key)) throw new Error(`lxc root of ${files.dir}: ${ref} does not name a base; the sliver must be made again`);
    const base = join(rootsDir, key);
    if (!(await stat(base).then((s) => s.isDirectory(), () => false))) {
      throw new Error(`lxc root of ${files.dir}: its base ${base} is gone; the sliver must be made again`);
    }
    return base;
  };

  const roots: LxcRoots = {
    async prepare(files, archive) {
      const paths = lxcRootPaths(files);
      await roots.unmount(files);
      const key = await baseKeyOf(archive);
      const pending = await exclusive(async () => {
        await mkdir(rootsDir, { recursive: true, mode: 0o700 });
        await writeFile(paths.baseRef, `${key}\n`, { mode: 0o644 });
        const present = await stat(join(rootsDir, key)).then((s) => s.isDirectory(), () => false);
        return present ? null : ensureBase(key, archive);
      });
      await pending;
      for (const dir of [paths.upper, paths.work, paths.merged]) {
        await rm(dir, { recursive: true, force: true });
        await mkdir(dir, { mode: 0o755 });
      }
    },

    async mount(files) {
      const paths = lxcRootPaths(files);
      if ((await mountCount(paths.merged)) > 0) return;
      const options = overlayOptions(await baseOf(files), paths);
      await mkdir(paths.upper, { recursive: true, mode: 0o755 });
      await mkdir(paths.work, { recursive: true, mode: 0o755 });
      await mkdir(paths.merged, { recursive: true, mode: 0o755 });
      await runCommand('mount', ['-t', 'overlay', 'overlay', '-o', options, paths.merged], { timeoutMs: 60_000 });
    },

    async unmount(files) {
      const { merged } = lxcRootPaths(files);
      // Mounted more than once only by hand; each round takes one off.
      for (let round = 0; round < 8 && (await mountCount(merged)) > 0; round++) {
        try {
          await runCommand('umount', [merged], { timeoutMs: 60_000 });
        } catch (error) {
          // Still in use (a process left in the container's namespace holds it): detached now,
          // freed when the last user goes; the path is free for the removal that follows.
          logger.warn('lxc root busy, detached', { root: merged, error: describeError(error) });
          await runCommand('umount', ['-l', merged], { timeoutMs: 60_000 });
        }
      }
    },

    async clearReady(files) {
      // Only through real directories: the host must never remove a file a link points it to.
      const { merged, ready } = lxcRootPaths(files);
      if (await realDirectoriesTo(merged, ready)) await rm(ready, { force: true });
    },

    waitForReady(files, marker, opts) {
      const { merged, ready } = lxcRootPaths(files);
      return pollUntil(async () => (await readReadyFile(merged, ready)).includes(marker), opts);
    },

    collect: () => exclusive(async () => {
      const present = await readdir(rootsDir).catch(() => [] as string[]);
      if (present.length === 0) return;
      const named = new Set<string>();
      for (const entry of await readdir(guestDir, { withFileTypes: true })) {
        if (!entry.isDirectory() || entry.name === LXC_ROOTS_DIR) continue;
        const key = (await readFile(join(guestDir, entry.name, BASE_REF_FILE), 'utf8').catch(() => '')).trim();
        if (key !== '') named.add(key);
      }
      for (const name of present) {
        const key = name.endsWith(PARTIAL) ? name.slice(0, -PARTIAL.length) : name;
        if (named.has(key) || unpacking.has(key)) continue;
        await rm(join(rootsDir, name), { recursive: true, force: true });
        logger.info('lxc base removed', { base: join(rootsDir, name), reason: 'no sliver uses it' });
      }
    }),
  };
  return roots;
}
