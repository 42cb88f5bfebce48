// Recovery after a crash of the daemon (even kill -9 in the middle of a create or destroy): what
// exists is what the domains' markers say, and what an interrupted create or destroy left beside
// them is removed here, at each observation of the host: a guest directory whose domain does not
// exist (on a kind whose libvirt answered), and the leases of guests with neither domain nor
// directory. Guests with an operation running are left alone.
import type { AddressBook } from '../../addresses/address-book.js';
import type { Logger } from '../../log.js';
import type { GuestBandwidth } from './guest-bandwidth.js';
import type { GuestKind } from './guest-definition.js';
import type { GuestDriver } from './guest-driver.js';
import { guestDirNames, guestFiles, readGuestKind, removeGuestFiles } from './guest-files.js';

export interface RecoveryDeps {
  readonly guestDir: string;
  readonly drivers: readonly GuestDriver[];
  readonly addresses: AddressBook;
  readonly bandwidth: GuestBandwidth;
  /** Guests with a create or destroy running. */
  readonly inFlight: ReadonlySet<string>;
  readonly logger: Logger;
}

/** What one look at libvirt found. */
export interface ObservedGuests {
  /** Our guests, by name. */
  readonly owned: ReadonlySet<string>;
  /** The kinds whose libvirt answered. */
  readonly reached: ReadonlySet<GuestKind>;
  readonly running: ReadonlySet<string>;
  /** The MAC addresses each of our guests' domains uses. */
  readonly macsOf: ReadonlyMap<string, readonly string[]>;
}

export function createGuestRecovery(deps: RecoveryDeps): { recover(seen: ObservedGuests): Promise<void> } {
  const { guestDir, drivers, addresses, bandwidth, inFlight, logger } = deps;
  const sharedDirs = new Set(drivers.flatMap((d) => (d.sharedDir === null ? [] : [d.sharedDir])));
  /** What the kinds share is looked over at the first recovery, later only after a removal. */
  let collectedOnce = false;

  /** Removes the directories of guests without a domain; true when it removed one. */
  const removeLeftDirectories = async (seen: ObservedGuests): Promise<boolean> => {
    let removed = false;
    for (const name of await guestDirNames(guestDir)) {
      if (seen.owned.has(name) || inFlight.has(name) || sharedDirs.has(name)) continue;
      const files = guestFiles(guestDir, name);
      const written = await readGuestKind(files);
      const kind = drivers.find((d) => d.kind === written)?.kind ?? null;
      if (kind !== null && !seen.reached.has(kind)) continue; // its libvirt did not answer: it may exist
      // A guest's root may stay held on the host after a crash of ours (a container's stays mounted).
      for (const driver of drivers) await driver.releaseRoot(files);
      await removeGuestFiles(files);
      removed = true;
      logger.info('guest files removed', { sliver: name, reason: 'no domain (an interrupted create or destroy)' });
    }
    return removed;
  };

  return {
    async recover(seen) {
      // A domain whose addresses the records lost (a database rebuilt) keeps them: they are leased
      // again before anything else could be given them.
      for (const [name, macs] of seen.macsOf) {
        if (inFlight.has(name) || macs.length === 0) continue;
        for (const problem of await addresses.reclaim(name, macs)) logger.warn('address of a guest not leased again', { sliver: name, problem });
      }
      const removed = await removeLeftDirectories(seen);
      if (removed || !collectedOnce) {
        for (const driver of drivers) await driver.collectShared();
        // Interface limits of guests that are not running (stopped behind the daemon's back, or
        // while it was down) are removed at start; those of guests it stops, as it stops them.
        await bandwidth.sweep(addresses.holders().filter((name) => !seen.running.has(name) && !inFlight.has(name)));
        collectedOnce = true;
      }
      const dirs = new Set(await guestDirNames(guestDir));
      for (const name of addresses.holders()) {
        if (seen.owned.has(name) || inFlight.has(name) || dirs.has(name)) continue;
        await bandwidth.unshape(name);
        await addresses.release(name);
        logger.info('addresses released', { sliver: name, reason: 'no domain (an interrupted create or destroy)' });
      }
    },
  };
}
