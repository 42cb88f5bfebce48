// Node records for unit tests of the desired state and the planner.
import type { DelegateRecord, NodeDatabase, NodeRecord, SliverRecord } from '../../../src/db/types.js';
import { desiredState, type Desired } from '../../../src/reconcile/desired.js';
import type { RuntimeKind } from '../../../src/slices/types.js';

export function sliverRecord(name: string, extra: Partial<SliverRecord> = {}): SliverRecord {
  return {
    record_key: `sliver_${name}`, type: 'sliver', name, slice_id: 1, timestamp: 1, expiry: null,
    rspec: {}, initscript: null, vref: null, guest: { runtime: null, kernel: null, initrd: null, size: null },
    keys: ['ssh-ed25519 AAAA x@y'], controllers: [], loans: [], instantiation: 'plc-instantiated',
    node_state: { stopped: false, created: false, destroyed: false }, unknown_resources: {}, ...extra,
  };
}

export function delegateRecord(name: string, keys: string[] = []): DelegateRecord {
  return { record_key: `delegate_${name}`, type: 'delegate', name, timestamp: 1, expiry: null, keys };
}

/** The records of a node: these, and a document in force of timestamp `document` (null: none). */
export function recordsOf(records: readonly NodeRecord[], document: number | null = 1): Pick<NodeDatabase, 'records'> {
  const all: Record<string, NodeRecord> = {};
  if (document !== null) all['timestamp'] = { record_key: 'timestamp', type: 'timestamp', timestamp: document, expiry: null };
  for (const r of records) all[r.record_key] = r;
  return { records: all };
}

/** The desired state of these records under a document in force (unless `document` is null). */
export function desiredOf(
  slivers: readonly SliverRecord[], delegates: readonly DelegateRecord[] = [],
  options: { defaultRuntime?: RuntimeKind; document?: number | null } = {},
): Desired {
  return desiredState(recordsOf([...slivers, ...delegates], options.document === undefined ? 1 : options.document), options.defaultRuntime ?? 'unix');
}
