// A libvirt sliver's own files: a directory per sliver under guest_dir holding its copy-on-write
// overlay over a cached base image and its serial console log. Nothing here is shared between
// slivers, so removing the directory removes everything the sliver wrote.
import { chmod, mkdir, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { runCommand } from '../../host/exec.js';
import { pollUntil } from '../../util/poll.js';

export interface GuestFiles {
  readonly dir: string;
  readonly overlay: string;
  readonly consoleLog: string;
}

export function guestFiles(guestDir: string, name: string): GuestFiles {
  const dir = join(guestDir, name);
  return { dir, overlay: join(dir, 'overlay.qcow2'), consoleLog: join(dir, 'console.log') };
}

// The hypervisor runs guests as its own user: it must be able to reach (not list) these files.
const SEARCHABLE = 0o711;

/**
 * Makes the guests' directory, and says what keeps the hypervisor's user from reaching it: every
 * directory on the way must be searchable by others.
 */
export async function prepareGuestDir(guestDir: string): Promise<void> {
  await mkdir(guestDir, { recursive: true, mode: SEARCHABLE });
  for (let dir = guestDir; ; dir = dirname(dir)) {
    const mode = (await stat(dir)).mode & 0o777;
    if ((mode & 0o001) === 0) {
      throw new Error(
        `guest_dir ${guestDir}: directory ${dir} (mode ${mode.toString(8).padStart(4, '0')}) is not searchable by others, so the hypervisor's user cannot reach the guests' disks; chmod o+x it or choose another guest_dir`,
      );
    }
    if (dirname(dir) === dir) return;
  }
}

/** The names of the slivers that have a directory under guest_dir. */
export async function guestDirNames(guestDir: string): Promise<string[]> {
  try {
    return (await readdir(guestDir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/**
 * Makes the sliver's directory and a fresh overlay over `base` (the cached image, in `format`).
 * An overlay left by an interrupted create is replaced: the guest never ran on it.
 */
export async function makeOverlay(files: GuestFiles, base: { path: string; format: string }): Promise<void> {
  await mkdir(files.dir, { recursive: true, mode: SEARCHABLE });
  await chmod(files.dir, SEARCHABLE);
  await rm(files.overlay, { force: true });
  await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', base.format, '-b', base.path, files.overlay], { timeoutMs: 60_000 });
}

export async function makeGuestDir(files: GuestFiles): Promise<void> {
  await mkdir(files.dir, { recursive: true, mode: SEARCHABLE });
  await chmod(files.dir, SEARCHABLE);
}

// The guest's kind, in its directory: recovery removes the directory of a guest whose domain is
// gone only when the kind's libvirt answered, or one that libvirt still holds would lose its files.
const KIND_FILE = 'runtime';

export async function writeGuestKind(files: GuestFiles, kind: string): Promise<void> {
  await writeFile(join(files.dir, KIND_FILE), `${kind}\n`, { mode: 0o644 });
}

/** The kind written in the guest's directory; '' when none is. */
export async function readGuestKind(files: GuestFiles): Promise<string> {
  return (await readFile(join(files.dir, KIND_FILE), 'utf8').catch(() => '')).trim();
}

export async function removeGuestFiles(files: GuestFiles): Promise<void> {
  await rm(files.dir, { recursive: true, force: true });
}

/** The console log's size now: a ready line is looked for only in what is written after it. */
export async function consoleLogSize(files: GuestFiles): Promise<number> {
  try {
    return (await stat(files.consoleLog)).size;
  } catch {
    return 0;
  }
}

/**
 * Waits until the guest writes a line containing `marker` to its console log after byte `from`
 * (the log may also be truncated by a new start, which is read from its beginning). Resolves
 * true when seen, false when `timeoutMs` passes or `gone()` says the guest stopped.
 */
export async function waitForReady(
  files: GuestFiles,
  marker: string,
  opts: { from: number; timeoutMs: number; pollMs?: number; gone?: () => Promise<boolean> },
): Promise<boolean> {
  let offset = opts.from;
  let carry = '';
  // Reads what the console log gained since the last look; the marker may span two reads.
  const seen = async (): Promise<boolean> => {
    const handle = await open(files.consoleLog, 'r').catch(() => null);
    if (!handle) return false;
    try {
      const { size } = await handle.stat();
      if (size < offset) {
        offset = 0;
        carry = '';
      }
      if (size <= offset) return false;
      const length = Math.min(size - offset, 1 << 20);
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buffer, 0, length, offset);
      offset += bytesRead;
      const text = carry + buffer.subarray(0, bytesRead).toString('latin1');
      carry = text.slice(-marker.length);
      return text.includes(marker);
    } finally {
      await handle.close();
    }
  };
  return pollUntil(seen, opts);
}
