// The one allocator of uid ranges for tests. Whatever a test does as a uid takes its uids from
// here: a test daemon's sliver_uid_min..max (a daemon destroys the marked accounts of its range
// that its document does not list, and sweeps the processes of its accounts' uids), the unix
// runtime's accounts, and processes started as a bare uid. Two holders never share a uid, whether
// they are two files of one run or two runs from different checkouts on the same host.
//
// Leases are files in one directory (under /run: gone at reboot, as every holder is). A lease is
// live while one of its holders lives: the test process, and the daemons it started with the range
// (so a test killed before its cleanup keeps the range while its daemon still runs). A holder is a
// pid with the start time the kernel gives it, so a reused pid is not mistaken for the holder.
//
// Taking a lease: pick a range that no live lease overlaps, publish the lease (written under a
// temporary name and renamed into place: a lease is read whole or not at all), then read the
// leases again; if another live lease overlaps ours, withdraw and try again after a random pause.
// Of two overlapping leases the one published second sees the first when it checks, so at most one
// of them is kept. Leases of dead holders are ignored and removed by whoever meets them. (A lock
// file per uid block taken with O_EXCL would need a stale one removed, and that removal can race
// with a new holder taking the block; publishing and checking needs no removal to be safe.)
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface UidRange {
  readonly min: number;
  readonly max: number;
}

export interface UidLease extends UidRange {
  /** Keeps the lease while `pid` lives too (a daemon started with the range). */
  hold(pid: number): void;
  /** This process lets go; the lease goes with the last live holder. Idempotent. */
  release(): Promise<void>;
}

export interface LeaseOptions {
  /** How many uids (rounded up to whole blocks). */
  readonly count: number;
  /** Who holds it and why, for whoever reads the lease directory. */
  readonly purpose: string;
  readonly dir?: string;
  readonly pool?: UidRange;
  /** Ranges start at the pool's start plus a multiple of this, and are a multiple of it long. */
  readonly block?: number;
  /** How long to wait for room when every fitting range is held (other runs end). */
  readonly waitMs?: number;
}

/** Where the leases of every test process on this host are. */
export const LEASE_DIR = '/run/nodemgr-test-uid-leases';

/**
 * The uids tests may use: inside 60000-79999, clear of Debian's statically allocated uids
 * (60000-64999: libvirt-qemu is 64055) and of nobody (65534), which processes of other tests run
 * as, and clear of the fixed ranges test files used before this allocator (60000-61999,
 * 70000-79999), so that a run from an older checkout on the same host cannot meet a leased range.
 * Far below the 32639 uids a shaped range may hold.
 */
export const UID_POOL: UidRange = { min: 66_000, max: 69_999 };

const BLOCK = 100;
/** Ranges stay small so that many tests (and runs) fit in the pool at once. */
const MAX_COUNT = 1_000;

interface Holder {
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat: the process's start time since boot. */
  readonly start: string;
}

interface LeaseFile extends UidRange {
  readonly purpose: string;
  readonly checkout: string;
  readonly since: string;
  readonly holders: readonly Holder[];
}

function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: fields are counted after its last ")".
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function holderOf(pid: number): Holder {
  const start = startTimeOf(pid);
  if (start === null) throw new Error(`uid lease: no process ${pid} to hold the lease`);
  return { pid, start };
}

const isAlive = (holder: Holder): boolean => startTimeOf(holder.pid) === holder.start;
const overlaps = (a: UidRange, b: UidRange): boolean => a.min <= b.max && b.min <= a.max;
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function parseLease(text: string): LeaseFile | null {
  try {
    const lease = JSON.parse(text) as LeaseFile;
    const valid = Number.isInteger(lease.min) && Number.isInteger(lease.max) && Array.isArray(lease.holders) &&
      lease.holders.every((h) => Number.isInteger(h.pid) && typeof h.start === 'string');
    return valid ? lease : null;
  } catch {
    return null;
  }
}

interface Found {
  readonly file: string;
  readonly lease: LeaseFile;
  readonly live: boolean;
}

/** The leases in `dir`; those of dead holders (and their unfinished temporary files) are removed. */
async function readLeases(dir: string): Promise<Found[]> {
  const found: Found[] = [];
  for (const entry of await readdir(dir)) {
    const file = join(dir, entry);
    if (entry.endsWith('.tmp')) {
      // ".<lease name>.tmp", written by the pid in the lease name; left by a writer that died.
      const pid = Number(/\.(\d+)\.[0-9a-f]+\.lease\.tmp$/.exec(entry)?.[1]);
      if (pid && startTimeOf(pid) === null) await unlink(file).catch(() => undefined);
      continue;
    }
    if (!entry.endsWith('.lease')) continue;
    const text = await readFile(file, 'utf8').catch(() => null); // released meanwhile
    const lease = text === null ? null : parseLease(text);
    if (lease === null) continue;
    const live = lease.holders.some(isAlive);
    if (!live) await unlink(file).catch(() => undefined);
    found.push({ file, lease, live });
  }
  return found;
}

