// Wiring only: the daemon as a list of services, started in order and stopped in reverse. Each
// part is made once from the configuration and handed to the parts that use it; nothing is bound
// late.
import { chmod, mkdir, stat } from 'node:fs/promises';
import { relative } from 'node:path';
import { createLimiter } from '../accounts/limiter.js';
import { createSupervisors } from '../accounts/supervisor.js';
import { databaseAddressBook, scopedAddressBook } from '../addresses/address-book.js';
import { createAddressPoolFile } from '../addresses/pool-file.js';
import { startPoller } from '../authority/poller.js';
import type { Config } from '../config/config.js';
import { accountReportRecorder } from '../db/accounts.js';
import { bwcapOf, sliverRecords } from '../db/records.js';
import { recordWriter } from '../db/record-writer.js';
import { openDatabase, type DatabaseStore } from '../db/store.js';
import type { NodeDatabase } from '../db/types.js';
import { openImageCache } from '../images/cache.js';
import { createEnforcer, limitInputOf } from '../limits/enforcer.js';
import { hostLimits } from '../limits/host-limits.js';
import { limitsHook } from '../accounts/limits-hook.js';
import { readLimitsInForce } from '../limits/in-force.js';
import type { Logger } from '../log.js';
import { desiredOfRecords } from '../reconcile/desired.js';
import { healthPath, writeHealth, type DaemonHealth } from '../status/health.js';
import { createConverger } from '../sync/converge.js';
import { createDocumentSync } from '../sync/document.js';
import { createSyncStatusFile, readSyncStatus, syncStatusPath } from '../sync/sync-status.js';
import { describeError } from '../util/errors.js';
import { prepareDelegateShell, prepareTlsListener, startApi } from './api.js';
import { createGuestRuntime, createRuntime, createUnixRuntimeOf } from './factories.js';
import { startGateway } from './gateway.js';
import { createTasks, createTaskGuests, sliverUses, taskImagesInUse } from './tasks.js';
import { clusterImagesInUse, createClusterGuests, createClusters } from './clusters.js';
import { clusterUses } from '../clusters/engine.js';
import { taskUses } from '../tasks/engine.js';
import { isOnDemandGuest } from '../tasks/task-guest.js';
import { byteCapPath, databasePath, lockPath } from './paths.js';
import { every, services, type Services } from './services.js';
import { countedSyncStatus, timedConverger, timedSync } from '../metrics/instrument.js';
import { createNodeMetrics } from './metrics.js';
import { startMetricsServer } from '../metrics/server.js';
import { packageVersion } from '../config/package-root.js';

/** An operation taking longer than this is reported as failed (commands have their own timeouts). */
const OP_TIMEOUT_MS = 10 * 60 * 1000;
/**
 * How many configures, starts and stops run at once, node-wide: each holds a few descriptors, and
 * ten thousand new slivers at once ran out of them (EMFILE at the 20,000 allowed).
 */
const LIGHT_OPS_AT_ONCE = 512;
/** How often the daemon's health (see status/health.ts) is brought up to date. */
const HEALTH_INTERVAL_MS = 1_000;

