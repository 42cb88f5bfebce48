// The node database's contents: records that came from the authority (or the API), and the
// daemon's own bookkeeping about accounts and syncs. Plain JSON-serialisable data.
import type { Rspec } from '../rspec/resources.js';
import type { Loan } from '../rspec/loans.js';
import type { GuestAttributes, Instantiation, RuntimeKind } from '../slices/types.js';

export type AccountKind = 'sliver' | 'delegate';

export interface SliverRecord {
  readonly record_key: string; // `sliver_${name}`
  readonly type: 'sliver';
  readonly name: string;
  readonly slice_id: number;
  readonly timestamp: number;
  readonly expiry: number | null;
  readonly rspec: Rspec;
  readonly initscript: string | null;
  readonly vref: string | null;
  readonly guest: GuestAttributes;
  readonly keys: readonly string[];
  readonly controllers: readonly string[];
  readonly instantiation: Instantiation;
  /** Loans this sliver gives, set on the node (SetLoans); kept across document updates. */
  readonly loans: readonly Loan[];
  /** What the API asked of this sliver on the node; kept across document updates. */
  readonly node_state: SliverNodeState;
  readonly unknown_resources: Readonly<Record<string, string>>;
}

export interface SliverNodeState {
  /** Stop was called: the sliver stays stopped until Start or ReCreate. */
  readonly stopped: boolean;
  /** A delegated sliver exists on the node only after Create (and until Destroy). */
  readonly created: boolean;
  /**
   * Destroy was called (and no Create since): the reason a delegated sliver's account goes. A
   * record that is merely "not created" (a database rebuilt without it) is no such reason.
   */
  readonly destroyed: boolean;
}

export const INITIAL_NODE_STATE: SliverNodeState = { stopped: false, created: false, destroyed: false };

export interface DelegateRecord {
  readonly record_key: string; // `delegate_${name}`
  readonly type: 'delegate';
  readonly name: string;
  readonly timestamp: number;
  readonly expiry: number | null;
  readonly keys: readonly string[];
}

export interface TimestampRecord {
  readonly record_key: 'timestamp';
  readonly type: 'timestamp';
  /** Version of the authority document in force. */
  readonly timestamp: number;
  readonly expiry: null;
}

export interface BwcapRecord {
  readonly record_key: 'bwcap';
  readonly type: 'bwcap';
  readonly timestamp: number;
  readonly expiry: null;
  readonly cap_kbit: number | null;
}

/**
 * An account of this daemon's found on the host while no document was in force (a database lost
 * or moved aside, a re-install over marked accounts): it is kept as found, neither changed nor
 * destroyed, until a document says what it should be. Applying a document drops every one.
 */
export interface AdoptedRecord {
  readonly record_key: string; // `adopted_${name}`
  readonly type: 'adopted';
  readonly name: string;
  readonly kind: AccountKind;
  readonly runtime: RuntimeKind;
  readonly uid: number | null;
  /** ISO time the daemon found it. */
  readonly since: string;
  /** Who asked through the API for it to be destroyed; null: nobody. */
  readonly destroy_requested_by: string | null;
  readonly timestamp: 0;
  readonly expiry: null;
}

export type NodeRecord = SliverRecord | DelegateRecord | TimestampRecord | BwcapRecord | AdoptedRecord;

export type AccountState = 'absent' | 'creating' | 'running' | 'stopped' | 'destroying' | 'failed';

export interface AccountStatus {
  readonly name: string;
  readonly kind: AccountKind;
  readonly state: AccountState;
  /** Why the account is failed or refused; null when all is well. */
  readonly reason: string | null;
  /** ISO time of the last state change. */
  readonly since: string;
  /** Hash of the configuration last applied to the host, null before the first configure. */
  readonly appliedHash: string | null;
  readonly uid: number | null;
  /** Consecutive failed attempts of the current operation. */
  readonly attempts: number;
}

/** What a supervisor reports after each step; the daemon records it in the database. */
export interface AccountReport {
  readonly name: string;
  readonly kind: AccountKind;
  readonly state: AccountState;
  readonly reason: string | null;
  /** Set after a successful configure; undefined means "unchanged". */
  readonly appliedHash?: string | null;
  readonly uid?: number | null;
  readonly attempts: number;
}

export type SyncOutcome = 'applied' | 'unchanged' | 'older' | 'rejected' | 'unreachable' | 'unwritable';

export interface SyncStatus {
  /** ISO time of the sync attempt. */
  readonly at: string;
  readonly outcome: SyncOutcome;
  readonly detail: string;
  /** Where the document came from (URL, "push", "last-good"). */
  readonly source: string;
  /** Timestamp of the document in force after this sync. */
  readonly documentTimestamp: number | null;
}

/** An address of the node's MAC/IP pool handed to one interface of a libvirt sliver. */
export interface AddressLease {
  readonly mac: string;
  readonly ip: string;
  readonly prefix: number | null;
  readonly sliver: string;
  /** The interface's index in the guest (0 for the first). */
  readonly iface: number;
  /** ISO time the lease was made. */
  readonly since: string;
}

export interface NodeDatabase {
  readonly version: 1;
  readonly records: Readonly<Record<string, NodeRecord>>;
  readonly accounts: Readonly<Record<string, AccountStatus>>;
  /** Leases of the address pool, by MAC (absent from databases written before libvirt slivers). */
  readonly addresses: Readonly<Record<string, AddressLease>>;
}

export function emptyDatabase(): NodeDatabase {
  return { version: 1, records: {}, accounts: {}, addresses: {} };
}
