// `nodemgr status`: reads the database the daemon keeps (no lock needed: writes are atomic renames)
// and the limits in force on the host, read back from the kernel.
import type { Config } from '../config/config.js';
import { createGuestRuntime, NO_GUEST_PARTS } from '../app/factories.js';
import { byteCapPath, databasePath } from '../app/paths.js';
import { readOnlyAddressBook } from '../addresses/address-book.js';
import { readImageIndex } from '../images/store.js';
import { availableParallelism, totalmem } from 'node:os';
import { sliverUses } from '../app/tasks.js';
import { desiredState } from '../reconcile/desired.js';
import { budgetView } from '../tasks/budget.js';
import { taskUses } from '../tasks/engine.js';
import { clusterUses } from '../clusters/engine.js';
import type { GuestStatus } from '../runtimes/types.js';
import { readDatabaseSnapshot } from '../db/store.js';
import type { NodeDatabase } from '../db/types.js';
import { loadByteCaps } from '../limits/bwmon.js';
import { hostLimits } from '../limits/host-limits.js';
import { readLimitsInForce, type LimitsInForce } from '../limits/in-force.js';
import { createLogger } from '../log.js';
import { savedHostKeyFingerprint } from '../ssh/host-key.js';
import { formatNodeStatus, nodeStatus, type NodeStatus } from '../status/report.js';
import { readSyncStatus, syncStatusPath } from '../sync/sync-status.js';
import { healthPath, readHealth } from '../status/health.js';
import { describeError } from '../util/errors.js';

const warn = (message: string) => process.stderr.write(`nodemgr: ${message}\n`);

async function limitsOnHost(config: Config, status: NodeStatus): Promise<Record<string, LimitsInForce>> {
  const slivers = status.accounts.flatMap((a) => (a.kind === 'sliver' && a.uid !== null ? [{ name: a.name, uid: a.uid }] : []));
  if (slivers.length === 0) return {};
  const limits = await hostLimits(config, createLogger({ console: false }), { readOnly: true });
  const byteCaps = await loadByteCaps(byteCapPath(config), (message) => warn(message)).catch((error: unknown) => {
    warn(`bytes sent this period not shown: ${describeError(error)}`);
    return {};
  });
  const found = await readLimitsInForce({
    ...limits, byteCaps, byteCapPeriodSeconds: config.byteCapPeriodMs / 1000, homeBase: config.homeBase,
  }, slivers);
  return Object.fromEntries(found);
}

/** The libvirt slivers' domains as libvirt holds them; one that cannot be read is left out, with a warning. */
async function guestsOnHost(config: Config, status: NodeStatus, db: NodeDatabase): Promise<Record<string, GuestStatus>> {
  const names = status.accounts.filter((a) => a.kind === 'sliver' && a.runtime !== 'unix').map((a) => a.name);
  if (names.length === 0) return {};
  // The leases are the database's, which this process reads itself.
  const guests = createGuestRuntime(config, createLogger({ console: false }), { ...NO_GUEST_PARTS, addresses: readOnlyAddressBook(db) });
  const found: Record<string, GuestStatus> = {};
  try {
    for (const name of names) {
      const status = await guests.status(name).catch((error: unknown) => {
        warn(`${name}: domain not read: ${describeError(error)}`);
        return null;
      });
      if (status) found[name] = status;
    }
  } finally {
    await guests.close();
  }
  return found;
}

export async function runStatus(config: Config, options: { json: boolean }): Promise<number> {
  const db = await readDatabaseSnapshot(databasePath(config));
  const health = await readHealth(healthPath(config.runDir));
  // The running daemon's own word on the last sync is newer than its file, which may be unwritable.
  const lastSync = health?.lastSync ?? await readSyncStatus(syncStatusPath(config.stateDir), (reason) => warn(`ignored ${reason}`));
  const planned = nodeStatus(db, lastSync, config.defaultRuntime);
  const images = await readImageIndex(config.imageCacheDir).then(
    (entries) => ({ images: entries }),
    (error: unknown) => ({ imagesProblem: describeError(error) }),
  );
  const status: NodeStatus = {
    ...planned,
    ...(health?.database ? { databaseProblem: health.database } : {}),
    limitsInForce: await limitsOnHost(config, planned),
    guests: await guestsOnHost(config, planned, db),
    ...images,
    capacity: budgetView({ vcpus: availableParallelism(), memoryBytes: totalmem() }, { cpu: config.cpuOvercommit, memory: config.memOvercommit },
      [...sliverUses(desiredState(db, config.defaultRuntime)), ...taskUses(Object.values(db.tasks)), ...clusterUses(Object.values(db.clusters))]),
    ...(config.sshPort === 0 ? {} : {
      sshGateway: { address: `${config.sshAddress}:${config.sshPort}`, fingerprint: await savedHostKeyFingerprint(config.stateDir) },
    }),
  };
  process.stdout.write(options.json ? JSON.stringify(status, null, 2) + '\n' : formatNodeStatus(status) + '\n');
  return 0;
}
