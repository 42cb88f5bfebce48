// How an authority document becomes the node's records. Pure: the database and the document in,
// the next database and a summary of what changed out.
import type { DelegateSpec, SliverSpec, SlicesDocument } from '../slices/types.js';
import type { ObservedAccount } from '../runtimes/types.js';
import {
  INITIAL_NODE_STATE, type AdoptedRecord, type DelegateRecord, type NodeDatabase, type NodeRecord, type SliverRecord,
} from './types.js';

export function sliverKey(name: string): string {
  return `sliver_${name}`;
}

export function delegateKey(name: string): string {
  return `delegate_${name}`;
}

export function adoptedKey(name: string): string {
  return `adopted_${name}`;
}

/** The record of an account found on the host while no document was in force. */
export function adoptedRecordOf(found: ObservedAccount, sinceIso: string): AdoptedRecord {
  return {
    record_key: adoptedKey(found.name), type: 'adopted', name: found.name, kind: found.kind, runtime: found.runtime,
    uid: found.uid, since: sinceIso, destroy_requested_by: null, timestamp: 0, expiry: null,
  };
}

export interface RecordChanges {
  readonly added: readonly string[];
  readonly updated: readonly string[];
  readonly removed: readonly string[];
  /** Records kept because the node holds a newer version than the document's (no rollback). */
  readonly keptNewer: readonly string[];
  /** Records kept because the document's entry for them was invalid (skipped). */
  readonly keptInvalid: readonly string[];
}

export type DocumentOutcome =
  | { kind: 'older'; inForce: number; offered: number }
  | { kind: 'applied'; database: NodeDatabase; changes: RecordChanges };

export function documentTimestampInForce(db: Pick<NodeDatabase, 'records'>): number | null {
  const record = db.records['timestamp'];
  return record ? record.timestamp : null;
}

function isExpired(record: NodeRecord, nowSeconds: number): boolean {
  return record.expiry !== null && record.expiry <= nowSeconds;
}

/** The record of a sliver as the authority describes it, keeping what the node set on the one it holds. */
export function recordOfSliver(spec: SliverSpec, previous: NodeRecord | undefined): SliverRecord {
  return {
    record_key: sliverKey(spec.name),
    type: 'sliver',
    name: spec.name,
    slice_id: spec.sliceId,
    timestamp: spec.timestamp,
    expiry: spec.expiry,
    rspec: { ...spec.rspec },
    initscript: spec.initscript,
    vref: spec.vref,
    guest: { ...spec.guest },
    keys: [...spec.keys],
    controllers: [...spec.controllers],
    instantiation: spec.instantiation,
    // Loans and what the API asked are the node's own business; the authority does not know them.
    loans: previous?.type === 'sliver' ? previous.loans : [],
    node_state: previous?.type === 'sliver' ? previous.node_state : INITIAL_NODE_STATE,
    unknown_resources: { ...spec.unknownResources },
  };
}

function delegateRecord(spec: DelegateSpec): DelegateRecord {
  return {
    record_key: delegateKey(spec.name),
    type: 'delegate',
    name: spec.name,
    timestamp: spec.timestamp,
    expiry: spec.expiry,
    keys: [...spec.keys],
  };
}

function sameRecord(a: NodeRecord, b: NodeRecord): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Applies a comprehensive authority document, following the original node manager's rules:
 * - a document older than the one in force changes nothing;
 * - a record the node holds in a newer version than the document's is kept;
 * - a record whose entry in the document is invalid (skipped by the parser) is kept as it is,
 *   whether the entry names it by a usable name or only by its slice id;
 * - a sliver or delegate record the document no longer lists goes, unless it is newer than the
 *   document itself (it was delivered after the document was made, e.g. by a ticket);
 * - expired records go, and expired entries of the document are not added;
 * - accounts adopted while no document was in force are the document's to decide: their records go.
 */
