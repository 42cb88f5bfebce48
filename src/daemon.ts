// Wiring only: builds the parts from the configuration, connects them, and runs until stopped.
import { chmod, mkdir, readFile, stat } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join, relative } from 'node:path';
import { createLimiter } from './accounts/limiter.js';
import { callerOf, tcpClientUid, type Caller } from './api/identity.js';
import { createApiMethods } from './api/methods.js';
import { answerCall, startApiServer, type ApiServer, type ApiServerOptions } from './api/server.js';
import { loadCertificate, verifyDetachedSignature, verifyTicket } from './api/signatures.js';
import { forwardApiCallsPath, peerCredentials } from './native/peercred.js';
import { createSupervisors } from './accounts/supervisor.js';
import { startPoller } from './authority/poller.js';
import type { Config } from './config/config.js';
import { recordAccountReport } from './db/accounts.js';
import { openDatabase, type DatabaseStore } from './db/store.js';
import type { Logger } from './log.js';
import { createEnforcer, limitInputOf, type Enforcer } from './limits/enforcer.js';
import { hostLimits } from './limits/host-limits.js';
import { readLimitsInForce } from './limits/in-force.js';
import { parsePasswd } from './host/passwd.js';
import { startSshGateway, type Gateway } from './ssh/gateway.js';
import { loadOrCreateHostKey } from './ssh/host-key.js';
import type { AccountRuntime } from './runtimes/types.js';
import { installDelegateShell } from './runtimes/unix/delegate-shell.js';
import { createUnixRuntime, type SliverLimitHooks, type UnixRuntime } from './runtimes/unix/runtime.js';
import { databaseAddressBook, readOnlyAddressBook, type AddressBook } from './addresses/address-book.js';
import { createAddressPoolFile } from './addresses/pool-file.js';
import { openImageCache, type ImageCache } from './images/cache.js';
import { dispatchRuntime } from './runtimes/dispatch.js';
import { libvirtHypervisor } from './runtimes/libvirt/hypervisor.js';
import { createLibvirtRuntime, type ImageSource, type LibvirtRuntime } from './runtimes/libvirt/runtime.js';
import { guestSessionLaunch } from './runtimes/libvirt/sessions.js';
import { sliverRecords } from './db/records.js';
import { emptyDatabase, type NodeDatabase } from './db/types.js';
import { createConverger } from './sync/converge.js';
import { createDocumentSync } from './sync/document.js';
import { createSyncStatusFile, readSyncStatus, syncStatusPath } from './sync/sync-status.js';
import { healthPath, writeHealth, type DaemonHealth } from './status/health.js';
import { describeError } from './util/errors.js';

/** An operation taking longer than this is reported as failed (commands have their own timeouts). */
const OP_TIMEOUT_MS = 10 * 60 * 1000;
/** How often the daemon's health (see status/health.ts) is brought up to date. */
const HEALTH_INTERVAL_MS = 1_000;

export function databasePath(config: Config): string {
  return join(config.stateDir, 'nodemgr.json');
}

export function lockPath(config: Config): string {
  return join(config.stateDir, 'nodemgr.lock');
}

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

/** The host's runtimes behind one: unix accounts, and libvirt guests. */
export function createRuntime(config: Config, logger: Logger, limits?: SliverLimitHooks, guests?: LibvirtRuntime): AccountRuntime {
  return dispatchRuntime(createUnixRuntimeOf(config, logger, limits), guests ?? createGuestRuntime(config, logger));
}

function createUnixRuntimeOf(config: Config, logger: Logger, limits?: SliverLimitHooks): UnixRuntime {
  return createUnixRuntime(
    {
      uidMin: config.sliverUidMin,
      uidMax: config.sliverUidMax,
      homeBase: config.homeBase,
      sliverShell: config.sliverShell,
      delegateShell: config.delegateShell,
      disabledShell: config.disabledShell,
      runDir: config.runDir,
      limits,
    },
    logger,
  );
}

export function byteCapPath(config: Config): string {
  return join(config.stateDir, 'byte-caps.json');
}

