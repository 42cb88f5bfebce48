// The answer cache: a repeated read of an unchanged database is answered again from it, and
// nothing it gives is ever older than the database in force. First the cache alone, then the
// API server over a real database, called over HTTP as a client would.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAnswerCache, requestHash, type AnswerTally } from '../../src/api/answer-cache.js';
import type { Caller } from '../../src/api/identity.js';
import { createApiMethods } from '../../src/api/methods.js';
import { startApiServer } from '../../src/api/server.js';
import { measuredAnswers } from '../../src/app/api.js';
import { recordWriter } from '../../src/db/record-writer.js';
import { openDatabase } from '../../src/db/store.js';
import { memoryLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics/registry.js';
import { parseExposition, valueOf } from '../support/exposition.js';
import { recordsOf, sliverRecord } from './support/records.js';

const ROOT: Caller = { uid: 0, kind: 'root', name: null };
const SLIVER: Caller = { uid: 70_001, kind: 'sliver', name: 'pl_one' };
const body = (text: string) => Buffer.from(text);
const getRSpec = (name: string) =>
  `<?xml version="1.0"?><methodCall><methodName>GetRSpec</methodName><params><param><value><string>${name}</string></value></param></params></methodCall>`;

function cacheOver(generation: { current: object }, readsOnly = new Set(['GetRSpec'])) {
  // The tallies by method, as the metrics keep them: one per method, asked for as answers are kept.
  const tallies = new Map<string, AnswerTally>();
  const hits = () => Object.fromEntries([...tallies].map(([method, tally]) => [method, tally.hits]));
  const cache = createAnswerCache({
    generation: () => generation.current,
    readsOnlyDatabase: (method) => readsOnly.has(method),
    tallyOf: (method) => tallies.get(method) ?? tallies.set(method, { hits: 0 }).get(method)!,
    maxEntries: 3,
  });
  return { cache, hits };
}

test('a kept answer is given again to the same caller for the same bytes, until the database changes', (t) => {
  const generation = { current: {} };
  const { cache, hits } = cacheOver(generation);
  t.is(cache.lookup(ROOT, body('a')), null, 'nothing kept yet');
  cache.keep(ROOT, body('a'), 'GetRSpec', '<answer a/>', cache.generation());
  t.is(cache.lookup(ROOT, body('a'))?.answer, '<answer a/>');
  t.deepEqual(hits(), { GetRSpec: 1 }, 'a hit is counted in its method\'s tally');
  t.is(cache.lookup(ROOT, body('a'))?.bytes, Buffer.byteLength('<answer a/>'));
  t.deepEqual(hits(), { GetRSpec: 2 });
  t.is(cache.lookup(ROOT, body('a ')), null, 'other bytes are another request');
  t.is(cache.lookup(SLIVER, body('a')), null, 'another caller may be answered otherwise');
  generation.current = {};
  t.is(cache.lookup(ROOT, body('a')), null, 'a new database drops every kept answer');
});

test('only results of methods that read the database alone are kept, and never for a certificate', (t) => {
  const generation = { current: {} };
  const { cache } = cacheOver(generation);
  cache.keep(ROOT, body('s'), 'GetSliverStatus', '<status/>', cache.generation());
  t.is(cache.lookup(ROOT, body('s')), null, 'GetSliverStatus reads the host');
  const certificate: Caller = { uid: -1, kind: 'certificate', name: null, subject: 'CN=x' };
  cache.keep(certificate, body('c'), 'GetRSpec', '<answer/>', cache.generation());
  t.is(cache.lookup(certificate, body('c')), null, 'allowed_users is read at every call of a certificate');
});

test('an answer read from a database that changed during the call is not kept', (t) => {
  const generation = { current: {} };
  const { cache } = cacheOver(generation);
  const readFrom = cache.generation();
  generation.current = {};
  cache.keep(ROOT, body('a'), 'GetRSpec', '<old/>', readFrom);
  t.is(cache.lookup(ROOT, body('a')), null);
});

test('connections of the same account share its answers, through every change of the cache', (t) => {
  const generation = { current: {} };
  const { cache } = cacheOver(generation);
  // Each connection has a caller of its own: same account, another object.
  const first: Caller = { ...SLIVER };
  const second: Caller = { ...SLIVER };
  cache.keep(ROOT, body('r'), 'GetRSpec', '<root/>', cache.generation());
  t.is(cache.lookup(first, body('a')), null, 'the account has nothing kept yet');
  cache.keep(second, body('a'), 'GetRSpec', '<a/>', cache.generation());
  t.is(cache.lookup(first, body('a'))?.answer, '<a/>', 'kept by one connection, given to the other');
  generation.current = {};
  t.is(cache.lookup(first, body('a')), null, 'gone with the database it was read from');
  cache.keep(second, body('b'), 'GetRSpec', '<b/>', cache.generation());
  t.is(cache.lookup(first, body('b'))?.answer, '<b/>');
  t.is(cache.lookup(first, body('a')), null);
  t.is(cache.lookup(ROOT, body('r')), null, 'nor is another account\'s answer kept through it');
});

test('a cache over its characters is emptied too: its memory is bounded whatever the answers', (t) => {
  const generation = { current: {} };
  const cache = createAnswerCache({ generation: () => generation.current, readsOnlyDatabase: () => true, maxChars: 100 });
  cache.keep(ROOT, body('a'), 'GetRecord', 'x'.repeat(60), cache.generation());
  t.truthy(cache.lookup(ROOT, body('a')));
  cache.keep(ROOT, body('b'), 'GetRecord', 'y'.repeat(60), cache.generation());
  t.is(cache.lookup(ROOT, body('a')), null, 'the first went when the second would have passed 100');
  t.truthy(cache.lookup(ROOT, body('b')));
});

test('a full cache is emptied and fills again; large requests are not kept', (t) => {
  const generation = { current: {} };
  const { cache } = cacheOver(generation);
  for (const name of ['a', 'b', 'c']) cache.keep(ROOT, body(name), 'GetRSpec', `<${name}/>`, cache.generation());
  t.truthy(cache.lookup(ROOT, body('c')));
  cache.keep(ROOT, body('d'), 'GetRSpec', '<d/>', cache.generation());
  t.is(cache.lookup(ROOT, body('a')), null);
  t.truthy(cache.lookup(ROOT, body('d')));
  const large = Buffer.alloc(5000, 'x');
  cache.keep(ROOT, large, 'GetRSpec', '<large/>', cache.generation());
  t.is(cache.lookup(ROOT, large), null);
});

test('answers are found by a hash of the request, but only ever given for the very same bytes', (t) => {
  // Two GetRSpec calls whose hashes are equal, found by a birthday search (30 bits: about 40,000
  // requests, each node's seed its own).
  const byHash = new Map<number, string>();
  let pair: [string, string] | null = null;
  for (let i = 0; pair === null && i < 1_000_000; i++) {
    const text = getRSpec(`pl_${i}`);
    const hash = requestHash(body(text));
    const other = byHash.get(hash);
    if (other === undefined) byHash.set(hash, text);
    else pair = [other, text];
  }
  if (pair === null) return t.fail('no two requests of one hash among a million');
  const [first, second] = pair;
  t.not(first, second);
  const generation = { current: {} };
  const { cache } = cacheOver(generation);
  cache.keep(ROOT, body(first), 'GetRSpec', '<first/>', cache.generation());
  t.is(cache.lookup(ROOT, body(second)), null, 'the same hash, other bytes: not the first one\'s answer');
  t.is(cache.lookup(ROOT, body(first))?.answer, '<first/>');
  cache.keep(ROOT, body(second), 'GetRSpec', '<second/>', cache.generation());
  t.is(cache.lookup(ROOT, body(second))?.answer, '<second/>');
  t.is(cache.lookup(ROOT, body(first)), null, 'one answer a hash: the later one took its place');
  // Lengths that are not whole words: the bytes past a request count for nothing.
  cache.keep(ROOT, body('ab'), 'GetRSpec', '<ab/>', cache.generation());
  t.is(cache.lookup(ROOT, body('ab\0')), null);
  t.is(cache.lookup(ROOT, body('ab\0\0')), null);
  t.is(cache.lookup(ROOT, body('ab'))?.answer, '<ab/>');
});

/** POSTs one XML-RPC body; the answer's text. */
function post(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/RPC2', method: 'POST', headers: { 'content-type': 'text/xml' } }, (res) => {
      let answer = '';
      res.setEncoding('utf8').on('data', (d: string) => (answer += d)).on('end', () => resolve(answer));
    });
    req.on('error', reject);
    req.end(text);
  });
}

