// The libvirt runtime: a sliver made of a guest, a QEMU virtual machine or an LXC container. It
// only turns the supervisors' AccountSpec into a guest definition and what the guest lifecycle
// (guests.ts) finds into accounts; the guests themselves (leases, roots, domains, boots, recovery)
// are the lifecycle's, which serves every kind through its driver (drivers/).
import type { AddressBook } from '../../addresses/address-book.js';
import type { AccountKind } from '../../db/types.js';
import type { Logger } from '../../log.js';
import type { RuntimeKind } from '../../slices/types.js';
import { PermanentError } from '../../util/errors.js';
import type { AccountRuntime, AccountSpec, GuestStatus, HostSnapshot, ObservedAccount } from '../types.js';
import { GUEST_DRIVERS, GUEST_KINDS } from './drivers/index.js';
import type { GuestDefinition, GuestKind, ImageSource } from './guest-definition.js';
import type { GuestWords } from './guest-driver.js';
import { createGuestLifecycle, type GuestSession } from './guests.js';
import type { Hypervisor } from './hypervisor.js';

export type { ImageSource, ResolvedImage } from './guest-definition.js';

export interface LibvirtRuntimeOptions {
  /** The connection to each kind's libvirt driver. */
  readonly hypervisors: Readonly<Record<GuestKind, Hypervisor>>;
  readonly guestDir: string;
  readonly bridge: string | null;
  readonly readyMarker: string;
  readonly readyTimeoutMs: number;
  readonly accel: 'auto' | 'kvm' | 'qemu';
  readonly images: ImageSource;
  readonly addresses: AddressBook;
  readonly now: () => Date;
}

export interface LibvirtRuntime extends AccountRuntime {
  /** The guest's state as libvirt holds it, or null when the sliver has no domain. */
  status(name: string): Promise<GuestStatus | null>;
  /**
   * What an ssh login into the sliver's guest runs (its serial console, a shell in its namespaces)
   * or why it is refused, and whether the guest runs; null when the sliver has no domain.
   */
  sessionFor(name: string, command: string | null, terminal: boolean): Promise<GuestSession | null>;
  /** Stops waiting for guests to report ready (the daemon is stopping); the guests go on booting. */
  interrupt(): void;
  close(): Promise<void>;
}

/** A slice names its guest's image with vref. */
const SLIVER_WORDS: GuestWords = { guest: 'sliver', imageField: 'vref' };

/** The kind of a guest runtime; a unix account is never a guest. */
function guestKind(runtime: RuntimeKind): GuestKind {
  if (runtime === 'unix') throw new PermanentError('a unix account is not a libvirt guest');
  return runtime;
}

/** What a libvirt sliver boots, from its spec. */
function definitionOf(spec: AccountSpec): GuestDefinition {
  if (spec.kind !== 'sliver' || spec.runtime === 'unix' || spec.guest === null) {
    throw new PermanentError(`${spec.name} is not a libvirt sliver`);
  }
  const { image, kernel, initrd, size } = spec.guest;
  return { kind: spec.runtime, boot: { image, kernel, initrd }, size, limits: spec.rspec, interfaces: 1 };
}

export function createLibvirtRuntime(options: LibvirtRuntimeOptions, logger: Logger): LibvirtRuntime {
  const { hypervisors, guestDir, accel } = options;
  const drivers = GUEST_KINDS.map((kind) => GUEST_DRIVERS[kind]({ hypervisor: hypervisors[kind], guestDir, accel, logger }));
  const guests = createGuestLifecycle({ ...options, drivers }, logger);
  let lastSnapshot: { key: string; snapshot: HostSnapshot } | null = null;

  return {
    async observe(observeOptions = {}) {
      const { owned: found, foreign, unreached } = await guests.list(observeOptions);
      const owned: ObservedAccount[] = found.map((g) => ({
        name: g.name, kind: 'sliver', runtime: g.kind, uid: null, loginEnabled: g.active, started: g.active,
      }));
      owned.sort((a, b) => (a.name < b.name ? -1 : 1));
      // The same object while nothing changed, so that an idle converge pass plans nothing new.
      const unseen: ReadonlySet<RuntimeKind> = unreached;
      const key = JSON.stringify([owned, [...foreign].sort(), [...unseen].sort()]);
      if (lastSnapshot?.key !== key) lastSnapshot = { key, snapshot: { owned, foreign, unseen } };
      return lastSnapshot.snapshot;
    },

    async create(spec) {
      const definition = definitionOf(spec);
      // What the slice must give, in its words, before anything is asked of libvirt or the cache.
      guests.check(definition, SLIVER_WORDS);
      await guests.create(spec.name, definition);
      return { uid: null };
    },
    configure: async (spec) => guests.configure(spec.name, definitionOf(spec)),
    start: async (spec) => guests.start(spec.name, definitionOf(spec)),
    stop: async (name, _kind: AccountKind, runtime: RuntimeKind) => guests.stop(name, guestKind(runtime)),
    destroy: async (name, _kind: AccountKind, runtime: RuntimeKind) => guests.destroy(name, guestKind(runtime)),

    status: (name) => guests.status(name),
    sessionFor: (name, command, terminal) => guests.sessionFor(name, command, terminal),
    interrupt: () => guests.interrupt(),
    close: () => guests.close(),
  };
}