export interface RunningDaemon {
  readonly store: DatabaseStore;
  /** Fetches and converges now (coalesced with a running attempt). */
  syncNow(): void;
  /** Resolves when the first sync and the work it planned are done (for --once and tests). */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

export async function startDaemon(config: Config, logger: Logger): Promise<RunningDaemon> {
  await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  // The guests' files are under the state directory by default, and the hypervisor's user must
  // reach them: the directory may be searched by others (its files are the owner's alone).
  if (isInside(config.guestDir, config.stateDir)) await chmod(config.stateDir, (await stat(config.stateDir)).mode & 0o777 | 0o001);
  await mkdir(config.runDir, { recursive: true, mode: 0o755 });

  const { store, recovered } = await openDatabase({
    path: databasePath(config),
    lockPath: lockPath(config),
    coalesceMs: config.dbCoalesceMs,
    logger,
  });
  const now = () => new Date();
  const limits = await hostLimits(config, logger);
  // The runtime and the enforcer need each other (limits are applied when an account is
  // configured; the enforcer reads the accounts from the runtime): the hooks reach it late.
  let enforcer: Enforcer | null = null;
  const images = await openImageCache({
    dir: config.imageCacheDir,
    maxBytes: config.imageCacheMaxBytes,
    inUse: () => imagesInUse(store.data),
    logger,
  });
  const addresses = databaseAddressBook(store, createAddressPoolFile(config.addressPool, logger), now);
  const guests = createGuestRuntime(config, logger, { images: images, addresses, now });
  const runtime = createRuntime(config, logger, {
    refresh: () => enforcer!.refresh(),
    problem: (name) => enforcer!.problems().get(name)?.get('cgroup') ?? null,
    launchFiles: (name) => enforcer!.launchFiles(name),
    killAll: (name) => enforcer!.killAll(name),
    remove: (name) => enforcer!.remove(name),
  }, guests);
  const supervisors = createSupervisors({
    runtime,
    limiter: createLimiter(config.maxParallelAccountOps),
    logger,
    retryInitialMs: config.opRetryInitialMs,
    retryMaxMs: config.opRetryMaxMs,
    opTimeoutMs: OP_TIMEOUT_MS,
    report: (report) => store.update((db) => recordAccountReport(db, report, now().toISOString())),
  });
  const statusFile = syncStatusPath(config.stateDir);
  const syncStatus = createSyncStatusFile(
    statusFile,
    await readSyncStatus(statusFile, (reason) => logger.warn('sync status ignored', { reason })),
    logger,
  );
  const documents = createDocumentSync({ config, store, syncStatus, logger, now });
  const converger = createConverger({
    store, runtime, supervisors, logger, now, defaultRuntime: config.defaultRuntime, afterPass: () => enforcer!.refresh(),
  });
  enforcer = await createEnforcer({
    ...limits,
    byteCapFile: byteCapPath(config),
    byteCapPeriodSeconds: config.byteCapPeriodMs / 1000,
    logger,
    now,
    input: async () => {
      const host = await runtime.observe({ readOnly: true });
      const bwcap = store.data.records['bwcap'];
      return limitInputOf(converger.desired().specs, host, bwcap?.type === 'bwcap' ? bwcap.cap_kbit : null);
    },
  });
  // What files in the state directory cannot tell (they may be what cannot be written).
  let lastHealth = '';
  const reportHealth = async () => {
    const health = JSON.stringify({ pid: process.pid, database: store.problem(), lastSync: syncStatus.current });
    if (health === lastHealth) return;
    await writeHealth(healthPath(config.runDir), JSON.parse(health) as DaemonHealth);
    lastHealth = health;
  };
  await reportHealth();
  const timers = [
    every(config.byteCapSampleMs, () => enforcer!.sampleBytes(), 'byte counters not sampled', logger),
    every(config.straySweepMs, () => enforcer!.sweep(), 'stray processes not swept', logger),
    every(HEALTH_INTERVAL_MS, reportHealth, 'health not reported', logger),
  ];

  await prepareDelegateShell(config, logger);
  const limitsInForce = async (name: string, uid: number) => {
    const found = await readLimitsInForce({
      ...limits, byteCaps: enforcer!.byteCaps(), byteCapPeriodSeconds: config.byteCapPeriodMs / 1000,
      homeBase: config.homeBase, problems: enforcer!.problems(),
    }, [{ name, uid }]);
    return found.get(name) ?? {};
  };
  const { server: api, call } = await startApi(config, {
    store, runtime, supervisors, converger, documents, logger, now, limitsInForce, guests, images,
  });
  // Without the gateway slivers are still managed and the API still answers locally: logged, not fatal.
  const gateway = await startGateway(config, { store, runtime, guests, enforcer, call, logger }).catch((error: unknown) => {
    logger.error('ssh gateway not started', { address: `${config.sshAddress}:${config.sshPort}`, error: describeError(error) });
    return null;
  });

  // Recovery: the host's own markers say which accounts exist; the database says what they should be.
  const host = await runtime.observe();
  supervisors.seed(host.owned);
  logger.info('daemon starting', {
    node_id: config.nodeId, authority: new URL(config.authorityUrl).protocol, owned_accounts: host.owned.length,
    records: Object.keys(store.data.records).length,
  });
  if (recovered || store.data.records['timestamp'] === undefined) {
    const restored = await documents.restoreLastGood();
    if (recovered) {
      logger.warn('database rebuilt', {
        moved_to: recovered.movedTo, reason: recovered.reason, from_last_good: restored?.outcome ?? 'none',
      });
    }
  }

  let firstSync: (() => void) | null = null;
  const firstSynced = new Promise<void>((resolve) => (firstSync = resolve));
  const poller = startPoller({
    periodMs: config.pollPeriodMs,
    jitterMs: config.pollJitterMs,
    backoffInitialMs: config.backoffInitialMs,
    backoffMaxMs: config.backoffMaxMs,
    logger,
    attempt: async () => {
      let fetched = false;
      try {
        fetched = await documents.fetchAndApply();
      } finally {
        // Converge whatever happened to the fetch: the records in force still hold, and drift
        // on the host (a deleted account, a killed sliver) is repaired on every pass.
        await converger.converge('poll');
        firstSync?.();
        firstSync = null;
      }
      return fetched;
    },
  });

  return {
    store,
    syncNow: () => poller.triggerNow(),
    async settled() {
      await firstSynced;
      await supervisors.idle();
      await store.flush();
      await syncStatus.flush();
    },
    async stop() {
      for (const timer of timers) clearInterval(timer);
      await gateway?.close();
      await api.close();
      await poller.stop();
      guests.interrupt(); // a guest that is booting is not waited for
      await supervisors.stop();
      await store.close();
      await syncStatus.flush();
      await images.close();
      await guests.close();
      logger.info('daemon stopped');
    },
  };
}

/** Runs `task` every `ms`, never two at once; a failure is logged and the next run happens. */
function every(ms: number, task: () => Promise<unknown>, failure: string, logger: Logger): NodeJS.Timeout {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    task()
      .catch((error: unknown) => logger.warn(failure, { error: describeError(error) }))
      .finally(() => (running = false));
  }, ms);
  timer.unref();
  return timer;
}