export interface RunningDaemon {
  readonly store: DatabaseStore;
  /** Fetches and converges now (coalesced with a running attempt). */
  syncNow(): void;
  /** Resolves when the first sync and the work it planned are done (for --once and tests). */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

/** The node's parts, each started as a service of `all` where it has something to stop. */
async function startParts(config: Config, logger: Logger, all: Services) {
  const now = () => new Date();
  const { store, recovered } = await all.add('database', () => openDatabase({
    path: databasePath(config), lockPath: lockPath(config), coalesceMs: config.dbCoalesceMs, logger,
  }), (opened) => opened.store.close());
  const images = await all.add('image cache', () => openImageCache({
    dir: config.imageCacheDir, maxBytes: config.imageCacheMaxBytes, inUse: () => imagesInUse(store.data), logger,
  }), (cache) => cache.close());
  const addresses = databaseAddressBook(store, createAddressPoolFile(config.addressPool, logger), now);
  // The slivers' guests and the on-demand guests are two lifecycles: each sees only its own leases.
  const sliverAddresses = scopedAddressBook(addresses, (holder) => !isOnDemandGuest(holder));
  const guests = await all.add('guests', () => createGuestRuntime(config, logger, { images, addresses: sliverAddresses, now }), (g) => g.close());
  const unix = createUnixRuntimeOf(config, logger);
  const runtime = createRuntime(config, logger, { unix, guests });
  const desired = desiredOfRecords(config.defaultRuntime);

  const limits = await hostLimits(config, logger);
  const enforcer = await createEnforcer({
    ...limits,
    byteCapFile: byteCapPath(config),
    byteCapPeriodSeconds: config.byteCapPeriodMs / 1000,
    logger,
    now,
    input: async () => limitInputOf(desired(store.data).specs, await runtime.observe({ readOnly: true }), bwcapOf(store.data)),
  });
  const metrics = createNodeMetrics(config, { version: await packageVersion(), store, images, limits, enforcer, guests, logger, now });
  const statusFile = syncStatusPath(config.stateDir);
  const syncStatus = await all.add('sync status', async () => createSyncStatusFile(
    statusFile, await readSyncStatus(statusFile, (reason) => logger.warn('sync status ignored', { reason })), logger,
  ), (file) => file.flush());
  const reports = accountReportRecorder(store, now);
  const supervisors = await all.add('supervisors', () => createSupervisors({
    runtime,
    hooks: [limitsHook(enforcer)],
    limiter: createLimiter(config.maxParallelAccountOps),
    unixLimiter: createLimiter(config.maxParallelUnixAccountOps),
    lightLimiter: createLimiter(LIGHT_OPS_AT_ONCE),
    logger,
    retryInitialMs: config.opRetryInitialMs,
    retryMaxMs: config.opRetryMaxMs,
    opTimeoutMs: OP_TIMEOUT_MS,
    report: (report) => reports.record(report),
    observe: (action, ok, seconds) => metrics.operation(action, ok, seconds),
  }), async (s) => {
    guests.interrupt(); // a guest that is booting is not waited for
    await s.stop();
    reports.flush(); // what the last operations reported, before the database closes
  });
  const records = recordWriter(store, logger);
  const taskGuests = await all.add('task guests', () => createTaskGuests(config, { images, addresses, logger, now }), (g) => g.close());
  const tasks = await all.add('tasks', async () => {
    const engine = createTasks(config, {
      store, images, addresses, desired: () => desired(store.data), clusterUses: () => clusterUses(Object.values(store.data.clusters)), logger, now,
    }, taskGuests);
    await engine.start();
    return engine;
  }, (engine) => {
    taskGuests.interrupt();
    return engine.stop();
  });
  const clusterGuests = await all.add('cluster guests', () => createClusterGuests(config, images, addresses, logger), (g) => g.close());
  const clusters = await all.add('clusters', async () => {
    const engine = createClusters(config, {
      store, images, addresses, logger, now,
      otherUses: () => [...sliverUses(desired(store.data)), ...taskUses(Object.values(store.data.tasks))],
    }, clusterGuests);
    await engine.recover();
    return engine;
  }, () => clusterGuests.interrupt());
  const documents = createDocumentSync({ config, store, records, syncStatus: countedSyncStatus(syncStatus, metrics), logger, now });
  const converger = timedConverger(createConverger({ store, records, runtime, supervisors, logger, now, desired, afterPass: () => enforcer.refresh() }), metrics);
  return {
    metrics, now, store, recovered, images, guests, unix, runtime, limits, enforcer, syncStatus, supervisors, reports, records, documents, converger, tasks, clusters,
  };
}

/** The periodic work: byte counters, the stray sweep, and the health the run directory holds. */
async function startTimers(config: Config, logger: Logger, all: Services, parts: Awaited<ReturnType<typeof startParts>>) {
  const { store, syncStatus, enforcer } = parts;
  // What files in the state directory cannot tell (they may be what cannot be written).
  let lastHealth = '';
  const reportHealth = async () => {
    const health: DaemonHealth = { pid: process.pid, database: store.problem(), lastSync: syncStatus.current };
    const text = JSON.stringify(health);
    if (text === lastHealth) return;
    await writeHealth(healthPath(config.runDir), health);
    lastHealth = text;
  };
  await reportHealth();
  for (const [name, ms, task, failure] of [
    ['byte counters', config.byteCapSampleMs, () => enforcer.sampleBytes(), 'byte counters not sampled'],
    ['stray sweep', config.straySweepMs, () => enforcer.sweep(), 'stray processes not swept'],
    ['health', HEALTH_INTERVAL_MS, reportHealth, 'health not reported'],
  ] as const) {
    await all.add(name, () => every(ms, task, failure, logger), (timer) => timer.stop());
  }
}

export async function startDaemon(config: Config, logger: Logger): Promise<RunningDaemon> {
  const tls = await prepareTlsListener(config, logger);
  await prepareDirectories(config);
  const all = services(logger);
  const parts = await startParts(config, logger, all);
  const { metrics, now, store, recovered, images, guests, unix, runtime, limits, enforcer, syncStatus, supervisors, reports, records, documents, converger, tasks, clusters } = parts;
  await startTimers(config, logger, all, parts);

  await prepareDelegateShell(config, logger);
  const limitsInForce = async (name: string, uid: number) => {
    const found = await readLimitsInForce({
      ...limits, byteCaps: enforcer.byteCaps(), byteCapPeriodSeconds: config.byteCapPeriodMs / 1000,
      homeBase: config.homeBase, problems: enforcer.problems(),
    }, [{ name, uid }]);
    return found.get(name) ?? {};
  };
  const { call } = await all.add('api', () => startApi(config, {
    store, records, runtime, supervisors, converger, documents, logger, now, limitsInForce, guests, images, tls, tasks, clusters, metrics,
  }), ({ server }) => server.close());
  // Without the metrics endpoint (its port taken, say) the node is still managed: logged, not fatal.
  if (config.metricsPort !== 0) {
    await all.add('metrics', () => startMetricsServer(metrics, config.metricsAddress, config.metricsPort, logger).catch((error: unknown) => {
      logger.error('metrics endpoint not started', { address: `${config.metricsAddress}:${config.metricsPort}`, error: describeError(error) });
      return null;
    }), (server) => server?.close());
  }
  // Without the gateway slivers are still managed and the API still answers locally: logged, not fatal.
  await all.add('ssh gateway', () => startGateway(config, { store, runtime, unix, guests, enforcer, call, logger, observer: metrics.ssh }).catch((error: unknown) => {
    logger.error('ssh gateway not started', { address: `${config.sshAddress}:${config.sshPort}`, error: describeError(error) });
    return null;
  }), (gateway) => gateway?.close());

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
  const poller = await all.add('authority poller', () => startPoller({
    periodMs: config.pollPeriodMs,
    jitterMs: config.pollJitterMs,
    backoffInitialMs: config.backoffInitialMs,
    backoffMaxMs: config.backoffMaxMs,
    logger,
    attempt: async () => {
      let fetched = false;
      try {
        fetched = await timedSync(metrics, () => documents.fetchAndApply());
      } finally {
        // Converge whatever happened to the fetch: the records in force still hold, and drift
        // on the host (a deleted account, a killed sliver) is repaired on every pass.
        await converger.converge('poll');
        firstSync?.();
        firstSync = null;
      }
      return fetched;
    },
  }), (p) => p.stop());

  return {
    store,
    syncNow: () => poller.triggerNow(),
    async settled() {
      await firstSynced;
      await supervisors.idle();
      reports.flush();
      await store.flush();
      await syncStatus.flush();
    },
    async stop() {
      await all.stopAll();
      logger.info('daemon stopped');
    },
  };
}

async function prepareDirectories(config: Config): Promise<void> {
  await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  // The guests' files are under the state directory by default, and the hypervisor's user must
  // reach them: the directory may be searched by others (its files are the owner's alone).
  if (isInside(config.guestDir, config.stateDir)) await chmod(config.stateDir, (await stat(config.stateDir)).mode & 0o777 | 0o001);
  // The tasks' and clusters' guests' files are under task_dir and vc_dir, which the hypervisor's
  // user searches too; each task's spool in it is the daemon's alone (0700).
  for (const dir of [config.taskDir, config.vcDir]) {
    if (isInside(dir, config.stateDir)) await chmod(config.stateDir, (await stat(config.stateDir)).mode & 0o777 | 0o001);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    await chmod(dir, (await stat(dir)).mode & 0o777 | 0o001);
  }
  await mkdir(config.runDir, { recursive: true, mode: 0o755 });
}

function isInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith('/');
}

/** The images slivers, tasks and instances refer to, by name or URI as they give them (the cache matches them). */
function imagesInUse(db: NodeDatabase): ReadonlySet<string> {
  const refs = new Set<string>();
  for (const s of sliverRecords(db)) {
    for (const ref of [s.vref, s.guest.kernel, s.guest.initrd]) if (ref !== null) refs.add(ref);
  }
  for (const ref of [...taskImagesInUse(db), ...clusterImagesInUse(db)]) refs.add(ref);
  return refs;
}
