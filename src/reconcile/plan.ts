// The planner: desired state + observed host + what was last applied -> the operations that bring
// the host in line. Pure: no I/O, no clock; running it again on the converged result plans nothing.
//
// Every destroy names its reason: a document in force that holds no record of the account, a
// record that says it must go (a Destroy through the API), or a change of kind or runtime that the
// document asks for. With no document in force nothing is created or destroyed: accounts without
// a record are adopted as found.
import type { AccountKind, AccountStatus } from '../db/types.js';
import type { AccountSpec, HostSnapshot, ObservedAccount } from '../runtimes/types.js';
import type { RuntimeKind } from '../slices/types.js';
import { specHash, type Desired } from './desired.js';

export type OpAction = 'create' | 'configure' | 'start' | 'stop' | 'destroy';

export interface Op {
  readonly account: string;
  readonly kind: AccountKind;
  readonly action: OpAction;
  /** What the account is (stop, destroy) or must be (the others) made of on the host. */
  readonly runtime: RuntimeKind;
  /** What the account must look like; null for stop and destroy. */
  readonly spec: AccountSpec | null;
  /** Why the planner asks for it, for logs and `nodemgr plan`. */
  readonly why: string;
}

export interface Refusal {
  readonly account: string;
  readonly kind: AccountKind;
  readonly reason: string;
}

export interface PlanInput {
  readonly desired: Desired;
  readonly host: HostSnapshot;
  /** The daemon's bookkeeping per account (for the hash of what was last applied). */
  readonly accounts: Readonly<Record<string, AccountStatus>>;
}

export interface Plan {
  readonly ops: readonly Op[];
  readonly refusals: readonly Refusal[];
  /** Accounts the records ask for that are not made while no document is in force. */
  readonly held: readonly Refusal[];
  /**
   * Accounts found on the host that no record asks for and none says must go, while no document
   * is in force (or delegated slivers whose Create the records lost): kept as found, to be
   * recorded as adopted.
   */
  readonly adopt: readonly ObservedAccount[];
}

/** Why an account no record asks for is destroyed while `document` is in force. */
export function notInDocument(document: number): string {
  return `no record of it in the document in force (timestamp ${document})`;
}

const NO_DOCUMENT = 'no document in force: nothing is created until the authority\'s document arrives';

function op(spec: AccountSpec, action: OpAction, why: string): Op {
  const needsSpec = action === 'create' || action === 'configure' || action === 'start';
  return { account: spec.name, kind: spec.kind, action, runtime: spec.runtime, spec: needsSpec ? spec : null, why };
}

/** A new account: created, configured, and (only when enabled: it starts with its login disabled) started. */
function makeOps(spec: AccountSpec, why: string): Op[] {
  return [op(spec, 'create', why), op(spec, 'configure', why), ...(spec.enabled ? [op(spec, 'start', why)] : [])];
}

/**
 * ReCreate: the account as the host has it destroyed, then made afresh from its spec (a new home, a
 * new disk). Null when the records do not ask for the account.
 */
export function planRecreate(desired: Desired, host: HostSnapshot, name: string, why: string): Op[] | null {
  const spec = desired.specs.find((s) => s.name === name);
  if (!spec) return null;
  const found = host.owned.find((o) => o.name === name);
  return [...(found ? [destroyOf(found, why)] : []), ...makeOps(spec, why)];
}

function destroyOf(found: ObservedAccount, why: string): Op {
  return { account: found.name, kind: found.kind, action: 'destroy', runtime: found.runtime, spec: null, why };
}

/** An account the node made (or was making) before: not one it never got to, nor one whose create failed. */
function isKnown(account: AccountStatus | undefined): boolean {
  return account !== undefined && account.state !== 'absent' && !(account.state === 'failed' && account.uid === null && account.appliedHash === null);
}

export function planReconcile(input: PlanInput): Plan {
  const { desired } = input;
  const ops: Op[] = [];
  const refusals: Refusal[] = [];
  const held: Refusal[] = [];
  const adopt: ObservedAccount[] = [];
  const owned = new Map(input.host.owned.map((o) => [o.name, o]));
  const wanted = new Set<string>();

  for (const spec of desired.specs) {
    wanted.add(spec.name);
    const found = owned.get(spec.name);
    if (!found && input.host.foreign.has(spec.name)) {
      refusals.push({
        account: spec.name,
        kind: spec.kind,
        reason: `an account named "${spec.name}" exists on this host and is not managed by nodemgr`,
      });
      continue;
    }
    if (!found && input.host.unseen?.has(spec.runtime) && isKnown(input.accounts[spec.name])) {
      // Its runtime could not be listed: the account it had may well be there. Making it again
      // would report a running guest stopped while the create and configure go over it.
      continue;
    }
    const remake = found && (found.kind !== spec.kind || found.runtime !== spec.runtime);
    if ((!found || remake) && desired.document === null) {
      held.push({ account: spec.name, kind: spec.kind, reason: NO_DOCUMENT });
      continue;
    }
    if (found && remake) {
      const why = found.kind !== spec.kind
        ? `is a ${found.kind}, must become a ${spec.kind}`
        : `runs on ${found.runtime}, must run on ${spec.runtime}`;
      ops.push(destroyOf(found, why));
    }
    if (!found || remake) {
      ops.push(...makeOps(spec, 'new'));
      continue;
    }
    const applied = input.accounts[spec.name]?.appliedHash ?? null;
    const changed = applied !== (desired.hashes.get(spec.name) ?? specHash(spec));
    if (changed) ops.push(op(spec, 'configure', applied === null ? 'not configured yet' : 'changed'));
    if (spec.enabled && (!found.started || changed)) {
      // start is idempotent; after a change it re-runs an initscript whose text changed.
      ops.push(op(spec, 'start', found.started ? 'changed' : 'not running'));
    } else if (!spec.enabled && found.loginEnabled) {
      ops.push(op(spec, 'stop', 'disabled (enabled=0)'));
    }
  }

  for (const found of input.host.owned) {
    if (wanted.has(found.name)) continue;
    const unwanted = desired.unwanted.get(found.name);
    if (unwanted !== undefined) {
      ops.push(destroyOf(found, unwanted));
    } else if (desired.adopted.has(found.name)) {
      continue;
    } else if (desired.document === null || desired.dormant.has(found.name)) {
      adopt.push(found);
    } else {
      ops.push(destroyOf(found, notInDocument(desired.document)));
    }
  }
  return { ops, refusals, held, adopt };
}
