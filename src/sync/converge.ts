// One pass of "make the host match the records": expire, observe, plan, hand the plan to the
// supervisors, and keep the account bookkeeping honest. Serialised: passes never overlap.
import type { Supervisors } from '../accounts/supervisor.js';
import { recordAccountReport } from '../db/accounts.js';
import { adoptedKey, adoptedRecordOf, earliestExpiry, expireRecords, sliverKey } from '../db/records.js';
import type { Records, RecordWriter } from '../db/record-writer.js';
import type { DatabaseStore } from '../db/store.js';
import type { NodeDatabase, NodeRecord } from '../db/types.js';
import type { Logger } from '../log.js';
import type { Desired } from '../reconcile/desired.js';
import { planReconcile, type Plan } from '../reconcile/plan.js';
import type { AccountRuntime, HostSnapshot } from '../runtimes/types.js';
import { describeError } from '../util/errors.js';
import { serialQueue } from '../util/serial.js';

export interface ConvergeDeps {
  readonly store: DatabaseStore;
  /** The records change through it alone (expiry, adoption). */
  readonly records: RecordWriter;
  readonly runtime: AccountRuntime;
  readonly supervisors: Supervisors;
  readonly logger: Logger;
  readonly now: () => Date;
  /** What the records ask of the host (desiredOfRecords: shared with the limits). */
  readonly desired: (db: Pick<NodeDatabase, 'records'>) => Desired;
  /** Runs at the end of every pass (the limits follow the records, loans included). */
  readonly afterPass?: () => Promise<void>;
}

export interface Converger {
  converge(trigger: string): Promise<Plan>;
  /** The accounts the records in force ask for, computed once per change of the records. */
  desired(): Desired;
}

function describeLoan(lender: string, loan: { recipient: string; resource: string; amount: number }): string {
  return `${lender}->${loan.recipient} ${loan.amount} ${loan.resource}`;
}

