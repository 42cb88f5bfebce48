// The guest lifecycle: one way to make, boot, stop, remove, recover and report a guest of any kind,
// keyed by the guest's name and its definition (guest-definition.ts), never by what asked for it.
// It holds the address leases, the guest's directory, the domain's definition, the boot and the
// wait for the guest's word that it is ready, shutdown and removal. What differs between kinds (the
// root over the image, the domain's devices, how readiness is heard, sessions) it asks of their
// drivers, and what a kind can do, of the driver's capabilities (guest-driver.ts).
import { randomUUID } from 'node:crypto';
import type { AddressBook } from '../../addresses/address-book.js';
import { describeLeases } from '../../addresses/pool.js';
import type { AddressLease } from '../../db/types.js';
import { ImageError } from '../../images/index.js';
import type { Logger } from '../../log.js';
import type { SessionLaunch } from '../../host/launch.js';
import { describeError, PermanentError } from '../../util/errors.js';
import type { GuestStatus } from '../types.js';
import { bootDigest, kernelArgsProblem, tapName, type BootExtras } from './domain-plan.js';
import { buildDomainXml, readDomainDetails } from './domain-xml.js';
import type { GuestAgent } from './guest-agent.js';
import { createGuestBandwidth, type GuestBandwidth } from './guest-bandwidth.js';
import { bootAndAwaitReady } from './guest-boot.js';
import type { GuestBoot, GuestDefinition, GuestKind, ImageSource, ResolvedBoot } from './guest-definition.js';
import { bootProblem, imageType, type GuestDriver, type GuestWords } from './guest-driver.js';
import { createGuestDomains, type GuestDomains } from './guest-domains.js';
import { guestFiles, makeGuestDir, prepareGuestDir, removeGuestFiles, writeGuestKind, type GuestFiles } from './guest-files.js';
import type { Hypervisor } from './hypervisor.js';
import { createGuestRecovery } from './guest-recovery.js';
import { setLiveBandwidth, setLiveCpu } from './live-tuning.js';
import { guestShape, type GuestShape } from './shape.js';

export interface GuestLifecycleOptions {
  /** One per kind, in the order a guest of unknown kind is looked for. */
  readonly drivers: readonly GuestDriver[];
  readonly guestDir: string;
  readonly bridge: string | null;
  readonly readyMarker: string;
  readonly readyTimeoutMs: number;
  readonly images: ImageSource;
  readonly addresses: AddressBook;
  readonly now: () => Date;
  /** Who limits the guests' interfaces; by default libvirt where the kernel lets it, else nodemgr (guest-bandwidth.ts). */
  readonly bandwidth?: GuestBandwidth;
}

/** A guest of ours as libvirt holds it. */
export interface OwnedGuest {
  readonly name: string;
  readonly kind: GuestKind;
  readonly active: boolean;
}

export type GuestSession = { readonly launch: SessionLaunch | { refused: string }; readonly started: boolean };

/** One look at libvirt: our guests, every other domain's name, and the kinds whose libvirt did not answer. */
export interface GuestListing {
  readonly owned: OwnedGuest[];
  readonly foreign: ReadonlySet<string>;
  /** Kinds whose guests could not be listed: their absence from `owned` says nothing. */
  readonly unreached: ReadonlySet<GuestKind>;
}

