// What the node's records ask of the host: the one place "what should exist" is computed. The
// converge pass, the API, `nodemgr status` and `nodemgr plan` all read it. Pure.
import { createHash } from 'node:crypto';
import { adoptedRecords, delegateRecords, documentTimestampInForce, sliverRecords } from '../db/records.js';
import type { AdoptedRecord, NodeDatabase } from '../db/types.js';
import { effectiveRspecs, type RejectedLoan } from '../rspec/loans.js';
import type { AccountSpec } from '../runtimes/types.js';
import type { RuntimeKind } from '../slices/types.js';

export interface Desired {
  /**
   * The timestamp of the authority's document in force (fetched, pushed or the last good one), or
   * null when none has spoken. Without one the node creates nothing and destroys nothing: an
   * empty database is no reason to remove what is on the host (kubelet's "seen all sources").
   */
  readonly document: number | null;
  /** The accounts the records ask for, sorted by name, with effective rspecs (loans applied). */
  readonly specs: readonly AccountSpec[];
  readonly rejectedLoans: readonly RejectedLoan[];
  /** Account name -> specHash of its spec, computed once with the specs. */
  readonly hashes: ReadonlyMap<string, string>;
  /** Accounts adopted while no document was in force: kept as found until one arrives. */
  readonly adopted: ReadonlyMap<string, AdoptedRecord>;
  /** Accounts that a record says must go, with the reason it names (a Destroy through the API). */
  readonly unwanted: ReadonlyMap<string, string>;
  /**
   * Delegated slivers the records hold but do not ask for (no Create known). An account of such a
   * name on the host is kept: it shows a Create that a lost database no longer remembers.
   */
  readonly dormant: ReadonlySet<string>;
}

/** The desired state of the records; a slice that names no runtime gets `defaultRuntime`. */
export function desiredState(db: Pick<NodeDatabase, 'records'>, defaultRuntime: RuntimeKind): Desired {
  const slivers = sliverRecords(db);
  const { effective, rejected } = effectiveRspecs(slivers.map((s) => ({ name: s.name, rspec: s.rspec, loans: s.loans })));
  const specs: AccountSpec[] = [];
  const unwanted = new Map<string, string>();
  const dormant = new Set<string>();
  for (const s of slivers) {
    // A delegated sliver exists on the node only between its controller's Create and Destroy.
    if (s.instantiation === 'delegated' && !s.node_state.created) {
      if (s.node_state.destroyed) unwanted.set(s.name, 'Destroy was called through the API');
      else dormant.add(s.name);
      continue;
    }
    const rspec = effective.get(s.name)!;
    const runtime = s.guest.runtime ?? defaultRuntime;
    specs.push({
      name: s.name,
      kind: 'sliver',
      keys: s.keys,
      initscript: s.initscript,
      // Stopped through the API, a sliver stays stopped whatever the document says, until Start.
      enabled: rspec['enabled'] !== 0 && !s.node_state.stopped,
      rspec,
      runtime,
      guest: runtime === 'unix'
        ? null
        : { image: s.vref, kernel: s.guest.kernel, initrd: s.guest.initrd, size: s.guest.size ?? 'small' },
    });
  }
  const sliverNames = new Set(slivers.map((s) => s.name));
  for (const d of delegateRecords(db)) {
    // A delegate and a sliver of one name cannot both be an account; the sliver wins.
    if (sliverNames.has(d.name)) continue;
    specs.push({
      name: d.name, kind: 'delegate', keys: d.keys, initscript: null, enabled: true, rspec: {}, runtime: 'unix', guest: null,
    });
  }
  specs.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const adopted = new Map<string, AdoptedRecord>();
  for (const a of adoptedRecords(db)) {
    if (a.destroy_requested_by !== null) unwanted.set(a.name, `Destroy was called through the API by ${a.destroy_requested_by}`);
    else adopted.set(a.name, a);
  }
  return {
    document: documentTimestampInForce(db),
    specs,
    rejectedLoans: rejected,
    hashes: new Map(specs.map((s) => [s.name, specHash(s)])),
    adopted,
    unwanted,
    dormant,
  };
}

/**
 * desiredState of the records, computed again only when the records object changes: records are
 * replaced, never changed in place, so the same object means the same desired state.
 */
export function desiredOfRecords(defaultRuntime: RuntimeKind): (db: Pick<NodeDatabase, 'records'>) => Desired {
  let memo: { records: NodeDatabase['records']; desired: Desired } | null = null;
  return (db) => {
    if (memo?.records !== db.records) memo = { records: db.records, desired: desiredState(db, defaultRuntime) };
    return memo.desired;
  };
}

/** A stable digest of everything configure applies, so a change is noticed and a non-change is not. */
export function specHash(spec: AccountSpec): string {
  const rspec = Object.keys(spec.rspec)
    .sort()
    .map((k) => [k, spec.rspec[k]]);
  // A unix spec hashes as it did before libvirt slivers, so an upgrade reconfigures nothing.
  const parts: unknown[] = [spec.kind, spec.keys, spec.initscript, spec.enabled, rspec];
  if (spec.runtime !== 'unix') parts.push(spec.runtime, spec.guest);
  const canonical = JSON.stringify(parts);
  return createHash('sha256').update(canonical).digest('hex').slice(0, 16);
}
