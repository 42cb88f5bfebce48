// Disk limits for slivers (`disk_max`, KiB): a user quota on the file system that holds the homes,
// where that file system has user quota turned on; usage is measured either way.
//
// Whether limits are enforced is asked of the kernel (`quotaon -p`), not read from the mount
// options: on ext4 `usrquota` does nothing until quota is turned on (and needs a kernel with a quota
// format), while the ext4 `quota` feature accounts usage from mount time but enforces limits only
// when mounted with `usrquota` or after `quotaon`. Where quota only accounts, usage still comes
// from it; where there is no quota at all, from a walk of the home.
//
// The soft limit is set equal to the hard one. A lower soft limit lets a sliver pass it for the
// grace period and then fails its writes at the soft limit, so the size at which writes fail would
// depend on when they were made; disk_max promises one number, and nothing here sends warnings.
//
// A quota counts the blocks a uid owns anywhere on that file system; a walk counts the home only.
import { constants } from 'node:fs';
import { access, lstat, readdir, readFile, realpath } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import { runCommand, type CommandResult } from '../host/exec.js';
import { type MountEntry, parseMountinfo, mountHolding, hasUserQuotaOption, type QuotaState, parseQuotaonState, type QuotaEntry, parseRepquotaCsv } from './disk-parse.js';
import { describeError } from '../util/errors.js';

// A fixed PATH: the daemon may be started by npm, whose PATH puts node_modules/.bin first. The C
// locale because quotaon's state line, which is parsed, is translated.
const TOOL_DIRS = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const TOOL_ENV = { PATH: TOOL_DIRS.join(':'), LC_ALL: 'C' };
const TOOL_TIMEOUT_MS = 30_000;
const QUOTA_TOOLS = ['quotaon', 'setquota', 'repquota'] as const;

export interface DiskSupport {
  /** Limits set by apply() are enforced by the kernel. */
  readonly enforced: boolean;
  /** The kernel accounts usage per uid (enforced or not): usage comes from the quota. */
  readonly accounted: boolean;
  /** Why limits are not enforced ("not enforced: ..."); null when they are. */
  readonly reason: string | null;
  readonly mountPoint: string;
  readonly device: string;
  readonly fsType: string;
}

export interface DiskUsage {
  readonly usedKiB: number;
  /** The hard limit in force as the kernel has it; null: none (or quota is not accounted). */
  readonly limitKiB: number | null;
  readonly enforced: boolean;
  readonly source: 'quota' | 'walk';
  /** False when a walk stopped at its bound: usedKiB is then a lower bound. */
  readonly complete: boolean;
}

export interface SliverHome {
  readonly uid: number;
  readonly home: string;
}

export interface DiskLimits {
  /** Found once and cached; `refresh` looks again (after an administrator turned quota on, say). */
  support(options?: { refresh?: boolean }): Promise<DiskSupport>;
  /** Sets the uid's block limit (null or 0: none) where enforced; elsewhere does nothing. Writes
   * only when the kernel's limits differ. */
  apply(uid: number, limitKiB: number | null): Promise<void>;
  usage(uid: number, home: string): Promise<DiskUsage>;
  /** Usage of many slivers: one repquota for all where quota accounts, else a walk of each home. */
  usageAll(slivers: readonly SliverHome[]): Promise<Map<number, DiskUsage>>;
}

export interface DiskLimitsOptions {
  readonly homeBase: string;
  /** A walk stops after this many entries (default 1,000,000)... */
  readonly walkMaxEntries?: number;
  /** ...or after this long (default 60 s), and reports itself incomplete. */
  readonly walkMaxMs?: number;
}

// ---- support -----------------------------------------------------------------------------------

export interface SupportFacts {
  readonly homeBase: string;
  readonly mount: MountEntry | null;
  /** Quota tools not installed. */
  readonly missingTools: readonly string[];
  /** From quotaon -p; null: it listed no quota on the mount (or could not be asked). */
  readonly state: QuotaState | null;
  /** What the kernel lacks for quota, when known ("CONFIG_QFMT_V2 is not set"). */
  readonly kernelGap: string | null;
}

export function decideSupport(facts: SupportFacts): DiskSupport {
  const { mount } = facts;
  if (mount === null) {
    return { enforced: false, accounted: false, reason: `not enforced: no mount holds ${facts.homeBase}`, mountPoint: '', device: '', fsType: '' };
  }
  const where = `${mount.mountPoint} (${mount.fsType})`;
  const base = { mountPoint: mount.mountPoint, device: mount.device, fsType: mount.fsType };
  const kernel = facts.kernelGap === null ? '' : `; the kernel cannot keep user quota (${facts.kernelGap})`;
  if (facts.missingTools.length > 0) {
    const option = hasUserQuotaOption(mount) ? '' : ', and it is mounted without usrquota';
    return { ...base, enforced: false, accounted: false, reason: `not enforced: ${where}: quota tools missing (${facts.missingTools.join(', ')})${option}${kernel}` };
  }
  switch (facts.state) {
    case 'enforced':
      return { ...base, enforced: true, accounted: true, reason: null };
    case 'accounting':
      return { ...base, enforced: false, accounted: true, reason: `not enforced: user quota on ${where} only accounts usage (mount it with usrquota, or run quotaon -u ${mount.mountPoint})` };
    case 'off':
      return { ...base, enforced: false, accounted: false, reason: `not enforced: user quota on ${where} is off${kernel || ` (run quotacheck -cum ${mount.mountPoint} and quotaon -u ${mount.mountPoint})`}` };
    case null:
      return hasUserQuotaOption(mount)
        ? { ...base, enforced: false, accounted: false, reason: `not enforced: ${where} is mounted with usrquota but the quota tools find no quota on it${kernel}` }
        : { ...base, enforced: false, accounted: false, reason: `not enforced: ${where} is mounted without usrquota${kernel}` };
  }
}

