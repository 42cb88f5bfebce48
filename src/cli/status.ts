// `nodemgr status`: reads the database the daemon keeps (no lock needed: writes are atomic renames).
import type { Config } from '../config/config.js';
import { databasePath } from '../daemon.js';
import { readDatabaseSnapshot } from '../db/store.js';
import { formatNodeStatus, nodeStatus } from '../status/report.js';
import { readSyncStatus, syncStatusPath } from '../sync/sync-status.js';

export async function runStatus(config: Config, options: { json: boolean }): Promise<number> {
  const db = await readDatabaseSnapshot(databasePath(config));
  const lastSync = await readSyncStatus(syncStatusPath(config.stateDir), (reason) => process.stderr.write(`nodemgr: ignored ${reason}\n`));
  const status = nodeStatus(db, lastSync);
  process.stdout.write(options.json ? JSON.stringify(status, null, 2) + '\n' : formatNodeStatus(status) + '\n');
  return 0;
}
