// A task's spool: the directory on the host that holds what it fetched (its boot files, its
// stage-in files), its staging disks (staging-disk.ts) and what it read back from its guest (its
// outputs). The fetched files go when the
// task is done; the outputs stay until the owner removes the task (TaskStatus with remove), so that
// an upload that failed can be fetched by hand.
import { chmod, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

export interface Spool {
  readonly dir: string;
  /** The boot file of the instance fetched from a URL: kernel, initrd or image. */
  boot(part: 'kernel' | 'initrd' | 'image'): string;
  /** The n-th stage-in file of the document. */
  input(n: number): string;
  /** The n-th stage-out file, as read back from the guest. */
  output(n: number): string;
}

export function spoolDir(taskDir: string): string {
  return join(taskDir, 'spool');
}

export function spoolOf(taskDir: string, taskId: string): Spool {
  const dir = join(spoolDir(taskDir), taskId);
  return {
    dir,
    boot: (part) => join(dir, 'boot', part),
    input: (n) => join(dir, 'in', String(n)),
    output: (n) => join(dir, 'out', String(n)),
  };
}

export async function makeSpool(spool: Spool): Promise<void> {
  // Searchable, not readable, by others: the hypervisor's user reaches the staging disks in disks/.
  await mkdir(spool.dir, { recursive: true, mode: 0o711 });
  await chmod(spool.dir, 0o711);
  for (const sub of ['boot', 'in', 'out']) await mkdir(join(spool.dir, sub), { recursive: true, mode: 0o700 });
}

/** Removes what the task fetched; its outputs stay. */
export async function removeFetched(spool: Spool): Promise<void> {
  for (const sub of ['boot', 'in', 'disks']) await rm(join(spool.dir, sub), { recursive: true, force: true });
}

export async function removeSpool(spool: Spool): Promise<void> {
  await rm(spool.dir, { recursive: true, force: true });
}

/** The task ids that have a spool directory. */
export async function spoolIds(taskDir: string): Promise<string[]> {
  try {
    return (await readdir(spoolDir(taskDir), { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}
