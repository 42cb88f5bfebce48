// Validation of the node database as read from disk: the whole shape of types.ts, strictly (no
// missing and no unexpected fields). An error names the field path and the reason, e.g.
// `records.sliver_x.rspec.cpu_share: expected integer, got "a"`.
import type {
  AddressLease,
  AccountKind,
  AdoptedRecord,
  AccountState,
  AccountStatus,
  BwcapRecord,
  DelegateRecord,
  NodeDatabase,
  NodeRecord,
  SliverNodeState,
  SliverRecord,
  SyncOutcome,
  SyncStatus,
  TimestampRecord,
} from './types.js';
import {
  array, boolean, dictionary, exactly, fail, field, integer, isNull, isoTime, member, name, object, optionalInteger, optionalString, string,
  type Fields, type Obj,
} from './validators.js';
import type { Loan } from '../rspec/loans.js';
import { NO_GUEST_ATTRIBUTES, type GuestAttributes, type InstanceSize, type Instantiation, type RuntimeKind } from '../slices/types.js';

import { clusterRecord, taskRecord } from './validate-tasks.js';

export { DatabaseFormatError } from './validators.js';

// Records of every member keep these lists in step with types.ts: the compiler rejects a
// missing or an extra name.
const ACCOUNT_KINDS: Record<AccountKind, true> = { sliver: true, delegate: true };
const ACCOUNT_STATES: Record<AccountState, true> = {
  absent: true, creating: true, running: true, stopped: true, destroying: true, failed: true,
};
const SYNC_OUTCOMES: Record<SyncOutcome, true> = {
  applied: true, unchanged: true, older: true, rejected: true, unreachable: true, unwritable: true,
};
const RECORD_TYPES: Record<NodeRecord['type'], true> = { sliver: true, delegate: true, timestamp: true, bwcap: true, adopted: true };

const DATABASE_FIELDS: Fields<NodeDatabase> = { version: true, records: true, accounts: true, addresses: true, tasks: true, clusters: true };
const LEASE_FIELDS: Fields<AddressLease> = { mac: true, ip: true, prefix: true, sliver: true, iface: true, since: true };
const GUEST_FIELDS: Fields<GuestAttributes> = { runtime: true, kernel: true, initrd: true, size: true };
const RUNTIME_VALUES: Record<RuntimeKind, true> = { unix: true, lxc: true, qemu: true };
const SIZE_VALUES: Record<InstanceSize, true> = { small: true, medium: true, large: true };
const SLIVER_FIELDS: Fields<SliverRecord> = {
  record_key: true, type: true, name: true, slice_id: true, timestamp: true, expiry: true, rspec: true,
  initscript: true, vref: true, guest: true, keys: true, controllers: true, instantiation: true, loans: true, node_state: true,
  unknown_resources: true,
};
const NODE_STATE_FIELDS: Fields<SliverNodeState> = { stopped: true, created: true, destroyed: true };
const INSTANTIATION_VALUES: Record<Instantiation, true> = { 'plc-instantiated': true, delegated: true };
const DELEGATE_FIELDS: Fields<DelegateRecord> = {
  record_key: true, type: true, name: true, timestamp: true, expiry: true, keys: true,
};
const TIMESTAMP_FIELDS: Fields<TimestampRecord> = { record_key: true, type: true, timestamp: true, expiry: true };
const ADOPTED_FIELDS: Fields<AdoptedRecord> = {
  record_key: true, type: true, name: true, kind: true, runtime: true, uid: true, since: true, destroy_requested_by: true,
  timestamp: true, expiry: true,
};
const BWCAP_FIELDS: Fields<BwcapRecord> = { record_key: true, type: true, timestamp: true, expiry: true, cap_kbit: true };
const LOAN_FIELDS: Fields<Loan> = { recipient: true, resource: true, amount: true };
const ACCOUNT_FIELDS: Fields<AccountStatus> = {
  name: true, kind: true, state: true, reason: true, since: true, appliedHash: true, uid: true, attempts: true,
};
const SYNC_FIELDS: Fields<SyncStatus> = { at: true, outcome: true, detail: true, source: true, documentTimestamp: true };

// ---- the database's parts

function loan(value: unknown, path: string): Loan {
  const o = object(value, path, LOAN_FIELDS);
  return {
    recipient: name(o.recipient, field(path, 'recipient')),
    resource: name(o.resource, field(path, 'resource')),
    amount: integer(o.amount, field(path, 'amount')),
  };
}

