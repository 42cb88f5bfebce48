// The records the API's methods act on, looked up by name in the database as it is now: a sliver,
// an adopted account, the slivers a caller may act on, and every sliver's effective rspec.
import { adoptedKey, sliverKey, sliverRecords } from '../db/records.js';
import type { DatabaseStore } from '../db/store.js';
import type { AdoptedRecord, NodeDatabase, SliverRecord } from '../db/types.js';
import { effectiveRspecs } from '../rspec/loans.js';
import { mayActOn } from './authorization.js';
import { invalidArgument } from './faults.js';
import type { Caller } from './identity.js';

export interface NodeLookup {
  sliverRecord(name: string): SliverRecord | null;
  adoptedRecord(name: string): AdoptedRecord | null;
  /** The sliver's record; an invalid-argument fault when there is none. */
  record(name: string): SliverRecord;
  /** The record of a sliver that exists on the node (a delegated one only after Create). */
  instantiated(name: string): SliverRecord;
  /** The slivers a caller may act on. */
  visible(caller: Caller): SliverRecord[];
  /** Every sliver's effective rspec and the loans rejected, for the database as it is now. */
  effective(): ReturnType<typeof effectiveRspecs>;
}

export function nodeLookup(store: DatabaseStore): NodeLookup {
  const sliverRecord = (name: string): SliverRecord | null => {
    const found = Object.hasOwn(store.data.records, sliverKey(name)) ? store.data.records[sliverKey(name)] : undefined;
    return found?.type === 'sliver' ? found : null;
  };
  const record = (name: string): SliverRecord => {
    const found = sliverRecord(name);
    if (!found) throw invalidArgument(1, 'sliver_name', `no sliver named ${JSON.stringify(name)} on this node`);
    return found;
  };
  // Loans make every sliver's effective rspec depend on the others': computed over all slivers,
  // so once per database state rather than once per call.
  let effectiveOf: { db: NodeDatabase; computed: ReturnType<typeof effectiveRspecs> } | null = null;
  return {
    sliverRecord,
    record,
    adoptedRecord(name) {
      const found = Object.hasOwn(store.data.records, adoptedKey(name)) ? store.data.records[adoptedKey(name)] : undefined;
      return found?.type === 'adopted' ? found : null;
    },
    instantiated(name) {
      const target = record(name);
      if (target.instantiation === 'delegated' && !target.node_state.created) {
        throw invalidArgument(1, 'sliver_name', `${name} is delegated and not created: Create it first`);
      }
      return target;
    },
    visible: (caller) => sliverRecords(store.data).filter((s) => mayActOn(caller, s)),
    effective() {
      const db = store.data;
      if (effectiveOf?.db !== db) {
        effectiveOf = { db, computed: effectiveRspecs(sliverRecords(db).map((s) => ({ name: s.name, rspec: s.rspec, loans: s.loans }))) };
      }
      return effectiveOf.computed;
    },
  };
}
