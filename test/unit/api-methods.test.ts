// The API's methods over a real node database, called as root: what a caller reads back.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApiMethods } from '../../src/api/methods.js';
import type { Caller } from '../../src/api/identity.js';
import { openDatabase } from '../../src/db/store.js';
import { memoryLogger } from '../../src/log.js';
import { recordsOf, sliverRecord } from './support/records.js';
import { recordWriter } from '../../src/db/record-writer.js';

const ROOT: Caller = { uid: 0, kind: 'root', name: null };

async function methodsOver(t: import('ava').ExecutionContext, records: Parameters<typeof recordsOf>[0]) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-methods-'));
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: join(dir, 'db.json'), lockPath: join(dir, 'db.lock'), logger });
  t.teardown(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  store.update((db) => ({ ...db, ...recordsOf(records) }));
  const refuse = () => {
    throw new Error('not expected in this test');
  };
  return createApiMethods({
    store, records: recordWriter(store, logger), logger, now: () => new Date(), authorityDelegate: null, defaultRuntime: 'unix',
    converge: async () => undefined, submit: refuse, observe: async () => ({ owned: [], foreign: new Set<string>() }), verifyTicket: refuse, verifyPush: refuse, acceptDocument: async () => refuse(),
  });
}

test('a byte cap without a threshold is throttled from 80 % of the sliver\'s own cap, as PlanetLab\'s bwmon does', async (t) => {
  const methods = await methodsOver(t, [
    sliverRecord('pl_capped', { rspec: { net_max_kbyte: 5_529_600, net_i2_max_kbyte: 1_000_000 } }),
    sliverRecord('pl_given', { rspec: { net_max_kbyte: 5_529_600, net_thresh_kbyte: 5_000_000 } }),
    sliverRecord('pl_default'),
  ]);
  const rspec = async (name: string) => (await methods.call(ROOT, 'GetEffectiveRSpec', [name])) as Record<string, number>;
  const capped = await rspec('pl_capped');
  t.is(capped['net_thresh_kbyte'], 4_423_680, 'below the cap of 5,529,600, not the node-wide default above it');
  t.is(capped['net_i2_thresh_kbyte'], 800_000);
  t.is((await rspec('pl_given'))['net_thresh_kbyte'], 5_000_000, 'a threshold the slice gives is kept');
  const plain = await rspec('pl_default');
  t.is(plain['net_thresh_kbyte'], Math.floor(plain['net_max_kbyte']! * 0.8));
  t.true(plain['net_thresh_kbyte']! < plain['net_max_kbyte']!);
});