function nodeState(value: unknown, path: string): SliverNodeState {
  const o = object(value, path, NODE_STATE_FIELDS);
  return {
    stopped: boolean(o.stopped, field(path, 'stopped')),
    created: boolean(o.created, field(path, 'created')),
    // Databases written before Destroy was remembered: no Destroy is known.
    destroyed: o.destroyed === undefined ? false : boolean(o.destroyed, field(path, 'destroyed')),
  };
}

function ownKey(o: Obj, path: string, key: string): string {
  return exactly(o.record_key, field(path, 'record_key'), key, ' (its key in records)');
}

/** Checks that `record_key` is the record's key in `records` and is `<prefix><name>`. */
function recordKey(o: Obj, path: string, key: string, prefix: string): { recordKey: string; name: string } {
  const recordKey = ownKey(o, path, key);
  const recordName = name(o.name, field(path, 'name'));
  exactly(recordKey, field(path, 'record_key'), `${prefix}${recordName}`, ` (from name ${JSON.stringify(recordName)})`);
  return { recordKey, name: recordName };
}

function sliverRecord(value: unknown, path: string, key: string): SliverRecord {
  const o = object(value, path, SLIVER_FIELDS);
  const { recordKey: record_key, name: sliverName } = recordKey(o, path, key, 'sliver_');
  return {
    record_key,
    type: 'sliver',
    name: sliverName,
    slice_id: integer(o.slice_id, field(path, 'slice_id')),
    timestamp: integer(o.timestamp, field(path, 'timestamp')),
    expiry: optionalInteger(o.expiry, field(path, 'expiry')),
    rspec: dictionary(o.rspec, field(path, 'rspec'), integer),
    initscript: optionalString(o.initscript, field(path, 'initscript')),
    vref: optionalString(o.vref, field(path, 'vref')),
    // Records written before libvirt slivers have no guest attributes: a unix sliver by default.
    guest: o.guest === undefined ? NO_GUEST_ATTRIBUTES : guestAttributes(o.guest, field(path, 'guest')),
    keys: array(o.keys, field(path, 'keys'), string),
    controllers: array(o.controllers, field(path, 'controllers'), name),
    instantiation: member(o.instantiation, field(path, 'instantiation'), INSTANTIATION_VALUES),
    loans: array(o.loans, field(path, 'loans'), loan),
    node_state: nodeState(o.node_state, field(path, 'node_state')),
    unknown_resources: dictionary(o.unknown_resources, field(path, 'unknown_resources'), string),
  };
}

function guestAttributes(value: unknown, path: string): GuestAttributes {
  const o = object(value, path, GUEST_FIELDS);
  return {
    runtime: o.runtime === null ? null : member(o.runtime, field(path, 'runtime'), RUNTIME_VALUES),
    kernel: optionalString(o.kernel, field(path, 'kernel')),
    initrd: optionalString(o.initrd, field(path, 'initrd')),
    size: o.size === null ? null : member(o.size, field(path, 'size'), SIZE_VALUES),
  };
}

function addressLease(value: unknown, path: string, key: string): AddressLease {
  const o = object(value, path, LEASE_FIELDS);
  return {
    mac: exactly(name(o.mac, field(path, 'mac')), field(path, 'mac'), key, ' (its key in addresses)'),
    ip: name(o.ip, field(path, 'ip')),
    prefix: optionalInteger(o.prefix, field(path, 'prefix')),
    sliver: name(o.sliver, field(path, 'sliver')),
    iface: integer(o.iface, field(path, 'iface')),
    since: isoTime(o.since, field(path, 'since')),
  };
}

function delegateRecord(value: unknown, path: string, key: string): DelegateRecord {
  const o = object(value, path, DELEGATE_FIELDS);
  const { recordKey: record_key, name: delegateName } = recordKey(o, path, key, 'delegate_');
  return {
    record_key,
    type: 'delegate',
    name: delegateName,
    timestamp: integer(o.timestamp, field(path, 'timestamp')),
    expiry: optionalInteger(o.expiry, field(path, 'expiry')),
    keys: array(o.keys, field(path, 'keys'), string),
  };
}

function timestampRecord(value: unknown, path: string, key: string): TimestampRecord {
  const o = object(value, path, TIMESTAMP_FIELDS);
  const record_key = exactly(ownKey(o, path, key), field(path, 'record_key'), 'timestamp', ' (for a timestamp record)');
  return {
    record_key,
    type: 'timestamp',
    timestamp: integer(o.timestamp, field(path, 'timestamp')),
    expiry: isNull(o.expiry, field(path, 'expiry')),
  };
}

