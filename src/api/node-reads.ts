// What the API's read methods answer: uids and keys of the slivers a caller may act on, a
// sliver's effective rspec, and its status on the node (with its limits as the host holds them).
import { withDefaults, type Rspec } from '../rspec/resources.js';
import { describeError } from '../util/errors.js';
import type { Caller } from './identity.js';
import type { NodeApiDeps } from './node-api.js';
import type { NodeLookup } from './node-lookup.js';

export function nodeReads(deps: NodeApiDeps, lookup: NodeLookup) {
  const { store } = deps;
  return {
    xids(caller: Caller): Record<string, number> {
      const out: Record<string, number> = {};
      for (const s of lookup.visible(caller)) {
        const uid = store.data.accounts[s.name]?.uid;
        if (uid !== undefined && uid !== null) out[s.name] = uid;
      }
      return out;
    },

    sshKeys(caller: Caller): Record<string, string> {
      return Object.fromEntries(lookup.visible(caller).map((s) => [s.name, s.keys.map((k) => `${k}\n`).join('')]));
    },

    effectiveRspec(name: string): Rspec {
      lookup.record(name);
      return lookup.effective().effective.get(name) ?? withDefaults({});
    },

    async sliverStatus(name: string) {
      const r = lookup.record(name);
      const account = store.data.accounts[name];
      const computed = lookup.effective();
      const uid = account?.uid ?? null;
      const inForce = uid !== null && deps.limitsInForce ? await deps.limitsInForce(name, uid) : {};
      const runtime = r.guest.runtime ?? deps.defaultRuntime;
      const guest = runtime !== 'unix' && deps.guestStatus ? await deps.guestStatus(name).catch((e: unknown) => ({ error: describeError(e) })) : null;
      return {
        name,
        runtime,
        ...(guest ? { guest } : {}),
        state: account?.state ?? 'absent',
        since: account?.since ?? '',
        uid: account?.uid ?? -1,
        last_error: account?.reason ?? '',
        instantiation: r.instantiation,
        stopped_by_api: r.node_state.stopped,
        effective_rspec: computed.effective.get(name) ?? {},
        rejected_loans: computed.rejected
          .filter((x) => x.lender === name)
          .map((x) => ({ recipient: x.loan.recipient, resource: x.loan.resource, amount: x.loan.amount, reason: x.reason })),
        limits_in_force: inForce,
      };
    },
  };
}
