// One runtime for the supervisors over the host's runtimes: an operation goes to the runtime it
// names (a spec's, or for a stop or destroy the runtime the account was found on).
import type { LibvirtRuntime } from './libvirt/runtime.js';
import type { AccountRuntime, HostSnapshot } from './types.js';

export function dispatchRuntime(unix: AccountRuntime, guests: LibvirtRuntime): AccountRuntime {
  let merged: { unix: HostSnapshot; guests: HostSnapshot; snapshot: HostSnapshot } | null = null;

  const runtimeOf = (runtime: string) => (runtime === 'unix' ? unix : guests);

  return {
    async observe(options) {
      const [u, g] = await Promise.all([unix.observe(options), guests.observe(options)]);
      // The same object while neither part changed, so that an idle converge pass is cheap.
      if (merged?.unix === u && merged.guests === g) return merged.snapshot;
      const names = new Set(u.owned.map((o) => o.name));
      const snapshot: HostSnapshot = {
        owned: [...u.owned, ...g.owned.filter((o) => !names.has(o.name))],
        foreign: new Set([...u.foreign, ...g.foreign]),
        unseen: new Set([...(u.unseen ?? []), ...(g.unseen ?? [])]),
      };
      merged = { unix: u, guests: g, snapshot };
      return snapshot;
    },
    create: (spec) => runtimeOf(spec.runtime).create(spec),
    configure: (spec) => runtimeOf(spec.runtime).configure(spec),
    start: (spec, context) => runtimeOf(spec.runtime).start(spec, context),
    // A guest's stop or destroy while libvirt cannot be reached fails (and is retried): it is never
    // handed to the unix runtime, which would find no account and report it done.
    stop: (name, kind, runtime) => runtimeOf(runtime).stop(name, kind, runtime),
    destroy: (name, kind, runtime) => runtimeOf(runtime).destroy(name, kind, runtime),
  };
}
