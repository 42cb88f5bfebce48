// One runtime for the supervisors over the host's runtimes: a spec goes to the runtime it names;
// a stop or destroy, which carries only a name, goes to whichever runtime holds that name.
import type { AccountKind } from '../db/types.js';
import type { LibvirtRuntime } from './libvirt/runtime.js';
import type { AccountRuntime, HostSnapshot } from './types.js';

export function dispatchRuntime(unix: AccountRuntime, guests: LibvirtRuntime): AccountRuntime {
  let merged: { unix: HostSnapshot; guests: HostSnapshot; snapshot: HostSnapshot } | null = null;

  const runtimeOf = (spec: { runtime: string }) => (spec.runtime === 'unix' ? unix : guests);
  /** The guest driver of a sliver of that name; an unreachable libvirt counts as "not a guest". */
  const isGuest = async (name: string, kind: AccountKind) =>
    kind === 'sliver' && (await guests.driverOf(name).catch(() => null)) !== null;

  return {
    async observe(options) {
      const [u, g] = await Promise.all([unix.observe(options), guests.observe(options)]);
      // The same object while neither part changed, so that an idle converge pass is cheap.
      if (merged?.unix === u && merged.guests === g) return merged.snapshot;
      const names = new Set(u.owned.map((o) => o.name));
      const snapshot: HostSnapshot = {
        owned: [...u.owned, ...g.owned.filter((o) => !names.has(o.name))],
        foreign: new Set([...u.foreign, ...g.foreign]),
      };
      merged = { unix: u, guests: g, snapshot };
      return snapshot;
    },
    create: (spec) => runtimeOf(spec).create(spec),
    configure: (spec) => runtimeOf(spec).configure(spec),
    start: (spec) => runtimeOf(spec).start(spec),
    async stop(name, kind) {
      await ((await isGuest(name, kind)) ? guests : unix).stop(name, kind);
    },
    async destroy(name, kind) {
      if (await isGuest(name, kind)) await guests.destroy(name, kind);
      // Idempotent and cheap when there is no such account; it also finishes a destroy of an
      // account that a crash interrupted.
      await unix.destroy(name, kind);
    },
  };
}
