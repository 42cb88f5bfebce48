// An ext2/3/4 file system inside a raw disk file, read and written with e2fsprogs' debugfs: no
// loop device and no mount, so the host's kernel never parses a file system that came with a
// guest image. debugfs resolves paths (symbolic links too) inside the file system only.
//
// debugfs exits 0 whatever its commands did; a command's failure shows only as a line on stderr,
// so every run here treats any stderr line but the version banner as the run's failure.
import { runCommand } from '../host/exec.js';

export interface ExtFileSystem {
  /** The disk file, with the file system's offset as an I/O option (`disk?offset=N`). */
  readonly spec: string;
  readonly timeoutMs: () => number;
}

export interface DirEntry {
  readonly name: string;
  /** st_mode, type bits included. */
  readonly mode: number;
}

export class DebugfsError extends Error {
  override readonly name = 'DebugfsError';
  constructor(
    message: string,
    /** The file system could not be opened at all (bad superblock, unknown features). */
    readonly unopenable: boolean,
  ) {
    super(message);
  }
}

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;

export function extFileSystem(disk: string, offset: number, timeoutMs: () => number): ExtFileSystem {
  return { spec: offset > 0 ? `${disk}?offset=${offset}` : disk, timeoutMs };
}

/** Runs debugfs commands (read-only unless `writable`); its stdout, or a DebugfsError. */
export async function debugfs(fs: ExtFileSystem, commands: readonly string[], writable = false): Promise<string> {
  const args = [...(writable ? ['-w'] : []), '-f', '-', fs.spec];
  const { stdout, stderr } = await runCommand('debugfs', args, { input: `${commands.join('\n')}\n`, timeoutMs: fs.timeoutMs() });
  const complaints = stderr.split('\n').filter((line) => line.trim() !== '' && !/^debugfs \d+\.\d+/.test(line));
  if (complaints.length > 0) {
    const unopenable = complaints.some((line) => /while (trying to open|opening filesystem)|Filesystem not open/.test(line));
    throw new DebugfsError(complaints.join('; '), unopenable);
  }
  return stdout;
}

/** The file system's features (`needs_recovery` among them when its journal was not replayed). */
export async function features(fs: ExtFileSystem): Promise<string[]> {
  const out = await debugfs(fs, ['features']);
  return /Filesystem features:(.*)/.exec(out)?.[1]?.trim().split(/\s+/) ?? [];
}

/**
 * The entries of directory `path` (without . and ..), or null when there is no such directory.
 * One debugfs run per directory: its "not found" must be told apart from other failures.
 */
export async function listDirectory(fs: ExtFileSystem, path: string): Promise<DirEntry[] | null> {
  let out: string;
  try {
    out = await debugfs(fs, [`ls -p ${quoted(path)}`]);
  } catch (error) {
    if (error instanceof DebugfsError && !error.unopenable && /File not found by ext2_lookup|Ext2 inode is not a directory/.test(error.message)) {
      return null;
    }
    throw error;
  }
  // `ls -p` lines: /inode/mode/uid/gid/name/size/ (the name cannot hold a slash)
  const entries: DirEntry[] = [];
  for (const line of out.split('\n')) {
    const m = /^\/\d+\/([0-7]+)\/\d+\/\d+\/(.*)\/\d*\/$/.exec(line);
    if (!m || m[2] === '.' || m[2] === '..') continue;
    entries.push({ name: m[2]!, mode: parseInt(m[1]!, 8) });
  }
  return entries;
}

/**
 * A path as one debugfs argument. debugfs splits its command lines at blanks and understands
 * double quotes; callers allow no quote, backslash or control character in paths (injectPaths).
 */
export function quoted(path: string): string {
  return /[\s]/.test(path) ? `"${path}"` : path;
}
