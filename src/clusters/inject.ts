// Writing files into a virtual cluster node's disk before it boots (pragma_boot gives every node
// its /root/vc-out.xml this way, and moves the image's own network configuration out of the way).
// The node's disk is a qcow2 overlay over a cached base image: QEMU's storage daemon exports the
// overlay as a raw file (inject-export.ts), blkid and sfdisk find the ext2/3/4 file system on it
// (inject-layout.ts), and debugfs writes into it (inject-debugfs.ts). Writes land in the overlay
// only; the base is opened read-only as its backing file. Nothing is mounted by the host's kernel.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { describeError } from '../util/errors.js';
import { debugfs, DebugfsError, extFileSystem, features, listDirectory, quoted, S_IFDIR, S_IFMT, S_IFREG, type ExtFileSystem } from './inject-debugfs.js';
import { ExportError, startRawExport, stopRawExport } from './inject-export.js';
import { findFileSystems, type FileSystemPlace } from './inject-layout.js';

export interface InjectFile {
  /** Absolute path inside the guest's file system; missing parent directories are made (0755). */
  readonly path: string;
  readonly content: string | Buffer;
  /** Permission bits (e.g. 0o644); the file is owned by root. */
  readonly mode: number;
}

export interface InjectReport {
  readonly overlay: string;
  readonly fileSystem: FileSystemPlace;
  readonly written: readonly string[];
  /** Each renamed path and its new name (the path with RENAMED_SUFFIX). */
  readonly renamed: readonly { readonly from: string; readonly to: string }[];
  readonly durationMs: number;
}

/** What a path in `renames` is renamed to: itself with this suffix, in the same directory. */
export const RENAMED_SUFFIX = '.nodemgr-orig';

export class InjectError extends Error {
  override readonly name = 'InjectError';
  constructor(
    readonly overlay: string,
    readonly what: string,
  ) {
    super(`injecting into ${overlay}: ${what}`);
  }
}

const DEFAULT_TIMEOUT_MS = 120_000;

/**
 * Writes `files` into the file system of the qcow2 `overlay` (a bare file system image, or the
 * first Linux partition of an MBR or GPT disk that holds /etc, else the first one), and renames
 * each existing path in `renames` (`*` allowed in the last component) to the path with
 * RENAMED_SUFFIX (replacing an older one). The overlay's backing file is never written. The
 * export is always taken down again, also on failure; any failure is an InjectError.
 */
export async function injectIntoOverlay(
  overlay: string,
  files: readonly InjectFile[],
  renames: readonly string[],
  options: { timeoutMs?: number } = {},
): Promise<InjectReport> {
  const started = Date.now();
  const deadline = started + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const left = () => Math.max(1_000, deadline - Date.now());
  for (const path of [...files.map((f) => f.path), ...renames]) checkPath(overlay, path);
  for (const file of files) {
    if (!Number.isInteger(file.mode) || file.mode < 0 || file.mode > 0o7777) throw new InjectError(overlay, `mode ${file.mode} of ${file.path} is not a permission mode`);
  }
  const work = await mkdtemp(join(tmpdir(), 'nodemgr-inject-'));
  let failure: unknown = null;
  let report: InjectReport | undefined;
  try {
    const disk = await startRawExport(overlay, work, left()).catch((error: unknown) => {
      if (error instanceof ExportError && error.reason === 'corrupt') throw new InjectError(overlay, `the image is corrupt: ${error.message}`);
      if (error instanceof ExportError && error.reason === 'busy') throw new InjectError(overlay, `the image is in use: ${error.message}`);
      throw new InjectError(overlay, `could not export the image: ${describeError(error)}`);
    });
    const { fs, place } = await chooseFileSystem(overlay, disk.file, left);
    const hostFiles = await stageFiles(work, files);
    const renamed = await planRenames(fs, renames);
    await debugfs(fs, [...(await writeCommands(fs, files, hostFiles)), ...renameCommands(renamed)], true).catch((error: unknown) => {
      throw new InjectError(overlay, `writing into the file system failed (the overlay is left part-written): ${describeError(error)}`);
    });
    report = { overlay, fileSystem: place, written: files.map((f) => f.path), renamed: renamed.map(({ from, to }) => ({ from, to })), durationMs: 0 };
  } catch (error) {
    failure = error;
  } finally {
    const problems = await stopRawExport(work);
    await rm(work, { recursive: true, force: true }).catch((error) => problems.push(`could not remove ${work}: ${describeError(error)}`));
    if (problems.length > 0 && failure === null) failure = new InjectError(overlay, `cleaning up: ${problems.join('; ')}`);
  }
  if (failure !== null) throw failure instanceof InjectError ? failure : new InjectError(overlay, describeError(failure));
  return { ...report!, durationMs: Date.now() - started };
}