export interface GuestLifecycle {
  /** Throws a PermanentError, worded for `words`, when no guest of its kind can boot what the definition gives. Pure. */
  check(definition: GuestDefinition, words?: GuestWords): void;
  /** Our guests, and every other domain's name; unless `readOnly`, it also removes what a crash left (guest-recovery.ts). */
  list(options?: { readOnly?: boolean }): Promise<GuestListing>;
  /** Leases its addresses, makes its directory and root, defines its domain; succeeds if our guest exists already. */
  create(name: string, definition: GuestDefinition): Promise<void>;
  /** Defines it again from the definition: live where the kind can, with a new boot (powered off here) where it must. */
  configure(name: string, definition: GuestDefinition): Promise<void>;
  /** Boots it and waits for its word that it is ready; one that does not say it is powered off again. */
  start(name: string, definition: GuestDefinition): Promise<void>;
  /** Shuts it down; fails with "libvirt unreachable: …" while its kind's libvirt cannot be asked. */
  stop(name: string, kind: GuestKind): Promise<void>;
  /** Removes its domain, files and leases; fails, removing nothing, while its kind's libvirt cannot be asked. */
  destroy(name: string, kind: GuestKind): Promise<void>;
  /** Its state as libvirt holds it, or null when there is no guest of ours of that name. */
  status(name: string): Promise<GuestStatus | null>;
  /** What an ssh login into it runs, or null when there is no guest of ours of that name. */
  sessionFor(name: string, command: string | null, terminal: boolean): Promise<GuestSession | null>;
  /** Its in-guest agent (guest-agent.ts), or null when there is no guest of ours of that name. */
  agentFor(name: string): Promise<GuestAgent | null>;
  /** Stops waiting for guests to report ready (the daemon is stopping); the guests go on booting. */
  interrupt(): void;
  close(): Promise<void>;
}

const GUEST_WORDS: GuestWords = { guest: 'guest', imageField: null };
/** How long a guest asked to shut down (Stop) has before it is powered off. */
const SHUTDOWN_GRACE_MS = 15_000;

/** What the lifecycle's operations share. */
interface Lifecycle {
  readonly options: GuestLifecycleOptions;
  readonly logger: Logger;
  readonly domains: GuestDomains;
  readonly bandwidth: GuestBandwidth;
  /** Guests with a create or destroy running: recovery leaves their files and leases alone. */
  readonly inFlight: Set<string>;
  driverOf(kind: GuestKind): GuestDriver;
  ensureGuestDir(): Promise<void>;
  interrupted(): boolean;
}

export function createGuestLifecycle(options: GuestLifecycleOptions, logger: Logger): GuestLifecycle {
  const { drivers, guestDir, addresses } = options;
  const inFlight = new Set<string>();
  const bandwidth = options.bandwidth ?? createGuestBandwidth({ addresses, logger });
  const recovery = createGuestRecovery({ guestDir, drivers, addresses, bandwidth, inFlight, logger });
  let guestDirReady: Promise<void> | null = null;
  let interrupted = false;
  const lc: Lifecycle = {
    options, logger, bandwidth, inFlight,
    domains: createGuestDomains(drivers, guestDir, logger),
    driverOf(kind) {
      const driver = drivers.find((d) => d.kind === kind);
      if (!driver) throw new PermanentError(`no driver runs ${kind} guests on this node`);
      return driver;
    },
    ensureGuestDir() {
      guestDirReady ??= prepareGuestDir(guestDir).catch((error: unknown) => {
        guestDirReady = null;
        throw error;
      });
      return guestDirReady;
    },
    interrupted: () => interrupted,
  };

  return {
    check: (definition, words = GUEST_WORDS) => checkDefinition(lc.driverOf(definition.kind), definition, words),
    async list(listOptions = {}) {
      const found = await listGuests(lc);
      if (!listOptions.readOnly) {
        await recovery.recover(found.seen).catch((error: unknown) => logger.warn('guest recovery incomplete', { error: describeError(error) }));
      }
      const unreached = new Set(drivers.map((d) => d.kind).filter((kind) => !found.seen.reached.has(kind)));
      return { owned: found.owned, foreign: found.foreign, unreached };
    },
    create: (name, definition) => createGuest(lc, name, definition),
    configure: (name, definition) => configureGuest(lc, name, definition),
    start: (name, definition) => startGuest(lc, name, definition),
    stop: (name, kind) => stopGuest(lc, name, kind),
    destroy: (name, kind) => destroyGuest(lc, name, kind),
    status: (name) => guestStatus(lc, name),
    async sessionFor(name, command, terminal) {
      const found = await lc.domains.ownedAnywhere(name);
      return found && { launch: found.driver.session(name, command, terminal), started: found.active };
    },
    async agentFor(name) {
      const found = await lc.domains.ownedAnywhere(name);
      return found && found.driver.agent(name, guestFiles(guestDir, name));
    },
    interrupt() {
      interrupted = true;
    },
    async close() {
      await Promise.all(drivers.map((d) => d.hypervisor.close()));
    },
  };
}

