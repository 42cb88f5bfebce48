// Makes the slivers' effective rspecs true on the host: cgroups, traffic classes, byte caps and
// disk quotas, for all slivers at once (a CPU weight or the node's cap depends on every sliver).
//
// Every apply starts from the records and the host as they are now and sends only what differs
// from what was last applied, so a loan between two slivers writes those two slivers' files and
// the classes they changed, whatever the number of slivers. Applies never overlap; a request
// during one is served by the next, which starts from the newest state. A failure of one sliver's
// limits is recorded against it and the others are applied regardless.
import type { Logger } from '../log.js';
import type { Rspec } from '../rspec/resources.js';
import { applyCgroupLimits, applyDiskLimits, applyShapingLimits, problemBook, type LimitDomain } from './apply.js';
import { ceilingsOf, loadByteCaps, sampleByteCaps, saveByteCaps, type ByteCapStates } from './bwmon.js';
import type { SliverCgroups } from './cgroups.js';
import type { DiskLimits } from './disk.js';
import { sliverLimits, type LimitTarget, type SliverLimits } from './sliver-limits.js';
import { sliverClassMinors } from './shaping.js';
import type { TrafficShaper } from './tc.js';
import { serialQueue } from '../util/serial.js';

export interface LimitInput {
  /** Slivers the records ask for and whose account exists, with their effective rspecs. */
  readonly slivers: readonly LimitTarget[];
  /** Every sliver account of this daemon's on the host (its group is kept while the account exists). */
  readonly present: ReadonlySet<string>;
  /**
   * Accounts on the host that are not this daemon's. A group of that name under a shared parent is
   * another daemon's (or will be): never removed.
   */
  readonly others: ReadonlySet<string>;
  /** The node's cap on ordinary traffic (bwcap record), kbit/s; null: the link rate. */
  readonly bwcapKbit: number | null;
}

export type { LimitDomain } from './apply.js';

export interface EnforcerDeps {
  readonly cgroups: SliverCgroups | null;
  readonly shaper: TrafficShaper | null;
  readonly disk: DiskLimits | null;
  readonly cpuCount: number;
  readonly byteCapFile: string;
  readonly byteCapPeriodSeconds: number;
  readonly input: () => Promise<LimitInput>;
  readonly logger: Logger;
  readonly now: () => Date;
}

export interface Enforcer {
  /** Resolves after an apply that started after the call (so it saw the caller's changes). */
  refresh(): Promise<void>;
  /** Reads the class counters, steps the byte caps and throttles or restores ceilings. */
  sampleBytes(): Promise<void>;
  /** Moves stray processes of the slivers' uids into their groups. */
  sweep(): Promise<number>;
  /** The cgroup.procs files a launcher writes its pid into; empty when the group cannot be used. */
  launchFiles(name: string): string[];
  /** Kills every process in the sliver's group; 0 when it has none (or no group). */
  killAll(name: string): Promise<number>;
  /** Removes the sliver's group (its account is being destroyed). */
  remove(name: string): Promise<void>;
  /** Problems of the last apply, by sliver and domain; '' is the node. */
  problems(): ReadonlyMap<string, ReadonlyMap<LimitDomain, string>>;
  byteCaps(): ByteCapStates;
  /** The limits the last apply computed, by sliver. */
  planned(): ReadonlyMap<string, SliverLimits>;
}

/** What the limits are applied to, from the accounts the records ask for and those on the host. Pure. */
export function limitInputOf(
  specs: ReadonlyArray<{ name: string; kind: string; rspec: Rspec }>,
  host: { owned: ReadonlyArray<{ name: string; kind: string; uid: number | null }>; foreign: ReadonlySet<string> },
  bwcapKbit: number | null,
): LimitInput {
  const { owned } = host;
  const wanted = new Map(specs.filter((s) => s.kind === 'sliver').map((s) => [s.name, s.rspec]));
  // A libvirt sliver has no uid: its limits are in its domain definition, not in cgroups and tc.
  const onHost = owned.filter((o): o is typeof o & { uid: number } => o.kind === 'sliver' && o.uid !== null);
  return {
    slivers: onHost.flatMap((o) => {
      const rspec = wanted.get(o.name);
      return rspec ? [{ name: o.name, uid: o.uid, rspec }] : [];
    }),
    present: new Set(onHost.map((o) => o.name)),
    others: host.foreign,
    bwcapKbit,
  };
}

