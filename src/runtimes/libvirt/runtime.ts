// The libvirt runtime: a sliver is a domain (a QEMU virtual machine or an LXC container) defined
// from its effective rspec, booted from images of the node's cache over a copy-on-write overlay of
// its own, with addresses from the node's pool. It serves both drivers, because the guests'
// directory and the address pool are shared between them.
//
// What the host holds is read back from libvirt: a domain is ours when it carries our marker, and
// recovery after a crash rebuilds everything from the markers, the guests' directory and the leases.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressBook } from '../../addresses/address-book.js';
import { describeLeases } from '../../addresses/pool.js';
import type { AccountKind, AddressLease } from '../../db/types.js';
import { ImageError } from '../../images/index.js';
import type { Logger } from '../../log.js';
import type { RuntimeKind } from '../../slices/types.js';
import { describeError, PermanentError } from '../../util/errors.js';
import type { AccountRuntime, AccountSpec, GuestSpec, GuestStatus, HostSnapshot, ObservedAccount } from '../types.js';
import { bootDigest, guestDomainXml, tapName, type GuestDriver } from './domain-plan.js';
import { readDomainDetails, type DomainDetails } from './domain-xml.js';
import {
  consoleLogSize, guestDirNames, guestFiles, makeGuestDir, makeOverlay, prepareGuestDir, removeGuestFiles, waitForReady,
  type GuestFiles,
} from './guest-files.js';
import type { Hypervisor } from './hypervisor.js';
import { applyLiveTuning } from './live-tuning.js';
import { createLxcRoots, LXC_READY_FILE, LXC_ROOTS_DIR } from './lxc-root.js';
import { guestShape, type GuestShape } from './shape.js';
import { createGuestBandwidth } from './guest-bandwidth.js';

export type { GuestDriver } from './domain-plan.js';

/** A cached image as the runtime needs it. */
export interface ResolvedImage {
  readonly name: string;
  readonly path: string;
  readonly format: string;
}

export interface ImageSource {
  /** The cache entry that a name or URI refers to, fetched first if need be. */
  resolve(ref: string, type: 'image' | 'kernel' | 'initrd' | 'data'): Promise<ResolvedImage>;
}

export interface LibvirtRuntimeOptions {
  readonly hypervisors: Readonly<Record<GuestDriver, Hypervisor>>;
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
  /** Stops waiting for guests to report ready (the daemon is stopping); the guests go on booting. */
  interrupt(): void;
  /** The driver of an owned domain of that name, or null. */
  driverOf(name: string): Promise<GuestDriver | null>;
  close(): Promise<void>;
}

const DRIVERS: readonly GuestDriver[] = ['qemu', 'lxc'];

/** The driver of a guest runtime; a unix account is never a guest's. */
function guestDriver(kind: RuntimeKind): GuestDriver {
  if (kind === 'unix') throw new PermanentError('a unix account is not a libvirt guest');
  return kind;
}
const RUNTIME_FILE = 'runtime';

const INTERRUPTED = 'the daemon is stopping: the guest was left booting, its readiness not awaited';
/** How long a virtual machine asked to shut down (Stop) has before it is powered off. */
const SHUTDOWN_GRACE_MS = 15_000;

async function shutDownGracefully(hv: Hypervisor, name: string): Promise<void> {
  await hv.shutdown(name).catch(() => undefined); // no ACPI, say: the power-off follows anyway
  const deadline = Date.now() + SHUTDOWN_GRACE_MS;
  while (Date.now() < deadline && (await hv.find(name))?.active) await new Promise((resolve) => setTimeout(resolve, 250));
}

