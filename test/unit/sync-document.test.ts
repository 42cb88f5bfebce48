// Getting the authority's document into the database (src/sync/document.ts), against an authority
// on loopback http, with a real database store and the real last-good copy in a temp directory:
// a document is accepted and kept; an older, a malformed or an unreachable one changes nothing;
// a conditional GET answered "not modified" changes nothing, also after a restart; and a node that
// lost its database restores the last good document.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadLastGood } from '../../src/authority/last-good.js';
import { parseConfig } from '../../src/config/config.js';
import { openDatabase } from '../../src/db/store.js';
import { sliverRecords } from '../../src/db/records.js';
import { memoryLogger } from '../../src/log.js';
import { createDocumentSync, lastGoodDir } from '../../src/sync/document.js';
import { createSyncStatusFile, readSyncStatus, syncStatusPath } from '../../src/sync/sync-status.js';
import { ed25519KeyLine } from '../support/ssh-keys.js';
import { slicesXml } from '../system/support/slices.js';
import { recordWriter } from '../../src/db/record-writer.js';

const KEY = ed25519KeyLine(1);

/** An authority on loopback: serves `body` with an ETag, and answers 304 to a request that has it. */
async function authority(t: ExecutionContext) {
  const state = { body: '', up: true, requests: [] as IncomingHttpHeaders[] };
  const etagOf = (body: string) => `"${createHash('sha256').update(body).digest('hex').slice(0, 16)}"`;
  const server = createServer((req, res) => {
    state.requests.push(req.headers);
    if (!state.up) return void res.writeHead(503).end('down for maintenance');
    const etag = etagOf(state.body);
    if (req.headers['if-none-match'] === etag) return void res.writeHead(304, { etag }).end();
    res.writeHead(200, { 'content-type': 'text/xml', etag }).end(state.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/slices.xml`,
    state,
    etagOf,
  };
}

/** A node's document sync over a state directory: the database, the sync status and the last good copy. */
async function node(t: ExecutionContext, url: string, stateDir?: string) {
  const dir = stateDir ?? await mkdtemp(join(tmpdir(), 'nodemgr-document-'));
  if (!stateDir) t.teardown(() => rm(dir, { recursive: true, force: true, maxRetries: 3 }));
  const logger = memoryLogger();
  const config = parseConfig(`node_id = 1\nauthority_url = ${url}\nstate_dir = ${dir}\n`, join(dir, 'nodemgr.conf'));
  const { store, recovered } = await openDatabase({ path: join(dir, 'nodemgr.json'), lockPath: join(dir, 'nodemgr.lock'), coalesceMs: 1, logger });
  const syncStatus = createSyncStatusFile(syncStatusPath(dir), null, logger);
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await syncStatus.flush();
    await store.close();
  };
  t.teardown(close);
  const documents = createDocumentSync({ config, store, records: recordWriter(store, logger), syncStatus, logger, now: () => new Date() });
  return {
    dir, config, store, syncStatus, logger, documents, recovered, close,
    slivers: () => sliverRecords(store.data).map((r) => r.name).sort(),
    inForce: () => store.data.records['timestamp']?.timestamp ?? null,
  };
}

const documentOf = (timestamp: number, names: string[]) => slicesXml(timestamp, names.map((name) => ({ name, users: { 1: KEY } })));

test('a document is accepted: its records are in force, the sync says so, and it is kept as the last good one', async (t) => {
  const plc = await authority(t);
  const n = await node(t, plc.url);
  plc.state.body = documentOf(1000, ['a_web', 'a_db']);
  t.true(await n.documents.fetchAndApply());
  t.deepEqual(n.slivers(), ['a_db', 'a_web']);
  t.is(n.inForce(), 1000);
  t.like(n.syncStatus.current, { outcome: 'applied', source: plc.url, documentTimestamp: 1000 });
  t.regex(n.syncStatus.current!.detail, /^2 slivers, 0 delegates for node 1 \(of 2 slices\); \+2 ~0 -0$/);
  await n.syncStatus.flush();
  t.like(await readSyncStatus(syncStatusPath(n.dir)), { outcome: 'applied', documentTimestamp: 1000 });

  const kept = await loadLastGood(lastGoodDir(n.config));
  t.is(kept?.body.toString(), plc.state.body);
  t.like(kept, { url: plc.url, timestamp: 1000, etag: plc.etagOf(plc.state.body) });
  t.true(n.logger.lines.some((l) => l.startsWith('info document applied ')));
});

test('an older document changes nothing, and the last good one stays', async (t) => {
  const plc = await authority(t);
  const n = await node(t, plc.url);
  plc.state.body = documentOf(1000, ['a_web', 'a_db']);
  await n.documents.fetchAndApply();
  const records = n.store.data.records;
  const good = plc.state.body;

  plc.state.body = documentOf(900, ['a_other']);
  t.true(await n.documents.fetchAndApply(), 'the authority answered: not a failed fetch');
  t.is(n.store.data.records, records, 'the records are the very same');
  t.like(n.syncStatus.current, { outcome: 'older', detail: 'document timestamp 900 is older than 1000 in force; ignored', documentTimestamp: 1000 });
  t.is((await loadLastGood(lastGoodDir(n.config)))?.body.toString(), good);
  t.true(n.logger.lines.some((l) => l.startsWith('warn document older than the one in force ') && l.includes('offered=900 in_force=1000')));
});

test('a malformed document is rejected with where it is wrong, and changes nothing', async (t) => {
  const plc = await authority(t);
  const n = await node(t, plc.url);
  plc.state.body = documentOf(1000, ['a_web']);
  await n.documents.fetchAndApply();
  const records = n.store.data.records;
  const good = plc.state.body;

  plc.state.body = '<slices>\n  <slice id="1" name="broken">\n</slices>\n';
  t.false(await n.documents.fetchAndApply(), 'a rejected document is retried as a failed fetch is');
  t.is(n.store.data.records, records);
  t.is(n.syncStatus.current?.outcome, 'rejected');
  t.regex(n.syncStatus.current!.detail, /line \d+/);
  t.is(n.syncStatus.current?.documentTimestamp, 1000);
  t.is((await loadLastGood(lastGoodDir(n.config)))?.body.toString(), good);
  t.true(n.logger.lines.some((l) => l.startsWith('error document rejected ')));
});

test('an authority that is down changes nothing and is reported unreachable', async (t) => {
  const plc = await authority(t);
  const n = await node(t, plc.url);
  plc.state.body = documentOf(1000, ['a_web']);
  await n.documents.fetchAndApply();
  const records = n.store.data.records;

  plc.state.up = false;
  t.false(await n.documents.fetchAndApply());
  t.is(n.store.data.records, records);
  t.is(n.syncStatus.current?.outcome, 'unreachable');
  t.regex(n.syncStatus.current!.detail, /503/);
});

test('a document that cannot be kept on disk is not applied: the records in force stay, and it comes again', async (t) => {
  const plc = await authority(t);
  const n = await node(t, plc.url);
  plc.state.body = documentOf(1000, ['a_web']);
  await n.documents.fetchAndApply();
  const records = n.store.data.records;

  // Where the last good copy goes is taken by a file: the copy cannot be written.
  await rm(lastGoodDir(n.config), { recursive: true });
  await writeFile(lastGoodDir(n.config), 'in the way');
  plc.state.body = documentOf(2000, ['a_web', 'a_new']);
  t.false(await n.documents.fetchAndApply(), 'tried again, as a failed fetch is');
  t.is(n.store.data.records, records);
  t.is(n.syncStatus.current?.outcome, 'unwritable');
  t.regex(n.syncStatus.current!.detail, /could not be kept in .*; not applied, the records in force stay$/);

  await unlink(lastGoodDir(n.config));
  t.true(await n.documents.fetchAndApply());
  t.deepEqual(n.slivers(), ['a_new', 'a_web']);
  t.is(n.inForce(), 2000);
});

test('a conditional GET answered "not modified" changes nothing, and a restarted node asks conditionally from the start', async (t) => {
  const plc = await authority(t);
  const n = await node(t, plc.url);
  plc.state.body = documentOf(1000, ['a_web']);
  t.true(await n.documents.fetchAndApply());
  t.is(plc.state.requests[0]!['if-none-match'], undefined, 'nothing to compare with the first time');
  const records = n.store.data.records;

  t.true(await n.documents.fetchAndApply());
  t.is(plc.state.requests[1]!['if-none-match'], plc.etagOf(plc.state.body));
  t.is(n.store.data.records, records);
  t.like(n.syncStatus.current, { outcome: 'unchanged', detail: 'not modified since the last fetch' });

  // A restart: the validators of the document in force come from the last good copy.
  await n.close();
  const restarted = await node(t, plc.url, n.dir);
  t.is(restarted.inForce(), 1000);
  t.true(await restarted.documents.fetchAndApply());
  t.is(plc.state.requests[2]!['if-none-match'], plc.etagOf(plc.state.body));
  t.is(restarted.syncStatus.current?.outcome, 'unchanged');

  // A changed document is fetched whole and applied.
  plc.state.body = documentOf(2000, ['a_web', 'a_new']);
  t.true(await restarted.documents.fetchAndApply());
  t.is(restarted.syncStatus.current?.outcome, 'applied');
  t.deepEqual(restarted.slivers(), ['a_new', 'a_web']);
});

test('a node that lost its database restores the last good document; with none kept there is nothing to restore', async (t) => {
  const plc = await authority(t);
  const n = await node(t, plc.url);
  t.is(await n.documents.restoreLastGood(), null, 'nothing kept yet');
  plc.state.body = documentOf(1000, ['a_web', 'a_db']);
  await n.documents.fetchAndApply();
  await n.close();

  // The database is gone, and the authority is down.
  await unlink(join(n.dir, 'nodemgr.json'));
  plc.state.up = false;
  const again = await node(t, plc.url, n.dir);
  t.deepEqual(again.slivers(), [], 'an empty database');
  const restored = await again.documents.restoreLastGood();
  t.is(restored?.outcome, 'applied');
  t.deepEqual(again.slivers(), ['a_db', 'a_web']);
  t.is(again.inForce(), 1000);
  t.like(again.syncStatus.current, { outcome: 'applied', source: plc.url, documentTimestamp: 1000 });
  t.false(await again.documents.fetchAndApply(), 'the authority is still down');
  t.deepEqual(again.slivers(), ['a_db', 'a_web'], 'and the restored records stay');
});