function checkDefinition(driver: GuestDriver, definition: GuestDefinition, words: GuestWords): void {
  const problem = bootProblem(definition.boot, driver, words) ?? kernelArgsProblem(definition.kernelArgs ?? []);
  if (problem !== null) throw new PermanentError(problem);
  const { readiness } = definition;
  if (readiness?.by === 'agent' && !(Number.isFinite(readiness.timeoutMs) && readiness.timeoutMs > 0)) {
    throw new PermanentError(`the agent's readiness timeout ${readiness.timeoutMs} ms is not a positive time`);
  }
  const shape = guestShape(definition.limits, definition.size);
  if (!shape.ok) throw new PermanentError(shape.reason);
}

async function listGuests(lc: Lifecycle) {
  const { found, reached } = await lc.domains.listAll();
  const owned: OwnedGuest[] = [];
  const foreign = new Set<string>();
  const macsOf = new Map<string, readonly string[]>();
  for (const d of found) {
    if (!lc.domains.isOurs(d.details, d.name, d.driver.kind)) {
      foreign.add(d.name);
      continue;
    }
    owned.push({ name: d.name, kind: d.driver.kind, active: d.active });
    macsOf.set(d.name, d.details.macs);
  }
  const names = (guests: readonly OwnedGuest[]) => new Set(guests.map((g) => g.name));
  return { owned, foreign, seen: { owned: names(owned), reached, running: names(owned.filter((g) => g.active)), macsOf } };
}

/** The cache entries of what the guest boots. */
async function resolveBoot(images: ImageSource, driver: GuestDriver, boot: GuestBoot): Promise<ResolvedBoot> {
  // An image named wrongly (no such name, a bad URI, refused content) stays wrong until the
  // definition or the cache changes; a download that failed is tried again.
  const resolve = (ref: string, type: Parameters<ImageSource['resolve']>[1]) =>
    images.resolve(ref, type).catch((error: unknown) => {
      if (error instanceof ImageError && error.kind !== 'failed') throw new PermanentError(error.message);
      throw error;
    });
  const [disk, kernel, initrd] = await Promise.all([
    boot.image === null ? null : resolve(boot.image, imageType(driver.capabilities)),
    boot.kernel === null ? null : resolve(boot.kernel, 'kernel'),
    boot.initrd === null ? null : resolve(boot.initrd, 'initrd'),
  ]);
  return { disk, kernel, initrd };
}

/** The guest's shape; without interface limits where the kernel cannot keep them (see status). */
async function shapeOf(bandwidth: GuestBandwidth, definition: GuestDefinition): Promise<GuestShape> {
  const result = guestShape(definition.limits, definition.size);
  if (!result.ok) throw new PermanentError(result.reason);
  if (result.shape.bandwidth !== null && (await bandwidth.check()) !== null) return { ...result.shape, bandwidth: null };
  return result.shape;
}

interface DomainParts {
  readonly shape: GuestShape;
  readonly leases: readonly AddressLease[];
  readonly files: GuestFiles;
  readonly resolved: ResolvedBoot;
  readonly uuid: string;
  readonly created: string;
}

/** What of a definition besides its boot and shape only a new boot changes. */
function bootExtras(definition: GuestDefinition): BootExtras {
  return {
    ...(definition.agent === undefined ? {} : { agent: definition.agent }),
    ...(definition.kernelArgs === undefined ? {} : { kernelArgs: definition.kernelArgs }),
    ...(definition.extraDisks === undefined ? {} : { disks: definition.extraDisks }),
    ...(definition.networkInterfaces === undefined ? {} : { networks: definition.networkInterfaces }),
  };
}

