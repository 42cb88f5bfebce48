// The host's runtimes made from the configuration: the daemon's, and the read-only ones that
// `nodemgr status` and `nodemgr plan` look at the host with.
import { readOnlyAddressBook, scopedAddressBook, type AddressBook } from '../addresses/address-book.js';
import type { Config } from '../config/config.js';
import { emptyDatabase } from '../db/types.js';
import type { Logger } from '../log.js';
import { dispatchRuntime } from '../runtimes/dispatch.js';
import { GUEST_DRIVERS, GUEST_KINDS } from '../runtimes/libvirt/drivers/index.js';
import { createGuestLifecycle, type GuestLifecycle } from '../runtimes/libvirt/guests.js';
import { libvirtHypervisor } from '../runtimes/libvirt/hypervisor.js';
import { createLibvirtRuntime, type ImageSource, type LibvirtRuntime } from '../runtimes/libvirt/runtime.js';
import type { AccountRuntime } from '../runtimes/types.js';
import { createUnixRuntime, type UnixRuntime } from '../runtimes/unix/runtime.js';

/** What the libvirt runtime takes from the rest of the daemon. */
export interface GuestParts {
  readonly images: ImageSource;
  readonly addresses: AddressBook;
  readonly now: () => Date;
}

// For the commands that only look at the host (plan, status): they never create a guest.
export const NO_GUEST_PARTS: GuestParts = {
  images: { resolve: () => Promise.reject(new Error('no image cache here')) },
  addresses: readOnlyAddressBook(emptyDatabase()),
  now: () => new Date(),
};

export function createGuestRuntime(config: Config, logger: Logger, parts: GuestParts = NO_GUEST_PARTS): LibvirtRuntime {
  return createLibvirtRuntime({
    hypervisors: { qemu: libvirtHypervisor(config.libvirtQemuUri, logger), lxc: libvirtHypervisor(config.libvirtLxcUri, logger) },
    guestDir: config.guestDir,
    bridge: config.guestBridge,
    readyMarker: config.guestReadyMarker,
    readyTimeoutMs: config.guestReadyTimeoutMs,
    accel: config.guestAccel,
    ...parts,
  }, logger);
}

export function createUnixRuntimeOf(config: Config, logger: Logger): UnixRuntime {
  return createUnixRuntime({
    uidMin: config.sliverUidMin,
    uidMax: config.sliverUidMax,
    homeBase: config.homeBase,
    sliverShell: config.sliverShell,
    delegateShell: config.delegateShell,
    disabledShell: config.disabledShell,
    runDir: config.runDir,
  }, logger);
}

/** The host's runtimes behind one: unix accounts, and libvirt guests. */
export function createRuntime(config: Config, logger: Logger, parts: { unix?: UnixRuntime; guests?: LibvirtRuntime } = {}): AccountRuntime {
  return dispatchRuntime(parts.unix ?? createUnixRuntimeOf(config, logger), parts.guests ?? createGuestRuntime(config, logger));
}

/**
 * A guest lifecycle beside the slivers' (tasks and instances, virtual clusters): its own guest
 * directory, libvirt connections and leases (the holders `owns` names), the node's drivers.
 */
export function createOnDemandGuests(config: Config, logger: Logger, options: {
  readonly guestDir: string;
  readonly readyTimeoutMs: number;
  readonly images: ImageSource;
  readonly addresses: AddressBook;
  readonly owns: (holder: string) => boolean;
  readonly now: () => Date;
}): GuestLifecycle {
  const { guestDir } = options;
  const drivers = GUEST_KINDS.map((kind) => GUEST_DRIVERS[kind]({
    hypervisor: libvirtHypervisor(kind === 'qemu' ? config.libvirtQemuUri : config.libvirtLxcUri, logger), guestDir, accel: config.guestAccel, logger,
  }));
  return createGuestLifecycle({
    drivers, guestDir, bridge: config.guestBridge, readyMarker: config.guestReadyMarker, readyTimeoutMs: options.readyTimeoutMs,
    images: options.images, addresses: scopedAddressBook(options.addresses, options.owns), now: options.now,
  }, logger);
}
