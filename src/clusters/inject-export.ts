// A qcow2 overlay seen as one raw file: QEMU's storage daemon opens the overlay (and, read-only,
// its backing chain) and exports the guest-visible disk through FUSE onto a regular file. The
// host kernel never mounts anything of the guest's: e2fsprogs reads and writes that file.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandError, runCommand } from '../host/exec.js';
import { describeError } from '../util/errors.js';
import { pollUntil } from '../util/poll.js';

export interface RawExport {
  /** The guest's disk as a raw, writable file (a FUSE mount point). */
  readonly file: string;
  /** The storage daemon's process id, from its pid file; 0 when it never wrote one. */
  readonly pid: number;
}

/** Why the export could not be made: the image is no qcow2 image, it is in use, or other. */
export class ExportError extends Error {
  override readonly name = 'ExportError';
  constructor(
    message: string,
    readonly reason: 'corrupt' | 'busy' | 'other',
  ) {
    super(message);
  }
}

const PROGRAM = 'qemu-storage-daemon';

/**
 * Starts the storage daemon on `overlay`, exporting it writable onto `<workDir>/disk`. Paths are
 * absolute: the daemon changes to / when it detaches, and a relative mount point would then be
 * one it cannot unmount. Resolves once the export is there (the daemon detaches only then).
 */
export async function startRawExport(overlay: string, workDir: string, timeoutMs: number): Promise<RawExport> {
  const file = join(workDir, 'disk');
  const pidFile = join(workDir, 'qsd.pid');
  await writeFile(file, '');
  const args = [
    '--blockdev', `driver=file,node-name=overlay-file,filename=${optionValue(overlay)}`,
    '--blockdev', 'driver=qcow2,node-name=overlay,file=overlay-file',
    '--export', `type=fuse,id=disk,node-name=overlay,mountpoint=${optionValue(file)},writable=on`,
    '--pidfile', pidFile,
    '--daemonize',
  ];
  try {
    await runCommand(PROGRAM, args, { timeoutMs });
  } catch (error) {
    throw new ExportError(describeError(error), exportFailure(error));
  }
  return { file, pid: await readPid(pidFile) };
}

/**
 * Stops the storage daemon (found by its pid file in `workDir`, so that a daemon whose start timed
 * out is stopped too) and makes sure that nothing stays mounted on the export. Never throws: it
 * returns what it could not undo, for the caller to report.
 */
export async function stopRawExport(workDir: string): Promise<string[]> {
  const problems: string[] = [];
  const file = join(workDir, 'disk');
  const pid = await readPid(join(workDir, 'qsd.pid'));
  if (pid > 0 && (await isStorageDaemon(pid))) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone already
    }
    // it flushes the overlay and unmounts the export on its way out (about a second here)
    const gone = await pollUntil(async () => !(await isStorageDaemon(pid)), { timeoutMs: 15_000, pollMs: 50 });
    if (!gone) {
      problems.push(`${PROGRAM} (pid ${pid}) did not stop on SIGTERM; killed`);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      await pollUntil(async () => !(await isStorageDaemon(pid)), { timeoutMs: 5_000, pollMs: 50 });
    }
  }
  if (await isMountPoint(file)) {
    await runCommand('umount', [file], { timeoutMs: 30_000 }).catch((error) => {
      problems.push(`could not unmount the export ${file}: ${describeError(error)}`);
    });
  }
  return problems;
}

/** Whether `path` is a mount point now (from /proc/self/mountinfo, which escapes blanks as \040). */
export async function isMountPoint(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  return info.split('\n').some((line) => unescapeMountPath(line.split(' ')[4] ?? '') === path);
}

function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

// QEMU's option syntax: a comma inside a value is written twice.
function optionValue(path: string): string {
  return path.replace(/,/g, ',,');
}

function exportFailure(error: unknown): ExportError['reason'] {
  const stderr = error instanceof CommandError ? error.stderr : '';
  if (/not in qcow2 format|qcow2.*(corrupt|invalid|unsupported)|Image is corrupt/i.test(stderr)) return 'corrupt';
  if (/Failed to get .* lock|Is another process using the image/i.test(stderr)) return 'busy';
  return 'other';
}

async function readPid(pidFile: string): Promise<number> {
  const text = await readFile(pidFile, 'utf8').catch(() => '');
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : 0;
}

// The pid comes from a file: make sure it is still our kind of process before signalling it.
async function isStorageDaemon(pid: number): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'latin1').catch(() => '');
  return cmdline.split('\0')[0]?.endsWith(PROGRAM) ?? false;
}
