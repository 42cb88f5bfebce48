import test from 'ava';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SyncStatus } from '../../src/db/types.js';
import { memoryLogger } from '../../src/log.js';
import { createSyncStatusFile, readSyncStatus, syncStatusPath } from '../../src/sync/sync-status.js';

async function stateDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-sync-status-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const status = (n: number): SyncStatus => ({
  at: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(),
  outcome: n % 2 === 0 ? 'unchanged' : 'applied',
  detail: `sync ${n}`,
  source: 'https://plc.example.org/slices.xml',
  documentTimestamp: 1700000000 + n,
});

test('no file yet reads as no sync', async (t) => {
  t.is(await readSyncStatus(syncStatusPath(await stateDir(t))), null);
});

test('the latest of many statuses recorded at once is the one on disk, and no temporary file is left', async (t) => {
  const dir = await stateDir(t);
  const file = createSyncStatusFile(syncStatusPath(dir), null, memoryLogger());
  for (let n = 1; n <= 50; n++) file.record(status(n));
  t.deepEqual(file.current, status(50));
  await file.flush();
  t.deepEqual(await readSyncStatus(syncStatusPath(dir)), status(50));
  t.deepEqual(await readdir(dir), ['last-sync.json']);
  file.record(status(51));
  await file.flush();
  t.deepEqual(await readSyncStatus(syncStatusPath(dir)), status(51));
});

test('a damaged file is ignored with a reason that names the file and the field', async (t) => {
  const path = syncStatusPath(await stateDir(t));
  const reasons: string[] = [];
  await writeFile(path, JSON.stringify({ ...status(1), outcome: 'fine' }));
  t.is(await readSyncStatus(path, (r) => reasons.push(r)), null);
  t.deepEqual(reasons, [`${path}: outcome: expected one of applied, unchanged, older, rejected, unreachable, unwritable, got "fine"`]);
  await writeFile(path, '{"at": ');
  t.is(await readSyncStatus(path, (r) => reasons.push(r)), null);
  t.true(reasons[1]!.startsWith(`${path}: `));
});

test('a failed write is logged and the next record writes again', async (t) => {
  const dir = await stateDir(t);
  const logger = memoryLogger();
  const file = createSyncStatusFile(join(dir, 'missing-dir', 'last-sync.json'), null, logger);
  file.record(status(1));
  await file.flush();
  t.true(logger.lines.some((l) => l.startsWith('error sync status not written')));
  const good = createSyncStatusFile(syncStatusPath(dir), null, logger);
  good.record(status(2));
  await good.flush();
  t.is(JSON.parse(await readFile(syncStatusPath(dir), 'utf8')).detail, 'sync 2');
});
