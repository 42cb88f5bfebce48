// What the API's methods do to the node: reads of the records and account states, and changes to
// the node's own part of a sliver record (loans, Stop/Start, Create/Destroy of delegated slivers).
// Every change is one database update followed by a converge pass, which hands the resulting
// operations to the supervisors; nothing here touches the host.
import { recordOfSliver, sliverKey, sliverRecords } from '../db/records.js';
import type { DatabaseStore } from '../db/store.js';
import type { AdoptedRecord, NodeRecord, SliverNodeState } from '../db/types.js';
import type { RecordWriter } from '../db/record-writer.js';
import type { TaskEngine } from '../tasks/engine.js';
import type { ClusterEngine } from '../clusters/engine.js';
import type { ImageCache } from '../images/cache.js';
import type { Logger } from '../log.js';
import { desiredState } from '../reconcile/desired.js';
import { planRecreate, type Op } from '../reconcile/plan.js';
import type { HostSnapshot } from '../runtimes/types.js';
import { effectiveRspecs, type Loan } from '../rspec/loans.js';
import { canonicalResource } from '../rspec/resources.js';
import type { RuntimeKind, SliverSpec } from '../slices/types.js';
import type { AcceptResult } from '../sync/document.js';
import { describeError } from '../util/errors.js';
import { ApiFault, FaultCode, invalidArgument } from './faults.js';
import { describeCaller, type Caller } from './identity.js';
import { nodeLookup, type NodeLookup } from './node-lookup.js';
import { nodeReads } from './node-reads.js';

export interface NodeApiDeps {
  readonly store: DatabaseStore;
  /** Every change of the records goes through it, naming its source. */
  readonly records: RecordWriter;
  readonly logger: Logger;
  readonly now: () => Date;
  /** The delegate account the authority pushes through (DeliverSlices), if any. */
  readonly authorityDelegate: string | null;
  /** Plans and hands the operations to the supervisors; resolves once they are queued. */
  converge(trigger: string): Promise<unknown>;
  /** Queues operations as they are (ReCreate's destroy-then-create). */
  submit(ops: readonly Op[]): void;
  /** The accounts on the host, read only. */
  observe(): Promise<HostSnapshot>;
  /** Checks a ticket's signature and contents; throws an Error whose message says what is wrong. */
  verifyTicket(ticket: string): { sliver: SliverSpec; timestamp: number };
  /** Checks a pushed document's detached signature; throws an Error whose message says what is wrong. */
  verifyPush(document: Buffer, signature: string): void;
  /** Applies a document as a fetched one is applied. */
  acceptDocument(document: Buffer, source: string): Promise<AcceptResult>;
  /** The sliver's limits as the host holds them (kernel read-back); absent without limits. */
  limitsInForce?(name: string, uid: number): Promise<Record<string, number | string | boolean>>;
  /** What a slice that names no runtime is made of. */
  readonly defaultRuntime: RuntimeKind;
  /** A libvirt sliver's domain as libvirt holds it (state, vCPUs, memory, VNC port, addresses); null for none. */
  guestStatus?(name: string): Promise<Record<string, number | string> | null>;
  /** The node's image cache; without it the image methods answer that it is not configured. */
  readonly images?: ImageCache;
  /** The certificate subjects that may call (allowed_users); without it every certificate caller is refused. */
  readonly allowedUsers?: { readonly path?: string; allows(subject: string): Promise<boolean> };
  /** The on-demand tasks and instances; without it their methods answer that they are not served. */
  readonly tasks?: TaskEngine;
  /** The virtual clusters; without it their methods answer that they are not served. */
  readonly clusters?: ClusterEngine;
}

export function nodeApi(deps: NodeApiDeps) {
  const lookup = nodeLookup(deps.store);
  return { ...lookup, ...nodeReads(deps, lookup), ...nodeChanges(deps, lookup) };
}

