// The node database's contents: records that came from the authority (or the API), and the
// daemon's own bookkeeping about accounts and syncs. Plain JSON-serialisable data.
import type { Rspec } from '../rspec/resources.js';
import type { Loan } from '../rspec/loans.js';
import type { GuestAttributes, InstanceSize, Instantiation, RuntimeKind } from '../slices/types.js';

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

/** A task's state, XenBEE's words (tasks/states.ts has the steps between them). */
export type TaskState =
  | 'Pending:Reserved' | 'Pending:Confirmed' | 'Running:Stage-In' | 'Running:Instance-Starting' | 'Running:Executing'
  | 'Running:Instance-Stopping' | 'Running:Stage-Out' | 'Finished' | 'Failed' | 'Terminated';

/** The times a task's record keeps, XenBEE's names: each is stamped once, when it happens. */
export type TaskTime =
  | 'submit' | 'confirm' | 'stage-in-start' | 'instance-start' | 'execution-start' | 'execution-done'
  | 'instance-stop' | 'stage-out-start' | 'finished' | 'failed' | 'terminated';

/** ISO times by name; a time not reached yet is absent. */
export type TaskTimes = Partial<Record<TaskTime, string>>;

/** A XenBEE task (a job in a guest) or a Condor Cloud instance (a guest alone). */
export type TaskKind = 'task' | 'instance';

/**
 * An on-demand guest's record: asked for by a caller through the API, not by the document, so it
 * has an owner, holds part of the capacity budget while it runs, and lasts until its owner removes
 * it (a task) or it ends (an instance). Kept so that a restart of the daemon goes on with it.
 */
export interface TaskRecord {
  /** Short and unique on the node: what `ls` shows and `terminate` takes. */
  readonly task_id: string;
  /** The reservation's ticket (random, 128 bits): what XenBEE's client keeps. */
  readonly ticket: string;
  readonly kind: TaskKind;
  /** "root", "uid:<n>" or "subject:<certificate subject>". */
  readonly owner: string;
  readonly state: TaskState;
  readonly times: TaskTimes;
  /** Why it failed or was terminated; null while all is well. */
  readonly reason: string | null;
  readonly exit_code: number | null;
  /** The signal that ended the job ("SIGKILL"), null when it exited. */
  readonly signal: string | null;
  readonly runtime: Exclude<RuntimeKind, 'unix'>;
  /** Its libvirt domain's name. */
  readonly guest: string;
  /** The XSDL document confirmed (a task); null before the confirm and for an instance. */
  readonly xsdl: string | null;
  /**
   * An instance's image, size and the ssh key put into it; its kernel and initrd when it boots one
   * directly (cache names or URIs, as its image).
   */
  readonly image: string | null;
  readonly kernel: string | null;
  readonly initrd: string | null;
  readonly size: InstanceSize | null;
  readonly ssh_key: string | null;
  /** What it holds of the capacity budget from its confirm or launch until it is done. */
  readonly vcpus: number;
  readonly memory_bytes: number;
  /** The guest's address and VNC console ("host:port") while it runs. */
  readonly address: string | null;
  readonly vnc: string | null;
  /** When an unconfirmed reservation lapses (ISO); null once confirmed. */
  readonly expires: string | null;
  /** The job's process as the guest's agent numbers it, to be asked again after a restart. */
  readonly job_pid: number | null;
  /** A terminate asked and not yet carried out, with its reason: a restart carries it out. */
  readonly terminating: string | null;
}

/**
 * A virtual cluster's state: booting (its journal: what the record lists may exist in part; a
 * restart rolls it back), running, or stopped (every node shut down; clean removes it).
 */
export type ClusterState = 'booting' | 'running' | 'stopped';

export interface ClusterNodeRecord {
  /** The node's name in the cluster ("frontend", "compute-0", …). */
  readonly name: string;
  readonly role: 'frontend' | 'compute';
  /** Its libvirt domain's name. */
  readonly guest: string;
  readonly vcpus: number;
  readonly memory_kib: number;
  readonly private_ip: string;
  readonly private_mac: string;
  /** The frontend's public address, from the node's pool; null for a compute (and before the lease). */
  readonly public_ip: string | null;
}

export interface ClusterRecord {
  /** Unique on the node: what `vc list`, `shutdown` and `clean` take (never matched in part). */
  readonly name: string;
  /** "root", "uid:<n>" or "subject:<certificate subject>". */
  readonly owner: string;
  /** The repository's image it was booted from, and the cache entry of its disk. */
  readonly image: string;
  readonly base_image: string;
  readonly state: ClusterState;
  readonly created: string;
  /** Why a boot failed or what was rolled back; null while all is well. */
  readonly reason: string | null;
  /** Its isolated libvirt network, the private subnet (CIDR) and its MTU. */
  readonly network: { readonly name: string; readonly bridge: string; readonly subnet: string; readonly mtu: number };
  readonly nodes: readonly ClusterNodeRecord[];
}

export interface NodeDatabase {
  readonly version: 1;
  readonly records: Readonly<Record<string, NodeRecord>>;
  readonly accounts: Readonly<Record<string, AccountStatus>>;
  /** Leases of the address pool, by MAC (absent from databases written before libvirt slivers). */
  readonly addresses: Readonly<Record<string, AddressLease>>;
  /** Tasks and instances by task_id (absent from databases written before them). */
  readonly tasks: Readonly<Record<string, TaskRecord>>;
  /** Virtual clusters by name (absent from databases written before them). */
  readonly clusters: Readonly<Record<string, ClusterRecord>>;
}

export function emptyDatabase(): NodeDatabase {
  return { version: 1, records: {}, accounts: {}, addresses: {}, tasks: {}, clusters: {} };
}
