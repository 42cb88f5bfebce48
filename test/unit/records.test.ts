import test from 'ava';
import { applyDocument, earliestExpiry, expireRecords } from '../../src/db/records.js';
import { emptyDatabase, type NodeDatabase, type SliverRecord } from '../../src/db/types.js';
import { parseSlicesDocument } from '../../src/slices/parse.js';
import type { SliverSpec, SlicesDocument } from '../../src/slices/types.js';

function sliver(name: string, timestamp: number, extra: Partial<SliverSpec> = {}): SliverSpec {
  return {
    name, sliceId: 1, timestamp, expiry: null, rspec: { cpu_share: 5 }, initscript: null, vref: null,
    guest: { runtime: null, kernel: null, initrd: null, size: null }, keys: [], controllers: [], instantiation: 'plc-instantiated', unknownResources: {}, ...extra,
  };
}

function doc(timestamp: number, slivers: SliverSpec[]): SlicesDocument {
  return { timestamp, nodeId: 1, slivers, delegates: [], bwcapKbit: null, skipped: [], slicesSeen: slivers.length };
}

function applied(db: NodeDatabase, d: SlicesDocument, now = 1000) {
  const outcome = applyDocument(db, d, now);
  if (outcome.kind !== 'applied') throw new Error(`expected applied, got ${outcome.kind}`);
  return outcome;
}

test('a first document adds its slivers and records its timestamp', (t) => {
  const { database, changes } = applied(emptyDatabase(), doc(100, [sliver('a_one', 90), sliver('a_two', 95)]));
  t.deepEqual(changes.added, ['sliver_a_one', 'sliver_a_two']);
  t.is(database.records['timestamp']!.timestamp, 100);
  t.is((database.records['sliver_a_one'] as SliverRecord).rspec['cpu_share'], 5);
});

test('an older document changes nothing', (t) => {
  const { database } = applied(emptyDatabase(), doc(100, [sliver('a_one', 90)]));
  const outcome = applyDocument(database, doc(99, []), 1000);
  t.deepEqual(outcome, { kind: 'older', inForce: 100, offered: 99 });
});

test('slivers the document no longer lists are removed, newer ones delivered since are kept', (t) => {
  let { database } = applied(emptyDatabase(), doc(100, [sliver('a_one', 90), sliver('a_two', 90)]));
  // a record delivered after the next document was made (as a ticket would) survives it
  database = { ...database, records: { ...database.records, sliver_a_ticket: { ...(database.records['sliver_a_two'] as SliverRecord), record_key: 'sliver_a_ticket', name: 'a_ticket', timestamp: 300 } } };
  const next = applied(database, doc(200, [sliver('a_one', 90)]));
  t.deepEqual(next.changes.removed, ['sliver_a_two']);
  t.truthy(next.database.records['sliver_a_ticket']);
  t.truthy(next.database.records['sliver_a_one']);
});

test('a sliver held in a newer version than the document offers is kept (no rollback)', (t) => {
  const { database } = applied(emptyDatabase(), doc(100, [sliver('a_one', 150, { rspec: { cpu_share: 9 } })]));
  const next = applied(database, doc(160, [sliver('a_one', 120, { rspec: { cpu_share: 1 } })]));
  t.deepEqual(next.changes.keptNewer, ['sliver_a_one']);
  t.is((next.database.records['sliver_a_one'] as SliverRecord).rspec['cpu_share'], 9);
});

test('updates keep the loans set on the node', (t) => {
  let { database } = applied(emptyDatabase(), doc(100, [sliver('a_one', 90), sliver('a_two', 90)]));
  const one = database.records['sliver_a_one'] as SliverRecord;
  database = { ...database, records: { ...database.records, sliver_a_one: { ...one, loans: [{ recipient: 'a_two', resource: 'cpu_share', amount: 2 }] } } };
  const next = applied(database, doc(200, [sliver('a_one', 190, { rspec: { cpu_share: 7 } }), sliver('a_two', 90)]));
  t.deepEqual(next.changes.updated, ['sliver_a_one']);
  const updated = next.database.records['sliver_a_one'] as SliverRecord;
  t.is(updated.rspec['cpu_share'], 7);
  t.deepEqual(updated.loans, [{ recipient: 'a_two', resource: 'cpu_share', amount: 2 }]);
});

