// One locked write of the account files for a batch of creations and removals: the files are read
// under shadow-utils' locks (lock.ts), planned (plan.ts), every new version is written in full to
// a temporary file in /etc with the original's mode and owner and fsynced, the `-` backups are
// refreshed as shadow-utils refreshes them, and only then are the files renamed into place, in the
// plan's order. Until the first rename nothing has changed; a failure after it puts the original
// contents back, so a batch that fails leaves the four files as they were.
import { readFile, rename, stat, unlink, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsyncDirectory } from '../../db/durable-file.js';
import type { Logger } from '../../log.js';
import { describeError } from '../../util/errors.js';
import { ACCOUNT_FILE_NAMES, entryName, linesOf, type AccountFileName, type AccountFilesText } from './entries.js';
import { lockAccountFiles } from './lock.js';
import { planBatch, type AccountOutcome, type BatchPlan, type BatchRequests, type BatchRules } from './plan.js';
import { invalidateNameCaches } from './name-caches.js';

export type AccountFilePaths = Readonly<Record<AccountFileName, string>> & { readonly lockFile: string };

export const HOST_ACCOUNT_FILES: AccountFilePaths = {
  passwd: '/etc/passwd', shadow: '/etc/shadow', group: '/etc/group', gshadow: '/etc/gshadow', lockFile: '/etc/.pwd.lock',
};

export interface CommitOptions {
  readonly paths: AccountFilePaths;
  readonly rules: Omit<BatchRules, 'today'>;
  readonly logger: Logger;
  /** How long to wait for another tool's lock; default 15 s, as lckpwdf waits. */
  readonly lockTimeoutMs?: number;
  /** Tell nscd and sssd (when they run) that the files changed; default true. */
  readonly invalidateCaches?: boolean;
}

