// One pass of "make the host match the records": expire, observe, plan, hand the plan to the
// supervisors, and keep the account bookkeeping honest. Serialised: passes never overlap.
import type { Supervisors } from '../accounts/supervisor.js';
import { recordAccountReport } from '../db/accounts.js';
import { delegateRecords, expireRecords, sliverRecords } from '../db/records.js';
import type { DatabaseStore } from '../db/store.js';
import type { NodeDatabase } from '../db/types.js';
import type { Logger } from '../log.js';
import { desiredAccounts, planReconcile, type Plan } from '../reconcile/plan.js';
import type { AccountRuntime } from '../runtimes/types.js';

export interface ConvergeDeps {
  readonly store: DatabaseStore;
  readonly runtime: AccountRuntime;
  readonly supervisors: Supervisors;
  readonly logger: Logger;
  readonly now: () => Date;
}

export interface Converger {
  converge(trigger: string): Promise<Plan>;
}

function describeLoan(lender: string, loan: { recipient: string; resource: string; amount: number }): string {
  return `${lender}->${loan.recipient} ${loan.amount} ${loan.resource}`;
}

export function createConverger(deps: ConvergeDeps): Converger {
  const { store, runtime, supervisors, logger } = deps;
  let chain: Promise<unknown> = Promise.resolve();
  let lastRejected = new Set<string>();

  const pass = async (trigger: string): Promise<Plan> => {
    const started = Date.now();
    const nowSeconds = Math.floor(deps.now().getTime() / 1000);
    const expired = expireRecords(store.data, nowSeconds);
    if (expired.removed.length > 0) {
      store.update(() => expired.database);
      logger.info('records expired', { records: expired.removed.join(',') });
    }

    const host = await runtime.observe();
    const desired = desiredAccounts(sliverRecords(store.data), delegateRecords(store.data));
    const plan = planReconcile({ desired: desired.specs, host, accounts: store.data.accounts });
    supervisors.submit(plan.ops);

    const rejected = new Set(desired.rejectedLoans.map((r) => `${describeLoan(r.lender, r.loan)}: ${r.reason}`));
    for (const line of rejected) if (!lastRejected.has(line)) logger.warn('loan rejected', { loan: line });
    lastRejected = rejected;

    const nowIso = deps.now().toISOString();
    const busy = new Set(supervisors.busy());
    const wanted = new Set(desired.specs.map((s) => s.name));
    const onHost = new Set(host.owned.map((o) => o.name));
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
        if (planned.has(found.name) || busy.has(found.name) || !wanted.has(found.name)) continue;
        const state = found.started ? 'running' : 'stopped';
        const known = next.accounts[found.name];
        if (known?.state !== state || known.uid !== found.uid || known.reason !== null) {
          next = recordAccountReport(next, { name: found.name, kind: found.kind, state, reason: null, uid: found.uid, attempts: 0 }, nowIso);
        }
      }
      // Forget accounts that are neither wanted, on the host, refused nor being worked on.
      const accounts = { ...next.accounts };
      for (const name of Object.keys(accounts)) {
        if (!wanted.has(name) && !onHost.has(name) && !busy.has(name) && !refused.has(name)) delete accounts[name];
      }
      return { ...next, accounts };
    });
    for (const refusal of plan.refusals) {
      logger.warn('account refused', { account: refusal.account, kind: refusal.kind, reason: refusal.reason });
    }
    logger.info('converge planned', {
      trigger, ops: plan.ops.length, accounts: desired.specs.length, refused: plan.refusals.length,
      duration_ms: Date.now() - started,
    });
    return plan;
  };

  return {
    converge(trigger) {
      const run = chain.then(() => pass(trigger));
      chain = run.catch(() => undefined);
      return run;
    },
  };
}