export function applyDocument(db: NodeDatabase, doc: SlicesDocument, nowSeconds: number): DocumentOutcome {
  const inForce = documentTimestampInForce(db);
  if (inForce !== null && doc.timestamp < inForce) {
    return { kind: 'older', inForce, offered: doc.timestamp };
  }

  const held = new Set(doc.skipped.flatMap((s) =>
    (s.held?.name ? [s.held.type === 'sliver' ? sliverKey(s.held.name) : delegateKey(s.held.name)] : [])));
  const heldSliceIds = new Set(doc.skipped.flatMap((s) => (s.held?.sliceId != null ? [s.held.sliceId] : [])));
  const isHeld = (key: string, record: NodeRecord) => held.has(key) || (record.type === 'sliver' && heldSliceIds.has(record.slice_id));
  const offered = new Map<string, NodeRecord>();
  for (const spec of doc.slivers) offered.set(sliverKey(spec.name), recordOfSliver(spec, db.records[sliverKey(spec.name)]));
  for (const spec of doc.delegates) offered.set(delegateKey(spec.name), delegateRecord(spec));

  const records: Record<string, NodeRecord> = {};
  const added: string[] = [];
  const updated: string[] = [];
  const removed: string[] = [];
  const keptNewer: string[] = [];
  const keptInvalid: string[] = [];

  for (const [key, record] of Object.entries(db.records)) {
    if (record.type !== 'sliver' && record.type !== 'delegate') continue;
    const next = offered.get(key);
    if (next && record.timestamp > next.timestamp) {
      keptNewer.push(key);
      if (!isExpired(record, nowSeconds)) records[key] = record;
      else removed.push(key);
      offered.delete(key);
    } else if (!next && isHeld(key, record) && !isExpired(record, nowSeconds)) {
      keptInvalid.push(key);
      records[key] = record;
    } else if (!next && record.timestamp > doc.timestamp && !isExpired(record, nowSeconds)) {
      records[key] = record;
    } else if (!next || isExpired(next, nowSeconds)) {
      removed.push(key);
      offered.delete(key);
    }
  }
  for (const [key, record] of offered) {
    if (isExpired(record, nowSeconds)) continue;
    const previous = db.records[key];
    if (!previous) added.push(key);
    else if (!sameRecord(previous, record)) updated.push(key);
    records[key] = previous && sameRecord(previous, record) ? previous : record;
  }
  const keep = (record: NodeRecord): NodeRecord => {
    const previous = db.records[record.record_key];
    return previous && sameRecord(previous, record) ? previous : record;
  };
  records['timestamp'] = keep({ record_key: 'timestamp', type: 'timestamp', timestamp: doc.timestamp, expiry: null });
  records['bwcap'] = keep({ record_key: 'bwcap', type: 'bwcap', timestamp: doc.timestamp, expiry: null, cap_kbit: doc.bwcapKbit });

  // The same document again leaves the very same records object, so nothing downstream (the
  // planner's memo, the database write) does any work for it.
  const keys = Object.keys(records);
  const identical = keys.length === Object.keys(db.records).length && keys.every((key) => records[key] === db.records[key]);
  return {
    kind: 'applied',
    database: identical ? db : { ...db, records },
    changes: {
      added: added.sort(), updated: updated.sort(), removed: removed.sort(), keptNewer: keptNewer.sort(),
      keptInvalid: keptInvalid.sort(),
    },
  };
}

/** Removes records whose expiry has passed; returns the same object when nothing expired. */
export function expireRecords(current: NodeDatabase['records'], nowSeconds: number): { records: NodeDatabase['records']; removed: string[] } {
  const removed = Object.values(current)
    .filter((r) => isExpired(r, nowSeconds))
    .map((r) => r.record_key);
  if (removed.length === 0) return { records: current, removed };
  const records = { ...current };
  for (const key of removed) delete records[key];
  return { records, removed: removed.sort() };
}

/** The earliest expiry among the records (seconds), or null when none expires. */
export function earliestExpiry(records: NodeDatabase['records']): number | null {
  let earliest: number | null = null;
  for (const key in records) {
    const expiry = records[key]!.expiry;
    if (expiry !== null && (earliest === null || expiry < earliest)) earliest = expiry;
  }
  return earliest;
}

export function sliverRecords(db: Pick<NodeDatabase, 'records'>): SliverRecord[] {
  return Object.values(db.records).filter((r): r is SliverRecord => r.type === 'sliver');
}

export function delegateRecords(db: Pick<NodeDatabase, 'records'>): DelegateRecord[] {
  return Object.values(db.records).filter((r): r is DelegateRecord => r.type === 'delegate');
}

export function adoptedRecords(db: Pick<NodeDatabase, 'records'>): AdoptedRecord[] {
  return Object.values(db.records).filter((r): r is AdoptedRecord => r.type === 'adopted');
}

/** The node's cap on ordinary traffic from the document in force (kbit/s); null: none given. */
export function bwcapOf(db: Pick<NodeDatabase, 'records'>): number | null {
  const record = db.records['bwcap'];
  return record?.type === 'bwcap' ? record.cap_kbit : null;
}
