// What every cgroup adapter shares: the limits and readings as values, control files read and
// written one value at a time, group names validated before they become paths, the processes of
// a group, and the errors that name the file and the reason. cgroups.ts puts the slivers' groups
// together over these; cgroup-v1.ts and cgroup-v2.ts write the limits of each kernel interface.
import { accessSync, constants, readdirSync, readFileSync, statSync } from 'node:fs';
import { open, readdir, readFile, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { SHARES_MAX, SHARES_MIN } from '../rspec/cpu.js';

export interface CgroupLimits {
  /** v1 cpu.shares, 2..262144; v2 gets cpu.weight = sharesToWeight(cpuShares). */
  readonly cpuShares: number;
  /** CFS quota per CFS_PERIOD_US; null: no cap. */
  readonly cpuQuotaUs: number | null;
  readonly memoryBytes: number | null;
  readonly pidsMax: number | null;
}

export interface CgroupReading {
  /**
   * As the kernel shows them; a field is null when its controller is not available. Under v2,
   * cpuShares is the smallest shares value that maps to the kernel's cpu.weight, which is coarser.
   */
  readonly limits: { cpuShares: number | null; cpuQuotaUs: number | null; memoryBytes: number | null; pidsMax: number | null };
  readonly memoryUsageBytes: number | null;
  readonly processes: number;
  readonly cpuUsageNs: number | null;
  readonly oomKills: number | null;
}

/** Per limit: null when this host enforces it, otherwise why it cannot. */
export interface CgroupSupport {
  readonly cpu: string | null;
  readonly cpuQuota: string | null;
  readonly memory: string | null;
  readonly pids: string | null;
  readonly kill: string | null;
}

export interface CgroupBackend {
  readonly version: 1 | 2;
  /** The parent directory in every hierarchy used. */
  readonly parents: readonly string[];
  readonly support: CgroupSupport;
  ensureParent(): Promise<void>;
  /** Writes the limits into a group that exists in every hierarchy, and lets it run if it was left frozen. */
  applyLimits(name: string, limits: CgroupLimits): Promise<void>;
  readStatus(name: string): Promise<Omit<CgroupReading, 'processes'>>;
  /** Kills the whole group in one step (v2 cgroup.kill); false when the kernel has no such switch. */
  killSwitch(name: string): Promise<boolean>;
  /** Stops (true) or resumes every task of the group; false when there is no freezer for it. */
  freeze(name: string, frozen: boolean): Promise<boolean>;
}

export class CgroupError extends Error {
  override readonly name = 'CgroupError';
  constructor(
    message: string,
    /** The errno name (EBUSY, ESRCH, ...) when a system call failed. */
    readonly code: string | null = null,
    readonly file: string | null = null,
  ) {
    super(message);
  }
}

export const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/;

/** Sliver names become directory names: anything that could climb out of the parent is refused. */
export function validateGroupName(name: string, what = 'sliver name'): string {
  if (typeof name !== 'string' || !NAME.test(name) || name.includes('..')) {
    throw new CgroupError(
      `invalid ${what} ${JSON.stringify(name)}: up to 32 letters, digits, "_", "-" and ".", not starting with "." or "-"`,
    );
  }
  return name;
}

export function validateParent(parent: string): string {
  for (const part of parent.split('/')) validateGroupName(part, `cgroup parent ${JSON.stringify(parent)}: component`);
  return parent;
}

export function validateLimits(name: string, limits: CgroupLimits): void {
  const fail = (field: string, value: unknown, rule: string) => {
    throw new CgroupError(`invalid ${field} ${String(value)} for sliver "${name}": ${rule}`);
  };
  const { cpuShares, cpuQuotaUs, memoryBytes, pidsMax } = limits;
  if (!Number.isInteger(cpuShares) || cpuShares < SHARES_MIN || cpuShares > SHARES_MAX) {
    fail('cpuShares', cpuShares, `an integer from ${SHARES_MIN} to ${SHARES_MAX}`);
  }
  if (cpuQuotaUs !== null && (!Number.isSafeInteger(cpuQuotaUs) || cpuQuotaUs < 1_000)) {
    fail('cpuQuotaUs', cpuQuotaUs, 'null or an integer of at least 1000 (the kernel refuses less than 1 ms)');
  }
  if (memoryBytes !== null && (!Number.isSafeInteger(memoryBytes) || memoryBytes < 1)) fail('memoryBytes', memoryBytes, 'null or a positive integer');
  if (pidsMax !== null && (!Number.isSafeInteger(pidsMax) || pidsMax < 0)) fail('pidsMax', pidsMax, 'null or a non-negative integer');
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function errorCode(error: unknown): string | null {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : null;
}

const HINTS: Readonly<Record<string, string>> = {
  EINVAL: 'the kernel refused the value',
  ENOENT: 'no such control file: is the controller enabled for this group?',
  EACCES: 'no such control file: is the controller enabled for this group?',
  ESRCH: 'no such process',
  EPERM: 'not permitted',
  ENOSPC: 'the group is not set up for this controller',
};

/** An errno as people read it, with a hint for the codes cgroups give. */
export function describe(error: unknown, file: string): string {
  const code = errorCode(error);
  if (!code) return String(error);
  const hint = code === 'EBUSY' ? (/memory\.(memsw\.)?limit_in_bytes$|memory\.max$/.test(file) ? 'usage is above it' : 'busy') : HINTS[code];
  return hint ? `${code} (${hint})` : code;
}

// Control files are read, and groups listed, synchronously: cgroupfs is kernel memory and answers in
// microseconds, where an asynchronous call waits its turn in libuv's four threads behind the fsyncs
// of the database and the account files and the removal of homes, and costs several times the CPU
// (a thousand slivers removed spent an eighth of the daemon's time in reads of control files).
// Writes stay asynchronous: a lower memory limit makes the kernel reclaim before it answers.

/** A control file's contents, trimmed; null when the file does not exist. */
export async function readControl(file: string): Promise<string | null> {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return null;
    throw new CgroupError(`cannot read ${file}: ${describe(error, file)}`, errorCode(error), file);
  }
}

export async function exists(file: string): Promise<boolean> {
  try {
    accessSync(file);
    return true;
  } catch {
    return false;
  }
}

// Never O_CREAT: /sys/fs/cgroup is often a tmpfs, where a control file of a hierarchy that is not
// mounted would be created as a plain file and the limit silently lost.
const WRITE_FLAGS = constants.O_WRONLY | constants.O_TRUNC;

/** Writes one value in one write(2), as the kernel parses it; `subject` names the group in errors. */
export async function writeControl(file: string, value: string, subject: string): Promise<void> {
  try {
    await writeFile(file, value, { flag: WRITE_FLAGS });
  } catch (error) {
    throw new CgroupError(
      `cannot set ${basename(file)} of ${subject} to ${value} in ${dirname(file)}: ${describe(error, file)}`,
      errorCode(error),
      file,
    );
  }
}

/** Writes `desired` unless the kernel already shows it, so that a repeated apply changes nothing. */
export async function setControl(file: string, desired: string, subject: string, same = (current: string) => current === desired): Promise<void> {
  const current = await readControl(file);
  if (current !== null && same(current)) return;
  await writeControl(file, desired, subject);
}

export const sliverSubject = (name: string) => `sliver "${name}"`;

export const PARENT_SUBJECT = "the slivers' parent group";

export const parseCount = (text: string | null) => (text !== null && /^\d+$/.test(text) ? Number(text) : null);

/** `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control). */
export function keyedValue(text: string | null, key: string): number | null {
  const match = text === null ? null : new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return match ? Number(match[1]) : null;
}

let cpuCountCache: number | null = null;

/**
 * The number of CPUs the host's own tasks may spread over, which the parent's weight answers to.
 * Read once: os.cpus() parses /proc for every CPU's model and times, and CPUs added later (rare
 * on a node) only make the parent's weight a little low until the daemon restarts.
 */
export function cpuCount(): number {
  cpuCountCache ??= Math.max(1, cpus().length);
  return cpuCountCache;
}

let pageSizeCache: number | null = null;

/** Memory limits read back rounded down to whole pages; the first mapping of smaps tells their size. */
export async function pageSize(): Promise<number> {
  if (pageSizeCache === null) {
    const handle = await open('/proc/self/smaps', 'r').catch(() => null);
    const head = handle ? await handle.read(Buffer.alloc(4096), 0, 4096, 0).finally(() => handle.close()) : null;
    const kb = head && /^KernelPageSize:\s+(\d+) kB$/m.exec(head.buffer.toString('utf8', 0, head.bytesRead));
    // Without /proc the common size will do: at worst an unchanged limit is written again.
    pageSizeCache = kb ? Number(kb[1]) * 1024 : 4096;
  }
  return pageSizeCache;
}

/**
 * The group's directory and every group below it, parents before children. A directory of cgroupfs
 * (kernfs) counts its subdirectories in its link count, so a group with 2 links has none and is not
 * listed: listing one reads every control file's entry (dozens under v1), in every hierarchy, for
 * every sliver killed and removed. Any other count (more, or 1 on file systems that do not keep it)
 * is listed.
 */
export async function subtree(dir: string): Promise<string[]> {
  const found: string[] = [];
  const pending = [dir];
  while (pending.length > 0) {
    const current = pending.shift()!;
    let entries;
    try {
      if (statSync(current).nlink === 2) {
        found.push(current);
        continue;
      }
      entries = readdirSync(current, { withFileTypes: true });
    } catch (error) {
      if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') continue;
      throw new CgroupError(`cannot list ${current}: ${describe(error, current)}`, errorCode(error), current);
    }
    found.push(current);
    for (const entry of entries) if (entry.isDirectory()) pending.push(join(current, entry.name));
  }
  return found;
}

/** Pids in the group or below it, in every hierarchy given. */
export async function pidsIn(dirs: readonly string[]): Promise<Set<number>> {
  const all = new Set<number>();
  for (const dir of dirs) {
    for (const group of await subtree(dir)) {
      for (const line of ((await readControl(join(group, 'cgroup.procs'))) ?? '').split('\n')) if (/^\d+$/.test(line)) all.add(Number(line));
    }
  }
  return all;
}

export async function movePid(procsFile: string, pid: number, subject: string): Promise<void> {
  try {
    await writeFile(procsFile, String(pid), { flag: WRITE_FLAGS });
  } catch (error) {
    throw new CgroupError(`cannot move pid ${pid} into ${subject} (${procsFile}): ${describe(error, procsFile)}`, errorCode(error), procsFile);
  }
}

/** Real uid and state of every process, from /proc/<pid>/status; processes that exit meanwhile are left out. */
export async function processOwners(): Promise<Map<number, { uid: number; state: string }>> {
  const owners = new Map<number, { uid: number; state: string }>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => null);
    const uid = status && /^Uid:\s+(\d+)/m.exec(status);
    const state = status && /^State:\s+(\S)/m.exec(status);
    if (uid && state) owners.set(Number(entry), { uid: Number(uid[1]), state: state[1]! });
  }
  return owners;
}

export async function isGone(pid: number): Promise<boolean> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null);
  return status === null || /^State:\s+[ZX]/m.test(status);
}

export async function groupExists(dir: string): Promise<boolean> {
  return statSync(dir, { throwIfNoEntry: false })?.isDirectory() ?? false;
}