async function defineDomain(lc: Lifecycle, driver: GuestDriver, name: string, definition: GuestDefinition, parts: DomainParts): Promise<void> {
  const { bridge, guestDir } = lc.options;
  const plan = driver.domainPlan({ ...parts, name, kind: definition.kind, boot: definition.boot, bridge, guestDir, extras: bootExtras(definition) });
  await driver.hypervisor.define(buildDomainXml(plan));
}

async function createGuest(lc: Lifecycle, name: string, definition: GuestDefinition): Promise<void> {
  const { options, logger } = lc;
  const driver = lc.driverOf(definition.kind);
  checkDefinition(driver, definition, GUEST_WORDS);
  if (await lc.domains.owned(driver, name)) return;
  lc.inFlight.add(name);
  try {
    await lc.ensureGuestDir();
    const shape = await shapeOf(lc.bandwidth, definition);
    const resolved = await resolveBoot(options.images, driver, definition.boot);
    const files = guestFiles(options.guestDir, name);
    // The lease first (an exhausted pool leaves nothing made), then the directory, and the
    // domain last: recovery finds a lease or a directory without a domain (and removes them)
    // or a domain with everything it needs, never a domain without its disk or address.
    const leases = await options.addresses.lease(name, definition.interfaces);
    await makeGuestDir(files);
    await writeGuestKind(files, definition.kind);
    await driver.prepareRoot(files, resolved.disk);
    await defineDomain(lc, driver, name, definition, { shape, leases, files, resolved, uuid: randomUUID(), created: options.now().toISOString() });
    logger.info('guest defined', {
      sliver: name, driver: definition.kind, vcpus: shape.vcpus, memory_kib: shape.memoryKiB, mac: leases[0]?.mac, ip: leases[0]?.ip,
    });
  } finally {
    lc.inFlight.delete(name);
  }
}

async function configureGuest(lc: Lifecycle, name: string, definition: GuestDefinition): Promise<void> {
  const { options } = lc;
  const driver = lc.driverOf(definition.kind);
  const hv = driver.hypervisor;
  const current = await lc.domains.owned(driver, name);
  if (!current) throw new Error(`no ${definition.kind} domain of nodemgr named ${name}`);
  const shape = await shapeOf(lc.bandwidth, definition);
  const resolved = await resolveBoot(options.images, driver, definition.boot);
  const files = guestFiles(options.guestDir, name);
  const leases = await options.addresses.lease(name, definition.interfaces);
  const defined = readDomainDetails((await hv.definition(name)) ?? '');
  const rebooted = defined.marker?.spec !== bootDigest(definition.boot, shape, definition.kind, bootExtras(definition));
  if (rebooted) {
    // A new image, size, kernel or initrd takes a new boot, from a fresh root: the guest is
    // powered off here and started again by the start that follows a change. The root it leaves
    // may have been the last over what its kind shares.
    await hv.powerOff(name);
    await driver.prepareRoot(files, resolved.disk);
    await driver.collectShared();
  }
  await defineDomain(lc, driver, name, definition, {
    shape, leases, files, resolved,
    uuid: defined.uuid ?? randomUUID(), created: defined.marker?.created ?? options.now().toISOString(),
  });
  if (!rebooted && current.active) await tuneLive(lc, driver, name, definition, shape, leases);
  lc.logger.info('guest configured', { sliver: name, driver: definition.kind, restart: rebooted, cpu_shares: shape.cpuShares, vcpus: shape.vcpus });
}