/** What the running kernel lacks for user quota on `fsType`, when that can be known; else null. */
async function kernelQuotaGap(fsType: string): Promise<string | null> {
  if (!(await exists('/proc/sys/fs/quota'))) return 'CONFIG_QUOTA is not set';
  const config = await readFile('/proc/config.gz').then((gz) => promisify(gunzip)(gz)).then((b) => b.toString('latin1')).catch(() => null);
  if (config === null) return null;
  // XFS keeps its quota in its own format; the others need the kernel's v2 (or ancient v1) format.
  const needed = fsType === 'xfs' ? ['CONFIG_XFS_QUOTA'] : ['CONFIG_QFMT_V2', 'CONFIG_QFMT_V1'];
  const built = needed.filter((name) => new RegExp(`^${name}=[ym]$`, 'm').test(config));
  return built.length > 0 ? null : `${needed[0]} is not set`;
}

async function exists(path: string): Promise<boolean> {
  return access(path, constants.F_OK).then(() => true, () => false);
}

async function missingTools(): Promise<string[]> {
  const missing: string[] = [];
  for (const tool of QUOTA_TOOLS) {
    const found = await Promise.all(TOOL_DIRS.map((d) => access(join(d, tool), constants.X_OK).then(() => true, () => false)));
    if (!found.includes(true)) missing.push(tool);
  }
  return missing;
}

/** The path with symlinks resolved as far as it exists (a home base may not exist yet). */
async function resolveExisting(path: string): Promise<string> {
  const absolute = resolve(path);
  try {
    return await realpath(absolute);
  } catch {
    const parent = dirname(absolute);
    return parent === absolute ? absolute : join(await resolveExisting(parent), basename(absolute));
  }
}

// ---- walk --------------------------------------------------------------------------------------

export interface TreeUsage {
  readonly usedKiB: number;
  readonly entries: number;
  readonly complete: boolean;
}

// Few requests in flight at once: they share libuv's four threads with the database's writes,
// which then wait behind at most this many.
const WALK_CONCURRENCY = 4;

const vanished = (error: unknown): boolean => ['ENOENT', 'ENOTDIR'].includes((error as NodeJS.ErrnoException).code ?? '');
const refused = (error: unknown): boolean => ['EACCES', 'EPERM'].includes((error as NodeJS.ErrnoException).code ?? '');

/**
 * The blocks allocated under `root` as `du -sk -x` counts them: lstat only (a symlink counts as
 * itself, never its target), a hard-linked file once, sparse files by allocated blocks, no
 * descent into other file systems. Stops after `maxEntries` entries or at `deadline` (epoch ms).
 */
export async function measureTree(root: string, bounds: { maxEntries: number; deadline: number }): Promise<TreeUsage> {
  let blocks = 0;
  let entries = 0;
  let complete = true;
  let rootDev: number | null = null;
  const seen = new Set<number>();
  const pending: string[] = [root];

  const visit = async (path: string): Promise<void> => {
    const st = await lstat(path).catch((e: unknown) => {
      if (vanished(e)) return null;
      throw new Error(`disk usage: lstat ${path}: ${describeError(e)}`);
    });
    if (st === null) return;
    rootDev ??= st.dev;
    if (st.dev !== rootDev) return;
    entries++;
    if (st.isDirectory() || st.nlink < 2 || !seen.has(st.ino)) blocks += st.blocks;
    if (!st.isDirectory()) {
      if (st.nlink > 1) seen.add(st.ino);
      return;
    }
    try {
      for (const name of await readdir(path)) pending.push(join(path, name));
    } catch (e) {
      if (refused(e)) complete = false;
      else if (!vanished(e)) throw new Error(`disk usage: readdir ${path}: ${describeError(e)}`);
    }
  };

  await new Promise<void>((done, fail) => {
    let inFlight = 0;
    let failed = false;
    const pump = (): void => {
      while (!failed && inFlight < WALK_CONCURRENCY && pending.length > 0) {
        if (entries + inFlight >= bounds.maxEntries || Date.now() >= bounds.deadline) {
          complete = false;
          pending.length = 0;
          break;
        }
        inFlight++;
        visit(pending.pop()!).then(
          () => {
            inFlight--;
            pump();
          },
          (error: unknown) => {
            failed = true;
            fail(error);
          },
        );
      }
      if (inFlight === 0 && !failed) done();
    };
    pump();
  });
  return { usedKiB: Math.ceil(blocks / 2), entries, complete };
}