interface ApiParts {
  readonly store: DatabaseStore;
  readonly runtime: AccountRuntime;
  readonly supervisors: ReturnType<typeof createSupervisors>;
  readonly converger: ReturnType<typeof createConverger>;
  readonly documents: ReturnType<typeof createDocumentSync>;
  readonly logger: Logger;
  readonly now: () => Date;
  readonly limitsInForce: (name: string, uid: number) => Promise<Record<string, number | string | boolean>>;
  readonly guests: LibvirtRuntime;
  readonly images: ImageCache;
}

/** The API on 127.0.0.1 and the Unix socket, acting through the same converger and supervisors. */
/** A failure here is logged, not fatal: delegates cannot log in, but slivers are still managed. */
async function prepareDelegateShell(config: Config, logger: Logger): Promise<void> {
  try {
    const shell = await installDelegateShell({ target: config.delegateShell, built: forwardApiCallsPath() });
    if (shell.installed || shell.listed) {
      logger.info('delegate shell ready', { shell: config.delegateShell, copied: shell.installed, added_to_etc_shells: shell.listed });
    }
    if (shell.unreachableBy.length > 0) {
      logger.warn('delegates cannot reach their shell', { shell: config.delegateShell, closed_directories: shell.unreachableBy.join(',') });
    }
  } catch (error) {
    logger.error('delegate shell not ready; delegates cannot log in', { shell: config.delegateShell, error: describeError(error) });
  }
}

