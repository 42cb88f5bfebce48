// The limits as the supervisor's lifecycle hook: a Unix sliver's limits are in force before it is
// configured (and so before it starts), it starts inside its cgroups, its groups are emptied
// before it stops, and removed once it is destroyed. A guest's limits are in its domain definition.
import type { AccountRef, LifecycleHook } from './hooks.js';
import type { AccountSpec } from '../runtimes/types.js';
import type { Enforcer } from '../limits/enforcer.js';

const isUnixSliver = (account: { kind: string; runtime: string }) => account.kind === 'sliver' && account.runtime === 'unix';

export function limitsHook(enforcer: Enforcer): LifecycleHook {
  return {
    name: 'limits',
    async beforeConfigure(spec: AccountSpec) {
      if (!isUnixSliver(spec)) return;
      // Limits are node-wide (a weight depends on every sliver's): one apply serves them all.
      await enforcer.refresh();
      const problem = enforcer.problems().get(spec.name)?.get('cgroup') ?? null;
      if (problem !== null) throw new Error(`limits of sliver "${spec.name}" not applied: ${problem}`);
    },
    startContext: (spec) => (isUnixSliver(spec) ? { cgroupProcFiles: enforcer.launchFiles(spec.name) } : {}),
    async beforeStop(account: AccountRef) {
      // Freezing the group stops forks, so nothing escapes while its processes die.
      if (isUnixSliver(account)) await enforcer.killAll(account.name);
    },
    async afterDestroy(account: AccountRef) {
      if (isUnixSliver(account)) await enforcer.remove(account.name);
    },
  };
}