export async function createEnforcer(deps: EnforcerDeps): Promise<Enforcer> {
  const { cgroups, shaper, disk, logger } = deps;
  const nowSeconds = () => Math.floor(deps.now().getTime() / 1000);
  let byteCaps = await loadByteCaps(deps.byteCapFile, (msg, fields) => logger.warn(msg, fields));

  const appliedCgroups = new Map<string, SliverLimits['cgroup']>();
  const appliedDisk = new Map<number, number | null>();
  let planned = new Map<string, SliverLimits>();
  let lastInput: LimitInput | null = null;
  const problems = problemBook(logger);

  // One task at a time: applies, samples, sweeps and removals all touch the same files.
  const queue = serialQueue();
  const serial = <T>(task: () => Promise<T>): Promise<T> => queue.run(task);

  const applyShaping = (limits: readonly SliverLimits[], bwcapKbit: number | null) =>
    shaper ? applyShapingLimits(shaper, problems, logger, limits,
      (shaped) => ceilingsOf(byteCaps, shaped, nowSeconds(), deps.byteCapPeriodSeconds), bwcapKbit) : Promise.resolve();

  const applyOnce = async () => {
    const started = Date.now();
    const input = await deps.input();
    lastInput = input;
    const limits = sliverLimits(input.slivers, deps.cpuCount);
    planned = new Map(limits.map((l) => [l.name, l]));
    problems.keepOnly(input.present);
    if (cgroups) await applyCgroupLimits(cgroups, appliedCgroups, problems, logger, limits, input);
    await applyShaping(limits, input.bwcapKbit);
    if (disk) await applyDiskLimits(disk, appliedDisk, problems, limits);
    logger.debug('limits applied', { slivers: limits.length, duration_ms: Date.now() - started });
  };

  // Coalescing: callers during an apply share the one queued after it.
  let queued: Promise<void> | null = null;
  const refresh = (): Promise<void> => {
    if (queued) return queued;
    const next = serial(async () => {
      queued = null;
      await applyOnce();
    });
    queued = next;
    return next;
  };

  let lastCeilings = '';
  let lastSaved = JSON.stringify(byteCaps);
  const sampleOnce = async () => {
    if (!shaper || !lastInput) return;
    const classes = await shaper.read();
    const readings = lastInput.slivers.flatMap((s) => {
      let minors;
      try {
        minors = sliverClassMinors(shaper.layout, s.uid);
      } catch {
        return [];
      }
      return [{
        name: s.name, uid: s.uid, rspec: s.rspec,
        mainCounter: classes.get(minors.main)?.sentBytes ?? 0,
        exemptCounter: classes.get(minors.exempt)?.sentBytes ?? 0,
      }];
    });
    const sample = sampleByteCaps(byteCaps, readings, nowSeconds(), deps.byteCapPeriodSeconds);
    byteCaps = sample.states;
    // Idle slivers leave the counts as they were: no write (each is a durable one).
    const saved = JSON.stringify(byteCaps);
    if (saved !== lastSaved) {
      await saveByteCaps(deps.byteCapFile, byteCaps);
      lastSaved = saved;
    }
    for (const n of sample.notices) {
      logger.warn('byte cap reached; throttled until the period ends', {
        sliver: n.name, traffic: n.pair === 'main' ? 'ordinary' : 'exempt', used_kbyte: Math.floor(n.usedBytes / 1024), ceiling_kbit: n.ceilingKbit,
      });
    }
    const key = JSON.stringify([...sample.ceilings].sort((a, b) => a[0] - b[0]));
    if (key !== lastCeilings) {
      lastCeilings = key;
      await applyShaping(sliverLimits(lastInput.slivers, deps.cpuCount), lastInput.bwcapKbit);
    }
  };

  return {
    refresh,
    sampleBytes: () => serial(sampleOnce),
    sweep: () =>
      serial(async () => {
        if (!cgroups || !lastInput) return 0;
        const owners = new Map(lastInput.slivers.filter((s) => appliedCgroups.has(s.name)).map((s) => [s.uid, s.name]));
        if (owners.size === 0) return 0;
        const { moved } = await cgroups.sweep(owners);
        if (moved > 0) logger.info('stray processes moved into their slivers\' cgroups', { moved });
        return moved;
      }),
    launchFiles: (name) => (cgroups && appliedCgroups.has(name) ? cgroups.procFiles(name) : []),
    killAll: async (name) => (cgroups ? cgroups.killAll(name) : 0),
    remove: (name) =>
      serial(async () => {
        if (!cgroups) return;
        await cgroups.remove(name);
        appliedCgroups.delete(name);
      }),
    problems: () => problems.all,
    byteCaps: () => byteCaps,
    planned: () => planned,
  };
}

export type { LimitTarget, Rspec };
