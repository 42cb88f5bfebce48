// Who limits a guest's interfaces: libvirt, through the domain's <bandwidth>, where the kernel has
// what libvirt shapes with; nodemgr itself (guest-shaper.ts) where it has not. The kernel is asked
// once, when the first guest is defined.
import type { AddressBook } from '../../addresses/address-book.js';
import type { Logger } from '../../log.js';
import { tapName } from './domain-plan.js';
import type { DomainDetails } from './domain-xml.js';
import type { GuestDefinition } from './guest-definition.js';
import { ifbOf, leftIfbDevices, readGuestShaping, shapeGuestInterface, unshapeGuestInterface } from './guest-shaper.js';
import { guestBandwidthProblem } from './live-tuning.js';
import { guestShape } from './shape.js';

export interface GuestBandwidth {
  /** Why libvirt cannot limit guest interfaces here, or null when it can. */
  check(): Promise<string | null>;
  /** Where libvirt cannot, limits the guest's interfaces to its net_max_rate (after a start, on a change). */
  shape(name: string, definition: Pick<GuestDefinition, 'limits' | 'size'>): Promise<void>;
  /** Removes nodemgr's own limits of the sliver's interfaces (stop, destroy, recovery). */
  unshape(name: string): Promise<void>;
  /** Removes nodemgr's own interface limits left for these slivers (guests that are not running). */
  sweep(names: readonly string[]): Promise<void>;
  /** "enforced", "enforced by nodemgr: …", "none asked", or why it cannot be. */
  status(name: string, details: DomainDetails, active: boolean): Promise<string>;
}

export function createGuestBandwidth(deps: { addresses: AddressBook; logger: Logger }): GuestBandwidth {
  const { addresses, logger } = deps;
  let problem: Promise<string | null> | null = null;

  const check = () => {
    problem ??= guestBandwidthProblem().then((found) => {
      if (found !== null) logger.warn('libvirt cannot limit guest interfaces; nodemgr does', { reason: found });
      return found;
    });
    return problem;
  };

  return {
    check,
    async shape(name, definition) {
      if ((await check()) === null) return;
      const result = guestShape(definition.limits, definition.size);
      const averageKBps = result.ok ? result.shape.bandwidth?.averageKBps ?? null : null;
      for (const lease of addresses.leasesOf(name)) {
        await shapeGuestInterface(tapName(name, lease.iface), averageKBps === null ? null : averageKBps * 8);
      }
    },
    async unshape(name) {
      if ((await check()) === null) return;
      for (const lease of addresses.leasesOf(name)) await unshapeGuestInterface(tapName(name, lease.iface));
    },
    async sweep(names) {
      const left = new Set(await leftIfbDevices());
      for (const name of names) {
        for (const lease of addresses.leasesOf(name)) {
          const tap = tapName(name, lease.iface);
          if (left.has(ifbOf(tap))) await unshapeGuestInterface(tap);
        }
      }
    },
    async status(name, details, active) {
      if (details.interfaces.some((i) => i.outboundAverageKBps !== null || i.inboundAverageKBps !== null)) return 'enforced';
      const why = problem ? await problem : null;
      const first = addresses.leasesOf(name)[0];
      if (why !== null && active && first) {
        const own = await readGuestShaping(tapName(name, first.iface));
        if (own.toGuestKbit !== null || own.fromGuestKbit !== null) {
          return `enforced by nodemgr: ${own.toGuestKbit ?? '-'} kbit/s to, ${own.fromGuestKbit ?? '-'} kbit/s from the guest (${why})`;
        }
      }
      return why ?? 'none asked';
    },
  };
}