/** Writes a lease whole: readers see the previous contents or these, never a part. */
function writeLeaseSync(file: string, lease: LeaseFile): void {
  const temporary = join(file, '..', `.${file.slice(file.lastIndexOf('/') + 1)}.tmp`);
  writeFileSync(temporary, `${JSON.stringify(lease, null, 2)}\n`, { mode: 0o644 });
  renameSync(temporary, file);
}

async function writeLease(file: string, lease: LeaseFile): Promise<void> {
  const temporary = join(file, '..', `.${file.slice(file.lastIndexOf('/') + 1)}.tmp`);
  await writeFile(temporary, `${JSON.stringify(lease, null, 2)}\n`, { mode: 0o644 });
  await rename(temporary, file);
}

// What this process holds, let go of when it exits without its cleanup (a failed before hook).
const held = new Map<string, { lease: LeaseFile; holders: Holder[] }>();
let exitHookInstalled = false;

/** Leaves the lease to its other live holders, or removes it. Synchronous: it runs at exit too. */
function letGo(file: string): void {
  const mine = held.get(file);
  if (!mine) return;
  held.delete(file);
  const others = mine.holders.filter((h) => h.pid !== process.pid && isAlive(h));
  try {
    if (others.length > 0) writeLeaseSync(file, { ...mine.lease, holders: others });
    else unlinkSync(file);
  } catch {
    // already gone
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const file of [...held.keys()]) letGo(file);
  });
}

function describe(found: readonly Found[]): string {
  return found.map(({ lease }) => `${lease.min}-${lease.max} (${lease.purpose}; pid ${lease.holders.map((h) => h.pid).join(',')}; ${lease.checkout})`).join(', ');
}

/** Leases `count` uids that no other live test holds; see the top of this file. */
export async function leaseUids(options: LeaseOptions): Promise<UidLease> {
  const dir = options.dir ?? LEASE_DIR;
  const pool = options.pool ?? UID_POOL;
  const block = options.block ?? BLOCK;
  if (!Number.isInteger(options.count) || options.count < 1 || options.count > MAX_COUNT) {
    throw new Error(`uid lease: ask for 1 to ${MAX_COUNT} uids, not ${options.count}`);
  }
  const size = Math.ceil(options.count / block) * block;
  const starts: number[] = [];
  for (let start = pool.min; start + size - 1 <= pool.max; start += block) starts.push(start);
  if (starts.length === 0) throw new Error(`uid lease: ${size} uids do not fit in ${pool.min}-${pool.max}`);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  installExitHook();

  const deadline = Date.now() + (options.waitMs ?? 120_000);
  for (;;) {
    const live = (await readLeases(dir)).filter((f) => f.live);
    const free = starts.filter((start) => !live.some((f) => overlaps(f.lease, { min: start, max: start + size - 1 })));
    if (free.length === 0) {
      if (Date.now() > deadline) {
        throw new Error(`uid lease: no ${size} free uids in ${pool.min}-${pool.max} for ${options.purpose}; held: ${describe(live)}`);
      }
      await pause(200 + Math.random() * 300);
      continue;
    }
    // A random free range, so that processes asking at once rarely pick the same one; one that
    // starts at a multiple of its size if there is one, so that ranges of one size pack the pool.
    const aligned = free.filter((start) => (start - pool.min) % size === 0);
    const choice = aligned.length > 0 ? aligned : free;
    const min = choice[Math.floor(Math.random() * choice.length)]!;
    const range = { min, max: min + size - 1 };
    const lease: LeaseFile = {
      ...range, purpose: options.purpose, checkout: process.cwd(), since: new Date().toISOString(), holders: [holderOf(process.pid)],
    };
    const file = join(dir, `${range.min}-${range.max}.${process.pid}.${randomBytes(4).toString('hex')}.lease`);
    await writeLease(file, lease);
    const rivals = (await readLeases(dir)).filter((f) => f.file !== file && f.live && overlaps(f.lease, range));
    if (rivals.length > 0) {
      await unlink(file);
      await pause(10 + Math.random() * 90);
      continue;
    }
    const mine = { lease, holders: [...lease.holders] };
    held.set(file, mine);
    return {
      ...range,
      hold(pid) {
        if (!held.has(file) || mine.holders.some((h) => h.pid === pid)) return;
        mine.holders.push(holderOf(pid));
        writeLeaseSync(file, { ...lease, holders: mine.holders });
      },
      async release() {
        letGo(file);
      },
    };
  }
}
