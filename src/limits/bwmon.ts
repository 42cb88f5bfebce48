// Daily byte caps across all slivers (the original's bwmon): one sample of every class counter
// steps each sliver's two allowances (ordinary and exempt traffic), and the state is kept in a
// file so that a restart, or a sliver removed and added again within its period, counts on from
// where it was instead of granting a fresh allowance.
import { readFile, rename } from 'node:fs/promises';
import { writeFileDurably } from '../db/durable-file.js';
import type { LogContext } from '../log.js';
import type { Rspec } from '../rspec/resources.js';
import { stepByteCap, type ByteCapRule, type ByteCapState } from './byte-cap.js';
import { describeError } from '../util/errors.js';

export type TrafficPair = 'main' | 'exempt';

export interface SliverByteCaps {
  readonly main: ByteCapState;
  readonly exempt: ByteCapState;
}

/** Sliver name -> its allowances. Kept after a sliver goes, until its period would have ended. */
export type ByteCapStates = Readonly<Record<string, SliverByteCaps>>;

export interface ByteCapReading {
  readonly name: string;
  readonly uid: number;
  readonly rspec: Rspec;
  /** The class counters (bytes sent through each class since it was made). */
  readonly mainCounter: number;
  readonly exemptCounter: number;
}

export interface ByteCapNotice {
  readonly name: string;
  readonly pair: TrafficPair;
  readonly usedBytes: number;
  readonly ceilingKbit: number;
}

export interface ByteCapSample {
  readonly states: ByteCapStates;
  /** Ceilings of the throttled classes, by uid; a uid absent here has its normal ceilings. */
  readonly ceilings: Map<number, { mainKbit?: number; exemptKbit?: number }>;
  /** Throttling that started at this sample: the operator is told once per period. */
  readonly notices: ByteCapNotice[];
}

export function byteCapRules(rspec: Rspec): Record<TrafficPair, ByteCapRule> {
  const n = (key: string) => rspec[key] ?? 0;
  return {
    main: { maxKbyte: n('net_max_kbyte'), threshKbyte: n('net_thresh_kbyte'), maxRateKbit: n('net_max_rate'), minRateKbit: n('net_min_rate') },
    exempt: {
      maxKbyte: n('net_i2_max_kbyte'), threshKbyte: n('net_i2_thresh_kbyte'),
      maxRateKbit: n('net_i2_max_rate'), minRateKbit: n('net_i2_min_rate'),
    },
  };
}

/** One sample of every sliver's counters. Pure. */
export function sampleByteCaps(
  previous: ByteCapStates,
  readings: readonly ByteCapReading[],
  nowSeconds: number,
  periodSeconds: number,
): ByteCapSample {
  const states: Record<string, SliverByteCaps> = {};
  const ceilings = new Map<number, { mainKbit?: number; exemptKbit?: number }>();
  const notices: ByteCapNotice[] = [];
  const seen = new Set<string>();
  for (const r of readings) {
    seen.add(r.name);
    const rules = byteCapRules(r.rspec);
    const before = previous[r.name];
    const main = stepByteCap(before?.main ?? null, r.mainCounter, nowSeconds, periodSeconds, rules.main);
    const exempt = stepByteCap(before?.exempt ?? null, r.exemptCounter, nowSeconds, periodSeconds, rules.exempt);
    states[r.name] = { main: main.state, exempt: exempt.state };
    if (main.throttled || exempt.throttled) {
      ceilings.set(r.uid, {
        ...(main.throttled ? { mainKbit: main.ceilingKbit } : {}),
        ...(exempt.throttled ? { exemptKbit: exempt.ceilingKbit } : {}),
      });
    }
    if (main.notify) notices.push({ name: r.name, pair: 'main', usedBytes: main.state.usedBytes, ceilingKbit: main.ceilingKbit });
    if (exempt.notify) notices.push({ name: r.name, pair: 'exempt', usedBytes: exempt.state.usedBytes, ceilingKbit: exempt.ceilingKbit });
  }
  // A sliver that is gone keeps its count until its period would have ended, so that removing and
  // adding it again does not reset its allowance.
  for (const [name, caps] of Object.entries(previous)) {
    if (seen.has(name)) continue;
    const end = Math.max(caps.main.periodStart, caps.exempt.periodStart) + periodSeconds;
    if (nowSeconds < end) states[name] = caps;
  }
  return { states, ceilings, notices };
}

/** Ceilings for the allowances as they stand, without a new sample (after a restart). */
export function ceilingsOf(states: ByteCapStates, slivers: ReadonlyArray<{ name: string; uid: number; rspec: Rspec }>, nowSeconds: number, periodSeconds: number): Map<number, { mainKbit?: number; exemptKbit?: number }> {
  const readings = slivers.flatMap((s) => {
    const caps = states[s.name];
    return caps ? [{ ...s, mainCounter: caps.main.lastCounter, exemptCounter: caps.exempt.lastCounter }] : [];
  });
  return sampleByteCaps(states, readings, nowSeconds, periodSeconds).ceilings;
}

function isState(value: unknown): value is ByteCapState {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  const count = (x: unknown) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  return count(v['periodStart']) && count(v['usedBytes']) && count(v['lastCounter']) && typeof v['notified'] === 'boolean';
}

const FILE_VERSION = 1;

/** Validates the file's contents; throws with what is wrong. */
export function parseByteCapFile(text: string): ByteCapStates {
  const data = JSON.parse(text) as unknown;
  if (typeof data !== 'object' || data === null || (data as { version?: unknown }).version !== FILE_VERSION) {
    throw new Error(`expected {"version": ${FILE_VERSION}, "slivers": {...}}`);
  }
  const slivers = (data as { slivers?: unknown }).slivers;
  if (typeof slivers !== 'object' || slivers === null) throw new Error('"slivers" is not an object');
  const states: Record<string, SliverByteCaps> = Object.create(null) as Record<string, SliverByteCaps>;
  for (const [name, caps] of Object.entries(slivers)) {
    const c = caps as { main?: unknown; exempt?: unknown };
    if (!isState(c.main) || !isState(c.exempt)) throw new Error(`sliver ${JSON.stringify(name)}: not a pair of byte-cap states`);
    states[name] = { main: c.main, exempt: c.exempt };
  }
  return states;
}

export function formatByteCapFile(states: ByteCapStates): string {
  return JSON.stringify({ version: FILE_VERSION, slivers: states }, null, 1) + '\n';
}

/**
 * Reads the saved allowances. A missing file is a first start; an unreadable one is moved aside
 * (so that it can be looked at) and counting starts afresh, which is reported through `warn`.
 */
export async function loadByteCaps(path: string, warn: (message: string, fields: LogContext) => void): Promise<ByteCapStates> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw error;
  }
  try {
    return parseByteCapFile(text);
  } catch (error) {
    const aside = `${path}.bad`;
    await rename(path, aside).catch(() => undefined);
    warn('byte-cap state unreadable; counting starts afresh', { file: path, moved_to: aside, error: describeError(error) });
    return {};
  }
}

export function saveByteCaps(path: string, states: ByteCapStates): Promise<void> {
  return writeFileDurably(path, formatByteCapFile(states));
}