export function createLibvirtRuntime(options: LibvirtRuntimeOptions, logger: Logger): LibvirtRuntime {
  const { hypervisors, guestDir, addresses, images } = options;
  const lxcRoots = createLxcRoots(guestDir, logger);
  /** Bases left by a crash are looked for at the first recovery, later only after a removal. */
  let collectedOnce = false;
  /** Slivers with a create or destroy running: recovery leaves their files and leases alone. */
  const inFlight = new Set<string>();
  let guestDirReady: Promise<void> | null = null;
  let interrupted = false;
  let lastSnapshot: { key: string; snapshot: HostSnapshot } | null = null;
  const unavailable = new Map<GuestDriver, string>();
  const accel: 'kvm' | 'qemu' = options.accel === 'auto' ? (existsSync('/dev/kvm') ? 'kvm' : 'qemu') : options.accel;
  const bandwidth = createGuestBandwidth({ addresses, logger });

  const ensureGuestDir = () => {
    guestDirReady ??= prepareGuestDir(guestDir).catch((error: unknown) => {
      guestDirReady = null;
      throw error;
    });
    return guestDirReady;
  };

  const hypervisorOf = (spec: AccountSpec): { driver: GuestDriver; hv: Hypervisor; guest: GuestSpec } => {
    if (spec.kind !== 'sliver' || spec.runtime === 'unix' || spec.guest === null) {
      throw new PermanentError(`${spec.name} is not a libvirt sliver`);
    }
    return { driver: spec.runtime, hv: hypervisors[spec.runtime], guest: spec.guest };
  };

  /** Every domain of every reachable driver; a driver that cannot be reached is reported once. */
  const listAll = async () => {
    const found: Array<{ driver: GuestDriver; name: string; active: boolean; details: DomainDetails }> = [];
    const reached = new Set<GuestDriver>();
    await Promise.all(DRIVERS.map(async (driver) => {
      try {
        for (const d of await hypervisors[driver].list()) found.push({ driver, name: d.name, active: d.active, details: readDomainDetails(d.xml) });
        reached.add(driver);
        if (unavailable.delete(driver)) logger.info('libvirt reachable again', { driver });
      } catch (error) {
        const reason = describeError(error);
        // Said once per reason, as information: a node without libvirt runs unix slivers only, and a
        // libvirt sliver's create fails with the reason itself.
        if (unavailable.get(driver) !== reason) logger.info('libvirt not reachable', { driver, reason });
        unavailable.set(driver, reason);
      }
    }));
    return { found, reached };
  };

  /** Our marker, for this name and driver, made by a daemon with our guest directory. */
  const isOurs = (details: DomainDetails, name: string, driver: GuestDriver) =>
    details.marker?.name === name && details.marker.runtime === driver && details.marker.guestDir === guestDir;

  const ownedDomain = async (driver: GuestDriver, name: string): Promise<{ active: boolean; details: DomainDetails } | null> => {
    const d = await hypervisors[driver].find(name);
    if (!d) return null;
    const details = readDomainDetails(d.xml);
    return isOurs(details, name, driver) ? { active: d.active, details } : null;
  };

  /** The sliver's domain on `driver`; a driver that cannot be asked fails the operation, to be retried. */
  const domainOn = async (driver: GuestDriver, name: string, what: string) => {
    try {
      return await ownedDomain(driver, name);
    } catch (error) {
      throw new Error(`libvirt unreachable: the ${what} of ${driver} guest ${name} waits for ${hypervisors[driver].uri}: ${describeError(error)}`);
    }
  };

  /** The sliver's domain on whichever driver holds it (one that cannot be asked counts as not). */
  const ownedAnywhere = async (name: string) => {
    for (const driver of DRIVERS) {
      const found = await ownedDomain(driver, name).catch(() => null);
      if (found) return { driver, ...found };
    }
    return null;
  };

  const driverOnDisk = async (files: GuestFiles): Promise<GuestDriver | null> => {
    const text = await readFile(join(files.dir, RUNTIME_FILE), 'utf8').catch(() => '');
    return (DRIVERS as readonly string[]).includes(text.trim()) ? (text.trim() as GuestDriver) : null;
  };

  /**
   * Removes what an interrupted create or destroy left: a guest directory whose domain does not
   * exist (on a driver that answered), and the leases of slivers with neither domain nor directory.
   */
  const recover = async (
    owned: ReadonlySet<string>, reached: ReadonlySet<GuestDriver>, running: ReadonlySet<string>,
    macsOf: ReadonlyMap<string, readonly string[]>,
  ) => {
    // A domain whose addresses the records lost (a database rebuilt) keeps them: they are leased
    // again before anything else could be given them.
    for (const [name, macs] of macsOf) {
      if (inFlight.has(name) || macs.length === 0) continue;
      for (const problem of await addresses.reclaim(name, macs)) logger.warn('address of a guest not leased again', { sliver: name, problem });
    }
    let removed = false;
    for (const name of await guestDirNames(guestDir)) {
      if (owned.has(name) || inFlight.has(name) || name === LXC_ROOTS_DIR) continue;
      const files = guestFiles(guestDir, name);
      const driver = await driverOnDisk(files);
      if (driver !== null && !reached.has(driver)) continue; // its driver did not answer: it may exist
      await lxcRoots.unmount(files); // a container's root stays mounted after a crash of ours
      await removeGuestFiles(files);
      removed = true;
      logger.info('guest files removed', { sliver: name, reason: 'no domain (an interrupted create or destroy)' });
    }
    if (removed || !collectedOnce) {
      await lxcRoots.collect();
      // Interface limits of guests that are not running (stopped behind the daemon's back, or
      // while it was down) are removed at start; those of guests it stops, as it stops them.
      await bandwidth.sweep(addresses.holders().filter((name) => !running.has(name) && !inFlight.has(name)));
      collectedOnce = true;
    }
    const dirs = new Set(await guestDirNames(guestDir));
    for (const name of addresses.holders()) {
      if (owned.has(name) || inFlight.has(name) || dirs.has(name)) continue;
      await bandwidth.unshape(name);
      await addresses.release(name);
      logger.info('addresses released', { sliver: name, reason: 'no domain (an interrupted create or destroy)' });
    }
  };

  /** What a guest's slice must give, checked before anything is asked of libvirt or the cache. */
  const checkGuestSpec = (driver: GuestDriver, guest: GuestSpec, spec: AccountSpec) => {
    if (driver === 'qemu' && guest.image === null && guest.kernel === null) {
      throw new PermanentError('a qemu sliver needs a disk image (vref) or a kernel to boot');
    }
    if (driver === 'lxc' && guest.image === null) throw new PermanentError('an lxc sliver needs a root file system image (vref)');
    if (guest.initrd !== null && guest.kernel === null) throw new PermanentError('an initrd is given without a kernel');
    const shape = guestShape(spec.rspec, guest.size);
    if (!shape.ok) throw new PermanentError(shape.reason);
  };

  const imagesOf = async (driver: GuestDriver, guest: GuestSpec) => {
    // An image the slice names wrongly (no such name, a bad URI, refused content) stays wrong until
    // the slice or the cache changes; a download that failed is tried again.
    const resolve = (ref: string, type: Parameters<ImageSource['resolve']>[1]) =>
      images.resolve(ref, type).catch((error: unknown) => {
        if (error instanceof ImageError && error.kind !== 'failed') throw new PermanentError(error.message);
        throw error;
      });
    const [disk, kernel, initrd] = await Promise.all([
      guest.image === null ? null : resolve(guest.image, driver === 'lxc' ? 'data' : 'image'),
      guest.kernel === null ? null : resolve(guest.kernel, 'kernel'),
      guest.initrd === null ? null : resolve(guest.initrd, 'initrd'),
    ]);
    return { disk, kernel, initrd };
  };

  const domainXml = (spec: AccountSpec, driver: GuestDriver, guest: GuestSpec, shape: GuestShape, found: {
    uuid: string; created: string; leases: readonly AddressLease[]; files: GuestFiles;
    kernel: ResolvedImage | null; initrd: ResolvedImage | null; hasDisk: boolean;
  }) => guestDomainXml({ ...found, name: spec.name, driver, guest, shape, bridge: options.bridge, guestDir, accel });

  /** The guest's shape; without interface limits where the kernel cannot keep them (see status). */
  const shapeOf = async (spec: AccountSpec, guest: GuestSpec): Promise<GuestShape> => {
    const result = guestShape(spec.rspec, guest.size);
    if (!result.ok) throw new PermanentError(result.reason);
    if (result.shape.bandwidth !== null && (await bandwidth.check()) !== null) return { ...result.shape, bandwidth: null };
    return result.shape;
  };

  /**
   * Starts a container over its mounted root and waits for its init to write the ready marker
   * into LXC_READY_FILE (see lxc-root.ts); one that does not is powered off, as a VM is.
   */
  const startContainer = async (name: string, hv: Hypervisor, files: GuestFiles, onStarted: () => Promise<void>) => {
    await lxcRoots.mount(files);
    await lxcRoots.clearReady(files);
    const started = Date.now();
    await hv.start(name);
    await onStarted();
    const ready = await lxcRoots.waitForReady(files, options.readyMarker, {
      timeoutMs: options.readyTimeoutMs, gone: async () => interrupted || !(await hv.find(name))?.active,
    });
    if (!ready && interrupted) throw new Error(INTERRUPTED);
    if (!ready) {
      const stillRunning = (await hv.find(name))?.active ?? false;
      await hv.powerOff(name);
      await lxcRoots.unmount(files);
      const seconds = Math.round(options.readyTimeoutMs / 1000);
      throw new Error(stillRunning
        ? `container did not report ready ("${options.readyMarker}" in ${LXC_READY_FILE}) within ${seconds} s; it was powered off and will be started again`
        : `container stopped before it reported ready ("${options.readyMarker}" in ${LXC_READY_FILE}); its init /sbin/init exited`);
    }
    logger.info('guest ready', { sliver: name, driver: 'lxc', boot_ms: Date.now() - started });
  };

  const runtime: LibvirtRuntime = {
    async observe(opts = {}) {
      const { found, reached } = await listAll();
      const owned: ObservedAccount[] = [];
      const foreign = new Set<string>();
      const macsOf = new Map<string, readonly string[]>();
      for (const d of found) {
        const ours = isOurs(d.details, d.name, d.driver);
        if (!ours) {
          foreign.add(d.name);
          continue;
        }
        owned.push({ name: d.name, kind: 'sliver', runtime: d.driver, uid: null, loginEnabled: d.active, started: d.active });
        macsOf.set(d.name, d.details.macs);
      }
      if (!opts.readOnly) {
        const names = new Set(owned.map((o) => o.name));
        await recover(names, reached, new Set(owned.filter((o) => o.started).map((o) => o.name)), macsOf).catch((error: unknown) =>
          logger.warn('guest recovery incomplete', { error: describeError(error) }));
      }
      owned.sort((a, b) => (a.name < b.name ? -1 : 1));
      // The same object while nothing changed, so that an idle converge pass plans nothing new.
      const key = JSON.stringify([owned, [...foreign].sort()]);
      if (lastSnapshot?.key !== key) lastSnapshot = { key, snapshot: { owned, foreign } };
      return lastSnapshot.snapshot;
    },

    async create(spec) {
      const { driver, hv, guest } = hypervisorOf(spec);
      checkGuestSpec(driver, guest, spec);
      if (await ownedDomain(driver, spec.name)) return { uid: null };
      inFlight.add(spec.name);
      try {
        await ensureGuestDir();
        const shape = await shapeOf(spec, guest);
        const resolved = await imagesOf(driver, guest);
        const files = guestFiles(guestDir, spec.name);
        // The lease first (an exhausted pool leaves nothing made), then the directory, and the
        // domain last: recovery finds a lease or a directory without a domain (and removes them)
        // or a domain with everything it needs, never a domain without its disk or address.
        const leases = await addresses.lease(spec.name, 1);
        await makeGuestDir(files);
        await writeFile(join(files.dir, RUNTIME_FILE), `${driver}\n`, { mode: 0o644 });
        if (driver === 'qemu' && resolved.disk) await makeOverlay(files, resolved.disk);
        if (driver === 'lxc') await lxcRoots.prepare(files, resolved.disk!.path);
        const xml = domainXml(spec, driver, guest, shape, {
          uuid: randomUUID(), created: options.now().toISOString(), leases, files,
          kernel: resolved.kernel, initrd: resolved.initrd, hasDisk: resolved.disk !== null,
        });
        await hv.define(xml);
        logger.info('guest defined', { sliver: spec.name, driver, vcpus: shape.vcpus, memory_kib: shape.memoryKiB, mac: leases[0]?.mac, ip: leases[0]?.ip });
        return { uid: null };
      } finally {
        inFlight.delete(spec.name);
      }
    },

    async configure(spec) {
      const { driver, hv, guest } = hypervisorOf(spec);
      const current = await ownedDomain(driver, spec.name);
      if (!current) throw new Error(`no ${driver} domain of nodemgr named ${spec.name}`);
      const shape = await shapeOf(spec, guest);
      const resolved = await imagesOf(driver, guest);
      const files = guestFiles(guestDir, spec.name);
      const leases = await addresses.lease(spec.name, 1);
      const definition = readDomainDetails((await hv.definition(spec.name)) ?? '');
      const rebooted = definition.marker?.spec !== bootDigest(guest, shape, driver);
      if (rebooted) {
        // A new image, size, kernel or initrd takes a new boot: the guest is powered off here and
        // started again by the start that follows a change.
        await hv.powerOff(spec.name);
        const oldBase = definition.disks[0]?.source ?? null;
        if (driver === 'qemu' && resolved.disk && (oldBase === null || guest.image !== null)) await makeOverlay(files, resolved.disk);
        if (driver === 'lxc') {
          // A new boot starts from a fresh root, over the new image's base when the image changed.
          await lxcRoots.prepare(files, resolved.disk!.path);
          await lxcRoots.collect();
        }
      }
      const xml = domainXml(spec, driver, guest, shape, {
        uuid: definition.uuid ?? randomUUID(), created: definition.marker?.created ?? options.now().toISOString(), leases, files,
        kernel: resolved.kernel, initrd: resolved.initrd, hasDisk: resolved.disk !== null,
      });
      await hv.define(xml);
      if (!rebooted && current.active) {
        const taps = (await bandwidth.check()) === null ? leases.map((l) => tapName(spec.name, l.iface)) : [];
        await applyLiveTuning(hv.uri, spec.name, driver, shape, taps);
        await bandwidth.shape(spec, guest);
      }
      logger.info('guest configured', { sliver: spec.name, driver, restart: rebooted, cpu_shares: shape.cpuShares, vcpus: shape.vcpus });
    },

    async start(spec) {
      const { driver, hv } = hypervisorOf(spec);
      const current = await ownedDomain(driver, spec.name);
      if (!current) throw new Error(`no ${driver} domain of nodemgr named ${spec.name}`);
      if (current.active) return;
      const files = guestFiles(guestDir, spec.name);
      if (driver === 'lxc') return startContainer(spec.name, hv, files, () => bandwidth.shape(spec, spec.guest!));
      const from = await consoleLogSize(files);
      const started = Date.now();
      await hv.start(spec.name);
      await bandwidth.shape(spec, spec.guest!);
      const ready = await waitForReady(files, options.readyMarker, {
        from, timeoutMs: options.readyTimeoutMs, gone: async () => interrupted || !(await hv.find(spec.name))?.active,
      });
      if (!ready && interrupted) throw new Error(INTERRUPTED);
      if (!ready) {
        const stillRunning = (await hv.find(spec.name))?.active ?? false;
        await hv.powerOff(spec.name);
        const seconds = Math.round(options.readyTimeoutMs / 1000);
        throw new Error(stillRunning
          ? `guest did not report ready ("${options.readyMarker}" on its serial console) within ${seconds} s; it was powered off and will be started again`
          : `guest stopped before it reported ready ("${options.readyMarker}" on its serial console); see ${files.consoleLog}`);
      }
      logger.info('guest ready', { sliver: spec.name, driver, boot_ms: Date.now() - started });
    },

    async stop(name, _kind: AccountKind, kind: RuntimeKind) {
      const driver = (await domainOn(guestDriver(kind), name, 'stop')) ? guestDriver(kind) : null;
      // A virtual machine is asked to shut down first; a container's init may ignore the request.
      if (driver === 'qemu') await shutDownGracefully(hypervisors.qemu, name);
      if (driver) await hypervisors[driver].powerOff(name);
      if (driver) await bandwidth.unshape(name);
      if (driver === 'lxc') await lxcRoots.unmount(guestFiles(guestDir, name));
    },

    async destroy(name, _kind: AccountKind, kind: RuntimeKind) {
      inFlight.add(name);
      try {
        // Its own driver must answer before anything of the guest is removed: files and leases of a
        // domain that libvirt still holds would be lost. Another driver may hold one of ours of that
        // name only after a change of runtime; one that cannot be asked is passed over.
        const own = guestDriver(kind);
        for (const driver of DRIVERS) {
          const found = driver === own ? await domainOn(driver, name, 'destroy') : await ownedDomain(driver, name).catch(() => null);
          if (!found) continue;
          await hypervisors[driver].powerOff(name);
          await hypervisors[driver].undefine(name);
        }
        await lxcRoots.unmount(guestFiles(guestDir, name));
        await removeGuestFiles(guestFiles(guestDir, name));
        await lxcRoots.collect();
        await bandwidth.unshape(name);
        await addresses.release(name);
      } finally {
        inFlight.delete(name);
      }
    },

    interrupt() {
      interrupted = true;
    },

    async driverOf(name) {
      return (await ownedAnywhere(name))?.driver ?? null;
    },

    async status(name) {
      const found = await ownedAnywhere(name);
      if (!found) return null;
      const { driver, details: d } = found;
      const leases = addresses.leasesOf(name);
      return {
        runtime: driver,
        state: found.active ? 'running' : 'stopped',
        vcpus: d.vcpus,
        memory_kib: d.memoryKiB,
        cpu_shares: d.cpuShares,
        vnc_port: d.vncPort,
        console: d.consolePty,
        addresses: describeLeases(leases),
        // A container's copy-on-write root is its overlay mount; a virtual machine's, its first disk.
        overlay: driver === 'lxc' ? join(guestFiles(guestDir, name).dir, 'rootfs') : d.disks[0]?.source ?? null,
        bandwidth: await bandwidth.status(name, d, found.active),
      };
    },

    async close() {
      await Promise.all(DRIVERS.map((d) => hypervisors[d].close()));
    },
  };
  return runtime;
}