interface FileMeta {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

const DAY_MS = 86_400_000;

async function readOptional(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Writes `text` to `path` (created or truncated) with the given mode and owner, and fsyncs it. */
async function writeSynced(path: string, text: string, meta: FileMeta): Promise<void> {
  const handle = await open(path, 'w', meta.mode & 0o7777);
  try {
    await handle.chown(meta.uid, meta.gid);
    await handle.chmod(meta.mode & 0o7777); // the umask may have narrowed the mode open() gave
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The plan checked against its own outcome: every created name once in each file, every removed one gone. */
function checkPlan(plan: BatchPlan, original: AccountFilesText): void {
  const last = plan.steps.at(-1)?.files;
  if (!last) return;
  const counts = (text: string | null) => {
    const count = new Map<string, number>();
    for (const line of linesOf(text ?? '')) {
      const name = entryName(line);
      if (name !== null) count.set(name, (count.get(name) ?? 0) + 1);
    }
    return count;
  };
  const files = ACCOUNT_FILE_NAMES.filter((f) => original[f] !== null);
  const perFile = new Map(files.map((f) => [f, counts(last[f])]));
  for (const [name, outcome] of plan.outcomes) {
    for (const f of files) {
      const n = perFile.get(f)!.get(name) ?? 0;
      if (outcome.kind === 'created' && n !== 1) throw new Error(`batch check: the new ${f} would hold ${n} entries of "${name}", not 1`);
      if (outcome.kind === 'removed' && f !== 'group' && f !== 'gshadow' && n !== 0) throw new Error(`batch check: the new ${f} would still hold "${name}"`);
    }
  }
}

/** The four files as they are now, read without the lock (for a look, never for a write). */
export async function readAccountFiles(paths: AccountFilePaths): Promise<AccountFilesText> {
  const [passwd, shadow, group, gshadow] = await Promise.all(ACCOUNT_FILE_NAMES.map((f) => readOptional(paths[f])));
  if (passwd == null || group == null) throw new Error(`${passwd == null ? paths.passwd : paths.group} is missing`);
  return { passwd, shadow: shadow ?? null, group, gshadow: gshadow ?? null };
}

/**
 * Applies the batch: each account's outcome, or a throw (the files unchanged) when the batch as a
 * whole could not be done (a lock held too long, a file unreadable, a write error).
 */
export async function commitAccountBatch(requests: BatchRequests, options: CommitOptions): Promise<ReadonlyMap<string, AccountOutcome>> {
  const { paths, logger } = options;
  // The files the host has are the files to lock (a host without gshadow has no gshadow.lock either).
  const present = await Promise.all(ACCOUNT_FILE_NAMES.map((f) => stat(paths[f]).then(() => f, () => null)));
  const lock = await lockAccountFiles({
    lockFile: paths.lockFile,
    files: present.filter((f): f is AccountFileName => f !== null).map((f) => paths[f]),
    timeoutMs: options.lockTimeoutMs ?? 15_000,
  });
  let plan: BatchPlan;
  try {
    const original = await readAccountFiles(paths);
    plan = planBatch(original, requests, { ...options.rules, today: Math.floor(Date.now() / DAY_MS) });
    if (plan.steps.length > 0) {
      checkPlan(plan, original);
      await putInPlace(plan, original, paths);
    }
  } finally {
    await lock.release();
  }
  if (plan.steps.length > 0 && options.invalidateCaches !== false) await invalidateNameCaches(logger);
  return plan.outcomes;
}

/** Temporary files and backups first, then the renames; on a failed rename the originals go back. */
async function putInPlace(plan: BatchPlan, original: AccountFilesText, paths: AccountFilePaths): Promise<void> {
  const changed = ACCOUNT_FILE_NAMES.filter((f) => plan.steps.some((s) => s.order.includes(f)));
  const meta = new Map<AccountFileName, FileMeta>();
  for (const f of changed) {
    const st = await stat(paths[f]);
    meta.set(f, { mode: st.mode, uid: st.uid, gid: st.gid });
  }
  // Every version to rename, written and synced before the first rename.
  const renames: { file: AccountFileName; temp: string }[] = [];
  const temps: string[] = [];
  try {
    for (const [index, step] of plan.steps.entries()) {
      for (const f of step.order) {
        // "<file>+" is shadow-utils' own name for the new version; an earlier step's gets a number.
        const temp = index === plan.steps.length - 1 ? `${paths[f]}+` : `${paths[f]}+${index}`;
        temps.push(temp);
        await writeSynced(temp, step.files[f]!, meta.get(f)!);
        renames.push({ file: f, temp });
      }
    }
    // The backups hold what the files held before this batch, as shadow-utils' `<file>-` do.
    for (const f of changed) {
      const temp = `${paths[f]}-+`;
      temps.push(temp);
      await writeSynced(temp, original[f]!, meta.get(f)!);
      await rename(temp, `${paths[f]}-`);
    }
  } catch (err) {
    await Promise.all(temps.map((t) => unlink(t).catch(() => undefined)));
    throw err;
  }
  const done: AccountFileName[] = [];
  const dir = dirname(paths.passwd);
  try {
    for (const { file, temp } of renames) {
      await rename(temp, paths[file]);
      done.push(file);
      // The next rename must not reach the disk before this one: the order is the crash safety.
      await fsyncDirectory(dirname(paths[file]));
    }
  } catch (err) {
    await restore(done, original, paths, meta).catch((restoreError) => {
      throw new Error(`${describeError(err)}; and putting the original account files back failed: ${describeError(restoreError)}`);
    });
    await Promise.all(temps.map((t) => unlink(t).catch(() => undefined)));
    throw err;
  }
  await fsyncDirectory(dir);
}

async function restore(done: readonly AccountFileName[], original: AccountFilesText, paths: AccountFilePaths, meta: ReadonlyMap<AccountFileName, FileMeta>): Promise<void> {
  for (const f of [...new Set(done)].reverse()) {
    const temp = `${paths[f]}+`;
    await writeSynced(temp, original[f]!, meta.get(f)!);
    await rename(temp, paths[f]);
    await fsyncDirectory(dirname(paths[f]));
  }
}