/** The file system to write: the first candidate that holds /etc (a root file system), else the first. */
async function chooseFileSystem(overlay: string, disk: string, left: () => number): Promise<{ fs: ExtFileSystem; place: FileSystemPlace }> {
  const { places, why } = await findFileSystems(disk, left());
  if (places.length === 0) throw new InjectError(overlay, `no Linux file system found in ${overlay} (${why})`);
  let chosen: { fs: ExtFileSystem; place: FileSystemPlace } | undefined;
  for (const place of places) {
    const fs = extFileSystem(disk, place.offset, left);
    const root = await listDirectory(fs, '/').catch((error: unknown) => {
      throw new InjectError(overlay, `the image is corrupt: ${where(place)}: ${describeError(error)}`);
    });
    if (root === null) throw new InjectError(overlay, `the image is corrupt: ${where(place)} has no root directory`);
    chosen ??= { fs, place };
    if (root.some((e) => e.name === 'etc' && (e.mode & S_IFMT) === S_IFDIR)) {
      chosen = { fs, place };
      break;
    }
  }
  // a journal that was not replayed would be replayed at boot, over what is written now
  if ((await features(chosen!.fs)).includes('needs_recovery')) {
    throw new InjectError(overlay, `${where(chosen!.place)}: its journal needs recovery (the image was not shut down cleanly); run e2fsck on it first`);
  }
  return chosen!;
}

function where(place: FileSystemPlace): string {
  return place.partition === null ? `the ${place.type} file system` : `the ${place.type} file system in partition ${place.partition}`;
}

// Paths reach debugfs command lines: absolute, normalised, and free of what its parser treats
// specially (quotes, backslashes, control characters).
function checkPath(overlay: string, path: string): void {
  const bad =
    !path.startsWith('/') || path === '/' || posix.normalize(path) !== path || path.endsWith('/') ||
    /["'\\\x00-\x1f\x7f]/.test(path) || posix.dirname(path).includes('*');
  if (bad) throw new InjectError(overlay, `path ${JSON.stringify(path)} is not an absolute, plain path inside the guest`);
}

async function stageFiles(work: string, files: readonly InjectFile[]): Promise<string[]> {
  const staged: string[] = [];
  for (const [index, file] of files.entries()) {
    const host = join(work, `file-${index}`);
    await writeFile(host, file.content, { mode: 0o600 });
    staged.push(host);
  }
  return staged;
}

/** debugfs commands that make the missing parents, then write each file with its owner and mode. */
async function writeCommands(fs: ExtFileSystem, files: readonly InjectFile[], hostFiles: readonly string[]): Promise<string[]> {
  const commands: string[] = [];
  const made = new Set<string>();
  for (const [index, file] of files.entries()) {
    const dir = posix.dirname(file.path);
    const name = posix.basename(file.path);
    const ancestors = dir.split('/').filter(Boolean).map((_, i, parts) => `/${parts.slice(0, i + 1).join('/')}`);
    let missing = false;
    for (const ancestor of ancestors) {
      if (made.has(ancestor)) continue;
      missing ||= (await listDirectory(fs, ancestor)) === null;
      if (missing) {
        commands.push(`mkdir ${quoted(ancestor)}`, `sif ${quoted(ancestor)} uid 0`, `sif ${quoted(ancestor)} gid 0`);
        made.add(ancestor);
      }
    }
    const existing = made.has(dir) ? undefined : (await listDirectory(fs, dir))?.find((e) => e.name === name);
    if (existing && (existing.mode & S_IFMT) === S_IFDIR) throw new DebugfsError(`${file.path} is a directory in the guest's file system`, false);
    commands.push(`cd ${quoted(dir)}`);
    if (existing) commands.push(`rm ${quoted(name)}`);
    commands.push(`write ${hostFiles[index]} ${quoted(name)}`);
    commands.push(`sif ${quoted(name)} mode 0${(S_IFREG | file.mode).toString(8)}`, `sif ${quoted(name)} uid 0`, `sif ${quoted(name)} gid 0`);
    commands.push('cd /');
  }
  return commands;
}

interface Rename {
  readonly from: string;
  readonly to: string;
  /** The target exists already (from an earlier injection): it is removed first. */
  readonly replaces: boolean;
}

/** The existing paths that `renames` match; names that already carry the suffix never match. */
async function planRenames(fs: ExtFileSystem, renames: readonly string[]): Promise<Rename[]> {
  const planned: Rename[] = [];
  for (const pattern of renames) {
    const dir = posix.dirname(pattern);
    const entries = await listDirectory(fs, dir);
    if (entries === null) continue;
    const matches = globMatcher(posix.basename(pattern));
    for (const entry of entries) {
      if (!matches(entry.name) || entry.name.endsWith(RENAMED_SUFFIX)) continue;
      const from = posix.join(dir, entry.name);
      if (planned.some((r) => r.from === from)) continue;
      const to = `${from}${RENAMED_SUFFIX}`;
      planned.push({ from, to, replaces: entries.some((e) => e.name === `${entry.name}${RENAMED_SUFFIX}`) });
    }
  }
  return planned;
}

// A rename within one directory: a second link to the inode, then the old name's link removed
// (debugfs's ln and unlink leave the link count alone, so it stays right), so no ".." changes.
function renameCommands(renames: readonly Rename[]): string[] {
  return renames.flatMap((r) => [
    `cd ${quoted(posix.dirname(r.from))}`,
    ...(r.replaces ? [`rm ${quoted(posix.basename(r.to))}`] : []),
    `ln ${quoted(posix.basename(r.from))} ${quoted(posix.basename(r.to))}`,
    `unlink ${quoted(posix.basename(r.from))}`,
    'cd /',
  ]);
}

function globMatcher(glob: string): (name: string) => boolean {
  const pattern = new RegExp(`^${glob.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  return (name) => pattern.test(name);
}
