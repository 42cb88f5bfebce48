// The address leases of the node, kept in the node database: the pool file says what may be
// handed out, the database says what is. A lease is on disk before the domain that uses it is
// defined, so a crash can never hand one address out twice.
import type { DatabaseStore } from '../db/store.js';
import type { AddressLease, NodeDatabase } from '../db/types.js';
import type { AddressPoolFile } from './pool-file.js';
import { allocateAddresses, reclaimAddresses } from './pool.js';

export interface AddressBook {
  /** The sliver's leases for interfaces 0..count-1, made if missing; throws when the pool is exhausted. */
  lease(sliver: string, count: number): Promise<AddressLease[]>;
  release(sliver: string): Promise<void>;
  /**
   * Records the leases of the MACs a guest already uses, where the records lost them; returns what
   * could not be recorded, in words.
   */
  reclaim(sliver: string, macs: readonly string[]): Promise<string[]>;
  /** Names of the slivers that hold leases. */
  holders(): readonly string[];
  /** The sliver's leases, by interface. */
  leasesOf(sliver: string): AddressLease[];
}

const leasesOf = (db: NodeDatabase, sliver: string) =>
  Object.values(db.addresses).filter((l) => l.sliver === sliver).sort((a, b) => a.iface - b.iface);

const holdersOf = (db: NodeDatabase) => [...new Set(Object.values(db.addresses).map((l) => l.sliver))];

/** The leases of a database snapshot, for commands that only look (status, plan): no lease is made or released. */
export function readOnlyAddressBook(db: NodeDatabase): AddressBook {
  const refuse = () => Promise.reject(new Error('addresses are only leased and released by the daemon'));
  return { lease: refuse, release: refuse, reclaim: refuse, holders: () => holdersOf(db), leasesOf: (sliver) => leasesOf(db, sliver) };
}

export function databaseAddressBook(store: DatabaseStore, pool: AddressPoolFile, now: () => Date): AddressBook {
  /** Records the leases, on disk before the caller goes on to use them. */
  const record = async (leases: readonly AddressLease[]) => {
    store.update((db) => {
      const addresses = { ...db.addresses };
      for (const l of leases) addresses[l.mac] = l;
      return { ...db, addresses };
    });
    await store.flush();
  };
  return {
    async lease(sliver, count) {
      const held = leasesOf(store.data, sliver);
      if (held.length >= count) return held.slice(0, count);
      const { entries } = await pool.entries();
      // No await between reading the leases and recording the new ones: two slivers asking at
      // once cannot be given the same entry.
      const result = allocateAddresses(entries, Object.values(store.data.addresses), sliver, count, now().toISOString(), pool.path);
      if (!result.ok) throw new Error(result.reason);
      await record(result.leases);
      return result.leases;
    },
    async release(sliver) {
      if (leasesOf(store.data, sliver).length === 0) return;
      store.update((db) => ({
        ...db,
        addresses: Object.fromEntries(Object.entries(db.addresses).filter(([, l]) => l.sliver !== sliver)),
      }));
      await store.flush();
    },
    async reclaim(sliver, macs) {
      const held = new Set(leasesOf(store.data, sliver).map((l) => l.mac.toLowerCase()));
      if (macs.every((mac) => held.has(mac.toLowerCase()))) return [];
      const { entries } = await pool.entries();
      const result = reclaimAddresses(entries, Object.values(store.data.addresses), sliver, macs, now().toISOString());
      if (result.leases.length > 0) await record(result.leases);
      return result.problems;
    },
    holders: () => holdersOf(store.data),
    leasesOf: (sliver) => leasesOf(store.data, sliver),
  };
}

/**
 * The part of the book whose holders `owns` names: each guest lifecycle (the slivers', the
 * on-demand guests') sees only its own holders, so that its recovery never releases the leases of
 * guests the other one keeps. Leasing and releasing go to the whole book.
 */
export function scopedAddressBook(book: AddressBook, owns: (holder: string) => boolean): AddressBook {
  return { ...book, holders: () => book.holders().filter(owns) };
}