/** What a running guest takes without a new boot: its CPU weight and cap, its interfaces' rate. */
async function tuneLive(
  lc: Lifecycle, driver: GuestDriver, name: string, definition: GuestDefinition, shape: GuestShape, leases: readonly AddressLease[],
): Promise<void> {
  const { hypervisor: hv, capabilities } = driver;
  // Where libvirt cannot limit interfaces, nodemgr does (bandwidth.shape), on the host's side.
  const libvirtShapes = capabilities.liveBandwidth && (await lc.bandwidth.check()) === null;
  if (capabilities.liveCpu) await setLiveCpu(hv.uri, name, driver.schedulerArgs(shape));
  await setLiveBandwidth(hv.uri, name, shape, libvirtShapes ? leases.map((l) => tapName(name, l.iface)) : []);
  await lc.bandwidth.shape(name, definition);
}

async function startGuest(lc: Lifecycle, name: string, definition: GuestDefinition): Promise<void> {
  const driver = lc.driverOf(definition.kind);
  const current = await lc.domains.owned(driver, name);
  if (!current) throw new Error(`no ${definition.kind} domain of nodemgr named ${name}`);
  if (current.active) return;
  await bootAndAwaitReady({ ...lc.options, bandwidth: lc.bandwidth, logger: lc.logger, interrupted: lc.interrupted }, driver, name, definition);
}

async function shutDownGracefully(hv: Hypervisor, name: string): Promise<void> {
  await hv.shutdown(name).catch(() => undefined); // no ACPI, say: the power-off follows anyway
  const deadline = Date.now() + SHUTDOWN_GRACE_MS;
  while (Date.now() < deadline && (await hv.find(name))?.active) await new Promise((resolve) => setTimeout(resolve, 250));
}

async function stopGuest(lc: Lifecycle, name: string, kind: GuestKind): Promise<void> {
  const driver = lc.driverOf(kind);
  if (!(await lc.domains.ownedOrUnreachable(driver, name, 'stop'))) return;
  // A guest that honours a request to shut down is asked first; a container's init may ignore one.
  if (driver.capabilities.gracefulShutdown) await shutDownGracefully(driver.hypervisor, name);
  await driver.hypervisor.powerOff(name);
  await lc.bandwidth.unshape(name);
  await driver.releaseRoot(guestFiles(lc.options.guestDir, name));
}

async function destroyGuest(lc: Lifecycle, name: string, kind: GuestKind): Promise<void> {
  const { guestDir, addresses, drivers } = lc.options;
  lc.inFlight.add(name);
  try {
    // Its own kind's libvirt must answer before anything of the guest is removed: files and
    // leases of a domain that libvirt still holds would be lost. Another kind may hold one of ours
    // of that name only after a change of kind; one that cannot be asked is passed over.
    const own = lc.driverOf(kind);
    for (const driver of drivers) {
      const found = driver === own
        ? await lc.domains.ownedOrUnreachable(driver, name, 'destroy')
        : await lc.domains.owned(driver, name).catch(() => null);
      if (!found) continue;
      await driver.hypervisor.powerOff(name);
      await driver.hypervisor.undefine(name);
    }
    const files = guestFiles(guestDir, name);
    for (const driver of drivers) await driver.releaseRoot(files);
    await removeGuestFiles(files);
    for (const driver of drivers) await driver.collectShared();
    await lc.bandwidth.unshape(name);
    await addresses.release(name);
  } finally {
    lc.inFlight.delete(name);
  }
}

async function guestStatus(lc: Lifecycle, name: string): Promise<GuestStatus | null> {
  const found = await lc.domains.ownedAnywhere(name);
  if (!found) return null;
  const { driver, details: d } = found;
  return {
    runtime: driver.kind,
    state: found.active ? 'running' : 'stopped',
    vcpus: d.vcpus,
    memory_kib: d.memoryKiB,
    cpu_shares: d.cpuShares,
    vnc_port: d.vncPort,
    console: d.consolePty,
    addresses: describeLeases(lc.options.addresses.leasesOf(name)),
    overlay: driver.overlayPath(guestFiles(lc.options.guestDir, name), d),
    bandwidth: await lc.bandwidth.status(name, d, found.active),
  };
}