test('expired slivers are not added and are removed at the next sync', (t) => {
  const first = applied(emptyDatabase(), doc(100, [sliver('a_old', 90, { expiry: 500 }), sliver('a_live', 90, { expiry: 5000 })]), 600);
  t.deepEqual(first.changes.added, ['sliver_a_live']);
  const later = expireRecords(first.database.records, 6000);
  t.deepEqual(later.removed, ['sliver_a_live']);
  t.is(later.records['sliver_a_live'], undefined);
  const none = expireRecords(later.records, 6000);
  t.is(none.records, later.records, 'nothing expired: same object, nothing to write');
});

test('applying the same document twice reports no change', (t) => {
  const d = doc(100, [sliver('a_one', 90)]);
  const { database } = applied(emptyDatabase(), d);
  const again = applied(database, d);
  t.deepEqual(again.changes, { added: [], updated: [], removed: [], keptNewer: [], keptInvalid: [] });
  t.is(again.database, database, 'the very same database: nothing downstream has work to do');
  // A document parsed anew (new objects, same contents) is no change either.
  t.is(applied(database, doc(100, [sliver('a_one', 90)])).database, database);
  // One changed sliver makes a new database that still shares every unchanged record.
  const changed = applied(database, doc(101, [sliver('a_one', 90), sliver('a_two', 91)])).database;
  t.not(changed, database);
  t.is(changed.records['sliver_a_one'], database.records['sliver_a_one']);
});

test('the earliest expiry among the records bounds when the next expiry scan is needed', (t) => {
  t.is(earliestExpiry(emptyDatabase().records), null);
  const { database } = applied(emptyDatabase(), doc(100, [sliver('a_one', 90, { expiry: 5000 }), sliver('a_two', 90, { expiry: 3000 }), sliver('a_three', 90)]));
  t.is(earliestExpiry(database.records), 3000);
  t.is(expireRecords(database.records, 2999).records, database.records);
  t.deepEqual(expireRecords(database.records, 3000).removed, ['sliver_a_two']);
});

test('a sliver whose entry turns invalid keeps its last good record', (t) => {
  const { database } = applied(emptyDatabase(), doc(100, [sliver('a_one', 90), sliver('a_two', 90)]));
  const broken: SlicesDocument = {
    ...doc(200, [sliver('a_two', 90)]),
    skipped: [{ what: 'slice "a_one" (id 1)', reason: 'resource "cpu_share" value "-1" is not a decimal integer >= 0', held: { type: 'sliver', name: 'a_one', sliceId: 1 } }],
  };
  const next = applied(database, broken);
  t.deepEqual(next.changes.keptInvalid, ['sliver_a_one']);
  t.deepEqual(next.changes.removed, []);
  t.deepEqual(next.database.records['sliver_a_one'], database.records['sliver_a_one']);
});

test('through the real parser: a slice whose entry lost its name, or whose node id cannot be read, keeps the sliver it names by id', (t) => {
  const parse = (xml: string) => parseSlicesDocument(Buffer.from(xml), { nodeId: 1, maxBytes: 1 << 20, source: 'test' });
  const first = applied(emptyDatabase(), parse('<slices><timestamp value="100"/><slice id="17" name="alpha_web"><node id="1"/></slice><slice id="18" name="beta_web"><node id="1"/></slice></slices>'));
  t.truthy(first.database.records['sliver_alpha_web']);
  // The same slices, one with a name no account may have, the other with an unreadable node id.
  const broken = parse('<slices><timestamp value="200"/><slice id="17" name="Alpha_web"><node id="1"/></slice><slice id="18" name="beta_web"><node id="1_000"/></slice></slices>');
  t.regex(broken.skipped.map((s) => s.reason).join('\n'), /"Alpha_web" is not a valid account name/);
  t.regex(broken.skipped.map((s) => s.reason).join('\n'), /<node> id "1_000" is not a decimal integer >= 0, so the slice may be this node's/);
  const next = applied(first.database, broken);
  t.deepEqual(next.changes.removed, [], 'no sliver goes on an invalid entry');
  t.deepEqual(next.changes.keptInvalid, ['sliver_alpha_web', 'sliver_beta_web']);
  // A valid document that no longer lists them removes them.
  t.deepEqual(applied(next.database, parse('<slices><timestamp value="300"/></slices>')).changes.removed, ['sliver_alpha_web', 'sliver_beta_web']);
});