/** What the API's changing methods do: the node's own part of a sliver record, then a converge. */
function nodeChanges(deps: NodeApiDeps, lookup: NodeLookup) {
  const { store, logger } = deps;
  const { record, instantiated } = lookup;

  /** Puts records in place, answered only once they are on disk. */
  const write = (method: string, caller: Caller, records: readonly NodeRecord[], detail?: string) =>
    persisted(() => deps.records.put({ kind: 'api', method, caller: describeCaller(caller), detail }, records));

  const changeNodeState = async (caller: Caller, name: string, change: Partial<SliverNodeState>, method: string) => {
    const current = record(name);
    await write(method, caller, [{ ...current, node_state: { ...current.node_state, ...change } }]);
    await deps.converge(`api ${method}`);
    return 1;
  };

  /** An account adopted while no document was in force goes only when root asks for it by name. */
  const destroyAdopted = async (caller: Caller, adopted: AdoptedRecord) => {
    if (caller.kind !== 'root') {
      throw new ApiFault(FaultCode.permissionDenied, `${describeCaller(caller)}: Permission denied for Destroy of ${adopted.name}: it is an adopted account, and only root may destroy it before a document arrives.`);
    }
    await write('Destroy', caller, [{ ...adopted, destroy_requested_by: describeCaller(caller) }], 'an adopted account');
    await deps.converge('api Destroy');
    return 1;
  };

  return {
    create(caller: Caller, name: string) {
      const target = record(name);
      if (target.instantiation !== 'delegated') {
        throw invalidArgument(1, 'sliver_name', `${name} is not a delegated sliver: only the authority creates it`);
      }
      return changeNodeState(caller, name, { created: true, destroyed: false }, 'Create');
    },

    destroy(caller: Caller, name: string) {
      const adopted = lookup.sliverRecord(name) ? null : lookup.adoptedRecord(name);
      if (adopted) return destroyAdopted(caller, adopted);
      const target = record(name);
      if (target.instantiation !== 'delegated') {
        throw invalidArgument(1, 'sliver_name', `${name} is not a delegated sliver: only the authority destroys it`);
      }
      return changeNodeState(caller, name, { created: false, stopped: false, destroyed: true }, 'Destroy');
    },

    setStopped(caller: Caller, name: string, stopped: boolean) {
      instantiated(name);
      return changeNodeState(caller, name, { stopped }, stopped ? 'Stop' : 'Start');
    },

    async recreate(caller: Caller, name: string) {
      const target = instantiated(name);
      if (target.node_state.stopped) await write('ReCreate', caller, [{ ...target, node_state: { ...target.node_state, stopped: false } }]);
      const ops = planRecreate(desiredState(store.data, deps.defaultRuntime), await deps.observe(), name, 'ReCreate');
      if (!ops) throw new ApiFault(FaultCode.internal, `${name} is not an account the node wants; nothing to re-create`);
      deps.submit(ops);
      logger.info('api request accepted', { sliver: name, op: 'recreate', caller: describeCaller(caller) });
      return 1;
    },

    async setLoans(caller: Caller, name: string, given: readonly unknown[]) {
      const lender = record(name);
      const loans: Loan[] = given.map((item, i) => parseLoan(item, i));
      // Every loan must fit as the node would apply it; a set with one that does not is refused whole.
      const trial = sliverRecords(store.data).map((s) => ({ name: s.name, rspec: s.rspec, loans: s.name === name ? loans : s.loans }));
      const refused = effectiveRspecs(trial).rejected.filter((r) => r.lender === name);
      if (refused.length > 0) {
        const first = refused[0]!;
        const index = loans.indexOf(first.loan);
        throw invalidArgument(2, 'loans', `loan ${index + 1} [${first.loan.recipient}, ${first.loan.resource}, ${first.loan.amount}] does not fit: ${first.reason}`);
      }
      await write('SetLoans', caller, [{ ...lender, loans }], loans.map((l) => `${l.recipient}:${l.resource}:${l.amount}`).join(',') || 'none');
      await deps.converge('api SetLoans');
      return 1;
    },

    async deliverSlices(caller: Caller, document: string | Buffer, signature: string) {
      const body = Buffer.isBuffer(document) ? document : Buffer.from(document, 'utf8');
      try {
        deps.verifyPush(body, signature);
      } catch (error) {
        // A string's CR LF reached us as LF (XML reads line ends so): its bytes are not the signed ones.
        const hint = Buffer.isBuffer(document) ? '' : '; a document sent as a string arrives with its line ends as LF: send it as base64 to keep its bytes as signed';
        throw invalidArgument(2, 'signature', `${describeError(error)}${hint}`);
      }
      const result = await deps.acceptDocument(body, `push by ${describeCaller(caller)}`);
      if (result.outcome === 'rejected') throw invalidArgument(1, 'document', result.detail);
      if (result.outcome === 'unwritable') throw new ApiFault(FaultCode.internal, result.detail);
      await persisted(() => store.flush());
      await deps.converge('push');
      return { outcome: result.outcome, detail: result.detail };
    },
  };
}

