// Which libvirt domains are this daemon's guests, across the kinds' connections. A domain is ours
// when it carries our marker for its name and kind, made by a daemon with our guest directory: one
// host may run several daemons (tests do), and each keeps to its own.
import type { Logger } from '../../log.js';
import { describeError } from '../../util/errors.js';
import { readDomainDetails, type DomainDetails } from './domain-xml.js';
import type { GuestKind } from './guest-definition.js';
import type { GuestDriver } from './guest-driver.js';

/** A domain as libvirt holds it, with the driver of its connection. */
export interface FoundDomain {
  readonly driver: GuestDriver;
  readonly name: string;
  readonly active: boolean;
  readonly details: DomainDetails;
}

export interface GuestDomains {
  /** Every domain of every connection that answers (ours and others'), and the kinds that answered. */
  listAll(): Promise<{ found: FoundDomain[]; reached: ReadonlySet<GuestKind> }>;
  isOurs(details: DomainDetails, name: string, kind: GuestKind): boolean;
  /** Our guest of that name on the driver's connection, or null; a connection that fails throws. */
  owned(driver: GuestDriver, name: string): Promise<FoundDomain | null>;
  /** The same, failing with "libvirt unreachable: …" naming `what` was to be done. */
  ownedOrUnreachable(driver: GuestDriver, name: string, what: string): Promise<FoundDomain | null>;
  /** Our guest of that name on whichever connection holds it; one that cannot be asked counts as not. */
  ownedAnywhere(name: string): Promise<FoundDomain | null>;
}

export function createGuestDomains(drivers: readonly GuestDriver[], guestDir: string, logger: Logger): GuestDomains {
  /** The reason each unreachable kind was last said to be unreachable for. */
  const unavailable = new Map<GuestKind, string>();

  const isOurs = (details: DomainDetails, name: string, kind: GuestKind) =>
    details.marker?.name === name && details.marker.runtime === kind && details.marker.guestDir === guestDir;

  const owned = async (driver: GuestDriver, name: string): Promise<FoundDomain | null> => {
    const d = await driver.hypervisor.find(name);
    if (!d) return null;
    const details = readDomainDetails(d.xml);
    return isOurs(details, name, driver.kind) ? { driver, name, active: d.active, details } : null;
  };

  return {
    isOurs,
    owned,

    async listAll() {
      const found: FoundDomain[] = [];
      const reached = new Set<GuestKind>();
      await Promise.all(drivers.map(async (driver) => {
        const { kind } = driver;
        try {
          for (const d of await driver.hypervisor.list()) found.push({ driver, name: d.name, active: d.active, details: readDomainDetails(d.xml) });
          reached.add(kind);
          if (unavailable.delete(kind)) logger.info('libvirt reachable again', { driver: kind });
        } catch (error) {
          const reason = describeError(error);
          // Said once per reason, as information: a node without libvirt runs unix slivers only, and a
          // libvirt sliver's create fails with the reason itself.
          if (unavailable.get(kind) !== reason) logger.info('libvirt not reachable', { driver: kind, reason });
          unavailable.set(kind, reason);
        }
      }));
      return { found, reached };
    },

    async ownedOrUnreachable(driver, name, what) {
      try {
        return await owned(driver, name);
      } catch (error) {
        throw new Error(`libvirt unreachable: the ${what} of ${driver.kind} guest ${name} waits for ${driver.hypervisor.uri}: ${describeError(error)}`);
      }
    },

    async ownedAnywhere(name) {
      for (const driver of drivers) {
        const found = await owned(driver, name).catch(() => null);
        if (found) return found;
      }
      return null;
    },
  };
}
