// Applying the computed limits to the host, one domain at a time (cgroups, traffic classes, disk
// quotas), sending only what differs from what was last applied and recording, per sliver and
// domain, what could not be applied. Used by the enforcer, which decides when.
import type { Logger } from '../log.js';
import { describeError } from '../util/errors.js';
import type { SliverCgroups } from './cgroups.js';
import type { DiskLimits } from './disk.js';
import { sliverClassMinors } from './shaping.js';
import { sameCgroupLimits, type SliverLimits } from './sliver-limits.js';
import type { CeilingOverrides, TrafficShaper } from './tc.js';

/** Where a limit could not be applied, in words for the operator. */
export type LimitDomain = 'cgroup' | 'bandwidth' | 'disk';

/** What could not be applied, by sliver ('' is the node) and domain; each new problem logged once. */
export interface ProblemBook {
  readonly all: ReadonlyMap<string, ReadonlyMap<LimitDomain, string>>;
  /** Records the problem of the sliver in the domain; null clears it. */
  set(name: string, domain: LimitDomain, text: string | null): void;
  /** Forgets the problems of slivers that are gone. */
  keepOnly(present: ReadonlySet<string>): void;
}

export function problemBook(logger: Logger): ProblemBook {
  const problems = new Map<string, Map<LimitDomain, string>>();
  return {
    all: problems,
    set(name, domain, text) {
      let forName = problems.get(name);
      if (text === null) {
        forName?.delete(domain);
        if (forName?.size === 0) problems.delete(name);
        return;
      }
      if (forName?.get(domain) === text) return;
      if (!forName) problems.set(name, (forName = new Map()));
      forName.set(domain, text);
      logger.warn('limits not applied', { sliver: name || '(node)', domain, error: text });
    },
    keepOnly(present) {
      for (const name of problems.keys()) if (name !== '' && !present.has(name)) problems.delete(name);
    },
  };
}

const CGROUP_CONCURRENCY = 16;

/** Runs `task` over `items`, at most `width` at a time. */
async function inBatches<T>(items: readonly T[], width: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await task(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

/**
 * Writes the groups whose limits changed since `applied`, and removes the groups of accounts that
 * are gone; `applied` is brought up to date.
 */
export async function applyCgroupLimits(
  cgroups: SliverCgroups, applied: Map<string, SliverLimits['cgroup']>, problems: ProblemBook, logger: Logger,
  limits: readonly SliverLimits[], accounts: { present: ReadonlySet<string>; others: ReadonlySet<string> },
): Promise<void> {
  const changed = limits.filter((l) => {
    const before = applied.get(l.name);
    return !before || !sameCgroupLimits(before, l.cgroup);
  });
  // Each group is a few small files in each hierarchy; many at once keep the kernel busy while
  // the daemon waits on none in particular (1,000 new groups: 3.7 s one by one).
  await inBatches(changed, CGROUP_CONCURRENCY, async (l) => {
    try {
      await cgroups.apply(l.name, l.cgroup);
      applied.set(l.name, l.cgroup);
      problems.set(l.name, 'cgroup', null);
    } catch (error) {
      applied.delete(l.name);
      problems.set(l.name, 'cgroup', describeError(error));
    }
  });
  // Groups of accounts that are gone: what a destroy cut short, or a restart found. A group of an
  // account that exists and is not ours is another daemon's under the same parent.
  for (const name of await cgroups.list()) {
    if (accounts.present.has(name) || accounts.others.has(name)) continue;
    try {
      await cgroups.remove(name);
      applied.delete(name);
      logger.info('cgroup of a removed sliver removed', { sliver: name });
    } catch (error) {
      problems.set(name, 'cgroup', `left over and not removed: ${describeError(error)}`);
    }
  }
}

/** Brings the HTB tree and the classifier in line with the slivers' classes and the byte caps' ceilings. */
export async function applyShapingLimits(
  shaper: TrafficShaper, problems: ProblemBook, logger: Logger,
  limits: readonly SliverLimits[], ceilingsFor: (shaped: readonly SliverLimits[]) => CeilingOverrides, bwcapKbit: number | null,
): Promise<void> {
  const shaped = limits.filter((l) => {
    try {
      sliverClassMinors(shaper.layout, l.uid);
      problems.set(l.name, 'bandwidth', null);
      return true;
    } catch (error) {
      problems.set(l.name, 'bandwidth', describeError(error));
      return false;
    }
  });
  try {
    const done = await shaper.apply(shaped.map((l) => l.shaping), ceilingsFor(shaped), bwcapKbit);
    problems.set('', 'bandwidth', null);
    if (done.tcLines > 0 || done.classifierLoaded) {
      logger.debug('bandwidth limits applied', { tc_lines: done.tcLines, classifier_loaded: done.classifierLoaded });
    }
  } catch (error) {
    problems.set('', 'bandwidth', describeError(error));
  }
}

/** Sets the quotas that changed since `applied` (by uid), where the host enforces quotas. */
export async function applyDiskLimits(
  disk: DiskLimits, applied: Map<number, number | null>, problems: ProblemBook, limits: readonly SliverLimits[],
): Promise<void> {
  if (!(await disk.support()).enforced) return;
  for (const l of limits) {
    if (applied.has(l.uid) && applied.get(l.uid) === l.diskKiB) continue;
    try {
      await disk.apply(l.uid, l.diskKiB);
      applied.set(l.uid, l.diskKiB);
      problems.set(l.name, 'disk', null);
    } catch (error) {
      applied.delete(l.uid);
      problems.set(l.name, 'disk', describeError(error));
    }
  }
}