async function startApi(config: Config, parts: ApiParts): Promise<{ server: ApiServer; call: ApiServerOptions['call'] }> {
  const { store, runtime, supervisors, converger, documents, logger, now, limitsInForce, guests, images } = parts;
  // The certificate is read once: a daemon that starts with a bad one says so at once.
  const certificatePem = config.authorityCertFile === null ? null : await readFile(config.authorityCertFile, 'utf8');
  if (certificatePem !== null) loadCertificate(certificatePem);
  const needCertificate = (): string => {
    if (certificatePem === null) throw new Error('no authority certificate is configured (authority_cert), so nothing signed is accepted');
    return certificatePem;
  };
  const methods = createApiMethods({
    store,
    logger,
    now,
    authorityDelegate: config.authorityDelegate,
    converge: (trigger) => converger.converge(trigger),
    submit: (ops) => supervisors.submit(ops),
    observe: () => runtime.observe({ readOnly: true }),
    verifyTicket: (ticket) =>
      verifyTicket(ticket, {
        certificatePem: needCertificate(), nodeId: config.nodeId, maxBytes: config.apiMaxRequestBytes,
        nowSeconds: Math.floor(now().getTime() / 1000),
      }),
    verifyPush: (document, signature) => verifyDetachedSignature(document, signature, needCertificate()),
    acceptDocument: (document, source) => documents.accept(document, source),
    limitsInForce,
    defaultRuntime: config.defaultRuntime,
    // An image added through the API may be what a parked sliver lacked: it is tried again.
    images: {
      ...images,
      async add(request) {
        const entry = await images.add(request);
        supervisors.unpark();
        void converger.converge('image added').catch(() => undefined);
        return entry;
      },
    },
    async guestStatus(name) {
      const status = await guests.status(name);
      if (!status) return null;
      // XML-RPC has no null: what libvirt does not say is left out.
      return Object.fromEntries(Object.entries(status).filter(([, v]) => v !== null)) as Record<string, number | string>;
    },
  });
  const identify = async (socket: Socket, transport: 'tcp' | 'unix'): Promise<Caller> => {
    const uid = transport === 'unix'
      ? peerCredentials(socket).uid
      : await tcpClientUid({
        remoteAddress: socket.remoteAddress ?? '', remotePort: socket.remotePort ?? 0,
        localAddress: socket.localAddress ?? '', localPort: socket.localPort ?? 0,
      });
    // A TCP peer whose socket is not listed (it closed already) is nobody.
    if (uid === null) return { uid: -1, kind: 'nobody', name: null };
    const host = await runtime.observe({ readOnly: true });
    return callerOf(uid, (u) => host.owned.find((a) => a.uid === u) ?? null);
  };
  const call: ApiServerOptions['call'] = (caller, method, params) => methods.call(caller, method, params);
  const server = await startApiServer({
    port: config.apiPort === 0 ? null : config.apiPort,
    host: '127.0.0.1',
    socketPath: config.apiSocket,
    maxRequestBytes: config.apiMaxRequestBytes,
    identify,
    call,
    logger,
  });
  return { server, call };
}

/** The ssh gateway, when configured: slivers' shells and delegates' API requests. */
async function startGateway(config: Config, parts: {
  store: DatabaseStore; runtime: AccountRuntime; guests: LibvirtRuntime; enforcer: Enforcer; call: ApiServerOptions['call']; logger: Logger;
}): Promise<Gateway | null> {
  if (config.sshPort === 0) return null;
  const { store, runtime, guests, enforcer, call, logger } = parts;
  const hostKey = await loadOrCreateHostKey(config.stateDir);
  if (hostKey.created) logger.info('ssh host key made', { file: hostKey.path, fingerprint: hostKey.fingerprint });
  const ownedAccount = async (name: string, kind: 'sliver' | 'delegate') =>
    (await runtime.observe({ readOnly: true })).owned.find((a) => a.name === name && a.kind === kind) ?? null;
  return startSshGateway({
    host: config.sshAddress,
    port: config.sshPort,
    hostKey: hostKey.privateKey,
    maxSessions: config.sshMaxSessions,
    maxSessionsPerAccount: config.sshMaxSessionsPerAccount,
    idleTimeoutMs: config.sshIdleTimeoutMs,
    maxAuthAttempts: config.sshMaxAuthAttempts,
    loginGraceMs: config.sshLoginGraceMs,
    maxRequestBytes: config.apiMaxRequestBytes,
    database: () => store.data,
    async sliverAccount(name) {
      const owned = await ownedAccount(name, 'sliver');
      if (!owned) return null;
      // uid, group, home and shell as the account files have them now
      const entry = parsePasswd(await readFile('/etc/passwd', 'utf8')).find((e) => e.name === name && e.uid === owned.uid);
      if (!entry) return null;
      return { account: { name, uid: entry.uid, gid: entry.gid, home: entry.home, shell: entry.shell }, started: owned.started };
    },
    delegateUid: async (name) => (await ownedAccount(name, 'delegate'))?.uid ?? null,
    cgroupFiles: (name) => enforcer.launchFiles(name),
    async guestSession(name, command, terminal) {
      const status = await guests.status(name).catch(() => null);
      if (!status) return null;
      const uri = status.runtime === 'qemu' ? config.libvirtQemuUri : config.libvirtLxcUri;
      return { launch: guestSessionLaunch(status.runtime, uri, name, command, terminal), started: status.state === 'running' };
    },
    callApi: (caller, body) => answerCall(body, caller, call, logger),
    logger,
  });
}

function isInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith('/');
}

/** The images slivers refer to, by name or URI as their slices give them (the cache matches them). */
function imagesInUse(db: NodeDatabase): ReadonlySet<string> {
  const refs = new Set<string>();
  for (const s of sliverRecords(db)) {
    for (const ref of [s.vref, s.guest.kernel, s.guest.initrd]) if (ref !== null) refs.add(ref);
  }
  return refs;
}