/**
 * A change is answered only once it is on disk: a caller told "done" must not lose it to a crash.
 * One that cannot be written (a full disk) is still in force in memory and written when it can be.
 */
async function persisted(change: () => Promise<unknown>): Promise<void> {
  try {
    await change();
  } catch (error) {
    throw new ApiFault(FaultCode.internal, `the change is in force but the node database cannot be written (${describeError(error)}); it is written as soon as it can be`);
  }
}

/** One [recipient, resource, amount] triple of SetLoans, with the seed's resource names allowed. */
function parseLoan(item: unknown, i: number): Loan {
  const where = `loan ${i + 1}`;
  if (!Array.isArray(item) || item.length !== 3) {
    throw invalidArgument(2, 'loans', `${where} must be a [recipient, resource, amount] triple`);
  }
  const [recipient, resource, amount] = item as unknown[];
  if (typeof recipient !== 'string') throw invalidArgument(2, 'loans', `${where}: recipient must be a string`);
  if (typeof resource !== 'string') throw invalidArgument(2, 'loans', `${where}: resource must be a string`);
  if (typeof amount !== 'number' || !Number.isSafeInteger(amount) || amount < 0) {
    throw invalidArgument(2, 'loans', `${where}: amount must be a non-negative integer, got ${JSON.stringify(amount)}`);
  }
  const canonical = canonicalResource(resource);
  if (!canonical) throw invalidArgument(2, 'loans', `${where}: resource ${JSON.stringify(resource)} is not known`);
  // `+ 0` makes an <int>-0</int> plain 0.
  return { recipient, resource: canonical.name, amount: Math.floor(amount / canonical.divisor) + 0 };
}

/** Ticket and AdminTicket: a signed sliver record, kept when newer than the one the node holds. */
export async function acceptTicket(deps: NodeApiDeps, caller: Caller, ticket: string, method: string): Promise<number> {
  let verified: { sliver: SliverSpec; timestamp: number };
  try {
    verified = deps.verifyTicket(ticket);
  } catch (error) {
    throw invalidArgument(1, 'ticket', describeError(error));
  }
  const key = sliverKey(verified.sliver.name);
  const held = deps.store.data.records[key];
  if (held && held.timestamp >= verified.timestamp) {
    throw invalidArgument(1, 'ticket', `the node holds ${verified.sliver.name} at timestamp ${held.timestamp}, not older than the ticket's ${verified.timestamp}: replayed or stale`);
  }
  // A sliver the node does not hold may be one a later document removed: its old ticket must not
  // bring it back. As the original's database dropped any record older than the last whole
  // update, a ticket older than the document in force is stale.
  const inForce = deps.store.data.records['timestamp']?.timestamp ?? 0;
  if (!held && verified.timestamp < inForce) {
    throw invalidArgument(1, 'ticket', `the node's document in force has timestamp ${inForce}, newer than the ticket's ${verified.timestamp}, and does not hold ${verified.sliver.name}: replayed or stale`);
  }
  const next = recordOfSliver(verified.sliver, held);
  await persisted(() => deps.records.put({ kind: 'ticket', method, caller: describeCaller(caller) }, [next]));
  await deps.converge('ticket');
  return 1;
}

/** What the API's methods do to the node (see nodeApi). */
export type NodeApi = ReturnType<typeof nodeApi>;