test('over HTTP, a repeated GetRSpec is answered from the cache and counted; a change of the record is seen at the next call', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-answers-'));
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: join(dir, 'db.json'), lockPath: join(dir, 'db.lock'), logger });
  store.update((db) => ({ ...db, ...recordsOf([sliverRecord('pl_one', { rspec: { cpu_share: 3 } })]) }));
  const refuse = () => {
    throw new Error('not expected in this test');
  };
  const methods = createApiMethods({
    store, records: recordWriter(store, logger), logger, now: () => new Date(), authorityDelegate: null, defaultRuntime: 'unix',
    converge: async () => undefined, submit: refuse, observe: async () => ({ owned: [], foreign: new Set<string>() }),
    verifyTicket: refuse, verifyPush: refuse, acceptDocument: async () => refuse(),
  });
  const metrics = createMetrics({ version: 'test', db: () => store.data, images: () => [], defaultRuntime: 'unix', now: () => new Date() });
  const { call, answers } = measuredAnswers(methods, store, metrics);
  const server = await startApiServer({
    port: 0, host: '127.0.0.1', socketPath: join(dir, 'api.sock'), maxRequestBytes: 1 << 20, logger,
    identify: async () => ROOT, call, answers,
  });
  t.teardown(async () => {
    await server.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const first = await post(server.port!, getRSpec('pl_one'));
  t.regex(first, /<name>cpu_share<\/name><value><int>3<\/int>/);
  t.is(await post(server.port!, getRSpec('pl_one')), first);
  t.is(await post(server.port!, getRSpec('pl_one')), first);
  const counted = parseExposition(await metrics.text());
  t.is(valueOf(counted, 'nodemgr_api_calls_total', { method: 'GetRSpec', fault: 'none' }), 3, 'every call counted, cached or not');
  t.is(valueOf(counted, 'nodemgr_api_call_duration_seconds_count', { method: 'GetRSpec' }), 1, 'only the call that ran is timed');
  t.is(valueOf(parseExposition(await metrics.text()), 'nodemgr_api_calls_total', { method: 'GetRSpec', fault: 'none' }), 3, 'a second scrape counts nothing twice');

  store.update((db) => ({ ...db, ...recordsOf([sliverRecord('pl_one', { rspec: { cpu_share: 7 } })]) }));
  t.regex(await post(server.port!, getRSpec('pl_one')), /<name>cpu_share<\/name><value><int>7<\/int>/, 'the new record, at once');
  // A fault is never kept: the sliver that appears later is found.
  t.regex(await post(server.port!, getRSpec('pl_two')), /no sliver named "pl_two"/);
  store.update((db) => ({ ...db, ...recordsOf([sliverRecord('pl_one'), sliverRecord('pl_two', { rspec: { cpu_share: 9 } })]) }));
  t.regex(await post(server.port!, getRSpec('pl_two')), /<name>cpu_share<\/name><value><int>9<\/int>/);
});
