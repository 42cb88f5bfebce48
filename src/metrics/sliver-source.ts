// Where the per-sliver readings come from: the slivers the node database has accounts of, a Unix
// sliver's limits in force read back from the kernel (the reading `nodemgr status` shows) with the
// enforcer's byte counts, and a libvirt sliver's domain as the guest layer reports it.
import type { ByteCapStates } from '../limits/bwmon.js';
import type { LimitsInForce } from '../limits/in-force.js';
import type { NodeDatabase } from '../db/types.js';
import type { GuestStatus } from '../runtimes/types.js';
import type { RuntimeKind } from '../slices/types.js';
import { mapBounded } from '../util/bounded.js';
import { runtimesOf } from './registry.js';
import { guestSliverReading, unixSliverReading, type SliverReading } from './sliver-series.js';

export interface SliverSources {
  db(): NodeDatabase;
  readonly defaultRuntime: RuntimeKind;
  /** The limits in force of these Unix slivers, by name (readLimitsInForce). */
  limitsInForce(slivers: ReadonlyArray<{ name: string; uid: number }>): Promise<ReadonlyMap<string, LimitsInForce>>;
  byteCaps(): ByteCapStates;
  /** The guest's domain, or null when it has none (or is not a guest). */
  guestStatus(name: string): Promise<GuestStatus | null>;
}

/** Each guest's status is a few calls to libvirtd; a few at a time. */
const GUEST_READS_IN_FLIGHT = 4;

/** The slivers to read: those with an account the database knows, by runtime. Pure. */
export function slivers(db: NodeDatabase, defaultRuntime: RuntimeKind): { unix: Array<{ name: string; uid: number }>; guests: string[] } {
  const runtimes = runtimesOf(db, defaultRuntime);
  const unix: Array<{ name: string; uid: number }> = [];
  const guests: string[] = [];
  for (const account of Object.values(db.accounts)) {
    if (account.kind !== 'sliver' || account.state === 'absent') continue;
    const runtime = runtimes.get(account.name) ?? 'unix';
    if (runtime !== 'unix') guests.push(account.name);
    else if (account.uid !== null) unix.push({ name: account.name, uid: account.uid });
  }
  return { unix, guests };
}

export async function readSlivers(sources: SliverSources): Promise<SliverReading[]> {
  const { unix, guests } = slivers(sources.db(), sources.defaultRuntime);
  const limits = unix.length > 0 ? await sources.limitsInForce(unix) : new Map<string, LimitsInForce>();
  const caps = sources.byteCaps();
  const readings = unix.map((s) => unixSliverReading(s.name, limits.get(s.name) ?? {}, caps[s.name]));
  const statuses = await mapBounded(guests, GUEST_READS_IN_FLIGHT, (name) => sources.guestStatus(name).catch(() => null));
  for (const [i, status] of statuses.entries()) if (status) readings.push(guestSliverReading(guests[i]!, status));
  return readings;
}