export function createConverger(deps: ConvergeDeps): Converger {
  const { store, runtime, supervisors, logger } = deps;
  // Passes never overlap: each plans from what the one before left.
  const passes = serialQueue();
  let lastRejected = new Set<string>();
  // The same records object gives the same desired state (memoised): a pass with no new records
  // skips the loan arithmetic and hashing.
  const desiredFor = (records: NodeDatabase['records']): Desired => deps.desired({ records });
  let lastHeld = '';

  // Nothing can expire before the earliest expiry of the records: until then a pass skips the scan.
  let expiryMemo: { records: NodeDatabase['records']; earliest: number | null } | null = null;
  const expire = (nowSeconds: number) => {
    if (expiryMemo?.records !== store.data.records) {
      expiryMemo = { records: store.data.records, earliest: earliestExpiry(store.data.records) };
    }
    if (expiryMemo.earliest === null || expiryMemo.earliest > nowSeconds) return;
    deps.records.apply({ kind: 'node', why: 'expiry' }, (records) => expireRecords(records, nowSeconds).records);
  };
  // The planner is pure: the same desired accounts, host snapshot and bookkeeping give the same
  // plan, and the bookkeeping below has nothing to correct. The runtime returns the same snapshot
  // object while the host's account files are unchanged, so a no-change pass costs next to nothing.
  let passMemo: { desired: Desired; host: HostSnapshot; accounts: NodeDatabase['accounts']; busy: string; plan: Plan } | null = null;

  // A failure of the limits is theirs to report; it must not fail the pass.
  const afterPass = () => deps.afterPass?.().catch((error: unknown) => {
    logger.error('limits not refreshed', { error: describeError(error) });
  }) ?? Promise.resolve();

  const pass = async (trigger: string): Promise<Plan> => {
    const started = Date.now();
    expire(Math.floor(deps.now().getTime() / 1000));

    const host = await runtime.observe();
    const desired = desiredFor(store.data.records);
    const busyNow = supervisors.busy();
    const busyKey = busyNow.join(',');
    if (
      passMemo && passMemo.desired === desired && passMemo.host === host &&
      passMemo.accounts === store.data.accounts && passMemo.busy === busyKey
    ) {
      supervisors.submit(passMemo.plan.ops);
      await afterPass();
      logger.debug('converge unchanged', { trigger, ops: passMemo.plan.ops.length, duration_ms: Date.now() - started });
      return passMemo.plan;
    }
    const plan = planReconcile({ desired, host, accounts: store.data.accounts });
    supervisors.submit(plan.ops);

    const rejected = new Set(desired.rejectedLoans.map((r) => `${describeLoan(r.lender, r.loan)}: ${r.reason}`));
    for (const line of rejected) if (!lastRejected.has(line)) logger.warn('loan rejected', { loan: line });
    lastRejected = rejected;

    const held = plan.held.map((h) => h.account).join(',');
    if (held !== lastHeld && held !== '') logger.warn('accounts not created: no document in force', { accounts: held });
    lastHeld = held;

    const nowIso = deps.now().toISOString();
    const busy = new Set(busyNow);
    // Adopted accounts are kept as the host shows them, as wanted ones are.
    const kept = new Set([...desired.specs.map((s) => s.name), ...desired.adopted.keys()]);
    const onHost = new Set(host.owned.map((o) => o.name));
    deps.records.apply({ kind: 'node', why: 'adoption' }, (records) => withAdoptions(records, plan, desired, onHost, busy, nowIso));
    store.update((db) => {
      let next: NodeDatabase = db;
      for (const refusal of plan.refusals) {
        next = recordAccountReport(next, { name: refusal.account, kind: refusal.kind, state: 'failed', reason: `refused: ${refusal.reason}`, attempts: 0 }, nowIso);
      }
      const refused = new Set(plan.refusals.map((r) => r.account));
      // An account the plan leaves alone is as the host shows it: this corrects what a crash
      // kept the daemon from recording (say, a start done just before a kill -9).
      const planned = new Set(plan.ops.map((o) => o.account));
      for (const found of host.owned) {
        if (planned.has(found.name) || busy.has(found.name) || !kept.has(found.name)) continue;
        const state = found.started ? 'running' : 'stopped';
        const known = next.accounts[found.name];
        if (known?.state !== state || known.uid !== found.uid || known.reason !== null) {
          next = recordAccountReport(next, { name: found.name, kind: found.kind, state, reason: null, uid: found.uid, attempts: 0 }, nowIso);
        }
      }
      // Forget accounts that are neither wanted, on the host, refused nor being worked on.
      const forgotten = Object.keys(next.accounts).filter(
        (name) => !kept.has(name) && !onHost.has(name) && !busy.has(name) && !refused.has(name),
      );
      if (forgotten.length === 0) return next; // the same object when nothing changed: no write
      const accounts = { ...next.accounts };
      for (const name of forgotten) delete accounts[name];
      return { ...next, accounts };
    });
    passMemo = { desired, host, accounts: store.data.accounts, busy: busyKey, plan };
    await afterPass();
    for (const refusal of plan.refusals) {
      logger.warn('account refused', { account: refusal.account, kind: refusal.kind, reason: refusal.reason });
    }
    for (const found of plan.adopt) {
      const delegated = desired.dormant.has(found.name);
      logger.warn(delegated ? 'delegated sliver found on the host: its Create is taken as made' : 'account adopted, awaiting a document', {
        account: found.name, kind: found.kind, runtime: found.runtime, uid: found.uid,
      });
    }
    logger.info('converge planned', {
      trigger, document: desired.document ?? 'none', ops: plan.ops.length, accounts: desired.specs.length,
      adopted: desired.adopted.size + plan.adopt.length, refused: plan.refusals.length, duration_ms: Date.now() - started,
    });
    return plan;
  };

  return {
    desired: () => desiredFor(store.data.records),
    converge(trigger) {
      return passes.run(() => pass(trigger));
    },
  };
}

/**
 * The records after the plan's adoptions: an account kept as found gets an adopted record (or, for a
 * delegated sliver the records hold, its Create is taken as made), and the adopted record of an
 * account that has left the host goes. The same object when nothing changed.
 */
function withAdoptions(
  current: Records, plan: Plan, desired: Desired, onHost: ReadonlySet<string>, busy: ReadonlySet<string>, nowIso: string,
): Records {
  const gone = [...desired.adopted.keys()].filter((name) => !onHost.has(name) && !busy.has(name));
  for (const [name] of desired.unwanted) {
    if (current[adoptedKey(name)] && !onHost.has(name) && !busy.has(name)) gone.push(name);
  }
  if (plan.adopt.length === 0 && gone.length === 0) return current;
  const records: Record<string, NodeRecord> = { ...current };
  for (const found of plan.adopt) {
    const sliver = records[sliverKey(found.name)];
    if (desired.dormant.has(found.name) && sliver?.type === 'sliver') {
      records[sliver.record_key] = { ...sliver, node_state: { ...sliver.node_state, created: true, destroyed: false } };
    } else {
      const adopted = adoptedRecordOf(found, nowIso);
      records[adopted.record_key] = adopted;
    }
  }
  for (const name of gone) delete records[adoptedKey(name)];
  return records;
}