function bwcapRecord(value: unknown, path: string, key: string): BwcapRecord {
  const o = object(value, path, BWCAP_FIELDS);
  const record_key = exactly(ownKey(o, path, key), field(path, 'record_key'), 'bwcap', ' (for a bwcap record)');
  return {
    record_key,
    type: 'bwcap',
    timestamp: integer(o.timestamp, field(path, 'timestamp')),
    expiry: isNull(o.expiry, field(path, 'expiry')),
    cap_kbit: optionalInteger(o.cap_kbit, field(path, 'cap_kbit')),
  };
}

function adoptedRecord(value: unknown, path: string, key: string): AdoptedRecord {
  const o = object(value, path, ADOPTED_FIELDS);
  const { recordKey: record_key, name: adoptedName } = recordKey(o, path, key, 'adopted_');
  return {
    record_key,
    type: 'adopted',
    name: adoptedName,
    kind: member(o.kind, field(path, 'kind'), ACCOUNT_KINDS),
    runtime: member(o.runtime, field(path, 'runtime'), RUNTIME_VALUES),
    uid: optionalInteger(o.uid, field(path, 'uid')),
    since: isoTime(o.since, field(path, 'since')),
    destroy_requested_by: optionalString(o.destroy_requested_by, field(path, 'destroy_requested_by')),
    timestamp: exactly(o.timestamp, field(path, 'timestamp'), 0, ' (an adopted account has no document)'),
    expiry: isNull(o.expiry, field(path, 'expiry')),
  };
}

const RECORD_VALIDATORS: { [T in NodeRecord['type']]: (value: unknown, path: string, key: string) => NodeRecord } = {
  sliver: sliverRecord,
  delegate: delegateRecord,
  timestamp: timestampRecord,
  bwcap: bwcapRecord,
  adopted: adoptedRecord,
};

function nodeRecord(value: unknown, path: string, key: string): NodeRecord {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'an object', value);
  const type = member((value as Obj).type, field(path, 'type'), RECORD_TYPES);
  return RECORD_VALIDATORS[type](value, path, key);
}

function accountStatus(value: unknown, path: string, key: string): AccountStatus {
  const o = object(value, path, ACCOUNT_FIELDS);
  return {
    name: exactly(name(o.name, field(path, 'name')), field(path, 'name'), key, ' (its key in accounts)'),
    kind: member(o.kind, field(path, 'kind'), ACCOUNT_KINDS),
    state: member(o.state, field(path, 'state'), ACCOUNT_STATES),
    reason: optionalString(o.reason, field(path, 'reason')),
    since: isoTime(o.since, field(path, 'since')),
    appliedHash: optionalString(o.appliedHash, field(path, 'appliedHash')),
    uid: optionalInteger(o.uid, field(path, 'uid')),
    attempts: integer(o.attempts, field(path, 'attempts')),
  };
}

/** Checks a parsed sync status file; returns it typed or throws DatabaseFormatError. */
export function validateSyncStatus(value: unknown, path = ''): SyncStatus {
  const o = object(value, path, SYNC_FIELDS);
  return {
    at: isoTime(o.at, field(path, 'at')),
    outcome: member(o.outcome, field(path, 'outcome'), SYNC_OUTCOMES),
    detail: string(o.detail, field(path, 'detail')),
    source: string(o.source, field(path, 'source')),
    documentTimestamp: optionalInteger(o.documentTimestamp, field(path, 'documentTimestamp')),
  };
}

/** Checks a parsed database file; returns it typed or throws DatabaseFormatError. */
export function validateDatabase(value: unknown): NodeDatabase {
  const o = object(value, '', DATABASE_FIELDS);
  return {
    version: exactly(o.version, 'version', 1),
    records: dictionary(o.records, 'records', nodeRecord),
    accounts: dictionary(o.accounts, 'accounts', accountStatus),
    addresses: o.addresses === undefined ? {} : dictionary(o.addresses, 'addresses', addressLease),
    tasks: o.tasks === undefined ? {} : dictionary(o.tasks, 'tasks', taskRecord),
    clusters: o.clusters === undefined ? {} : dictionary(o.clusters, 'clusters', clusterRecord),
  };
}