// ---- the adapter -------------------------------------------------------------------------------

function checkUid(uid: number): void {
  if (!Number.isInteger(uid) || uid < 0 || uid > 0xfffffffe) throw new Error(`disk limits: not a uid: ${uid}`);
}

export function createDiskLimits(options: DiskLimitsOptions): DiskLimits {
  const walkMaxEntries = options.walkMaxEntries ?? 1_000_000;
  const walkMaxMs = options.walkMaxMs ?? 60_000;
  let found: Promise<DiskSupport> | null = null;

  const tool = (file: string, args: string[]): Promise<CommandResult> => runCommand(file, args, { env: TOOL_ENV, timeoutMs: TOOL_TIMEOUT_MS });
  const blame = (uid: number | null) => (error: unknown): never => {
    throw new Error(`disk limits${uid === null ? '' : ` for uid ${uid}`}: ${describeError(error)}`, { cause: error });
  };

  const findSupport = async (): Promise<DiskSupport> => {
    const homeBase = await resolveExisting(options.homeBase);
    const mount = mountHolding(parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8')), homeBase);
    if (mount === null) return decideSupport({ homeBase, mount, missingTools: [], state: null, kernelGap: null });
    const missing = await missingTools();
    let state: QuotaState | null = null;
    if (missing.length === 0) {
      // quotaon -p exits non-zero when quota is on, so its output is what counts.
      const result = await tool('quotaon', ['-p', '-u', '-v', mount.mountPoint]).catch((error: { stdout?: string }) => ({ stdout: error.stdout ?? '' }));
      state = parseQuotaonState(result.stdout);
    }
    const kernelGap = state === 'enforced' || state === 'accounting' ? null : await kernelQuotaGap(mount.fsType);
    return decideSupport({ homeBase, mount, missingTools: missing, state, kernelGap });
  };

  const support = (opts: { refresh?: boolean } = {}): Promise<DiskSupport> => {
    if (found === null || opts.refresh) {
      const finding = findSupport();
      found = finding;
      // A failure is not remembered: the next call looks again.
      finding.catch(() => {
        if (found === finding) found = null;
      });
    }
    return found;
  };

  // Callers that ask while a repquota runs share it: the supervisors apply every sliver's limit at
  // once after a start, and one read per sliver would cost N reads of N entries.
  let reading: Promise<Map<number, QuotaEntry>> | null = null;
  const quotas = (mountPoint: string, uid: number | null): Promise<Map<number, QuotaEntry>> => {
    reading ??= tool('repquota', ['-u', '-v', '-n', '-p', '-O', 'csv', mountPoint])
      .then(({ stdout }) => parseRepquotaCsv(stdout))
      .finally(() => {
        reading = null;
      });
    return reading.catch(blame(uid));
  };

  const fromQuota = (entry: QuotaEntry | undefined, enforced: boolean): DiskUsage => ({
    usedKiB: entry?.usedKiB ?? 0,
    limitKiB: entry && entry.hardKiB > 0 ? entry.hardKiB : null,
    enforced,
    source: 'quota',
    complete: true,
  });

  const walk = async (home: string): Promise<DiskUsage> => {
    const tree = await measureTree(home, { maxEntries: walkMaxEntries, deadline: Date.now() + walkMaxMs });
    return { usedKiB: tree.usedKiB, limitKiB: null, enforced: false, source: 'walk', complete: tree.complete };
  };

  return {
    support,

    async apply(uid, limitKiB) {
      checkUid(uid);
      if (limitKiB !== null && (!Number.isInteger(limitKiB) || limitKiB < 0)) {
        throw new Error(`disk limits for uid ${uid}: not a limit in KiB: ${limitKiB}`);
      }
      const s = await support();
      if (!s.enforced) return;
      const wanted = limitKiB ?? 0;
      const current = (await quotas(s.mountPoint, uid)).get(uid);
      if (current && current.softKiB === wanted && current.hardKiB === wanted) return;
      if (!current && wanted === 0) return;
      // Inode limits are not ours to set: whatever is there stays.
      const inodes = [String(current?.inodeSoft ?? 0), String(current?.inodeHard ?? 0)];
      await tool('setquota', ['-u', String(uid), String(wanted), String(wanted), ...inodes, s.mountPoint]).catch(blame(uid));
    },

    async usage(uid, home) {
      checkUid(uid);
      const s = await support();
      if (!s.accounted) return walk(home);
      return fromQuota((await quotas(s.mountPoint, uid)).get(uid), s.enforced);
    },

    async usageAll(slivers) {
      for (const { uid } of slivers) checkUid(uid);
      const s = await support();
      const result = new Map<number, DiskUsage>();
      if (s.accounted) {
        const all = await quotas(s.mountPoint, null);
        for (const { uid } of slivers) result.set(uid, fromQuota(all.get(uid), s.enforced));
      } else {
        // One home after the other: each walk already keeps a few requests in flight.
        for (const { uid, home } of slivers) result.set(uid, await walk(home));
      }
      return result;
    },
  };
}
