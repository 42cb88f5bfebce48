// The pure parts of the fleet rehearsal (bench/fleet.ts): its document as a node reads it, the
// push request as the API decodes it, the access log read as poll cycles, and the arithmetic.
import test from 'ava';
import { decodeCall, encodeFault, encodeResponse } from '../../src/api/codec.js';
import { parseSlicesDocument } from '../../src/slices/parse.js';
import { fleetDocument, sliversOf, timestampOf } from '../../bench/lib/fleet-document.js';
import { authorityLoad, bytesText, parseAccessLog, pollCycle, spreadOf } from '../../bench/lib/fleet-figures.js';
import { nodeAddress } from '../../bench/lib/fleet-net.js';
import { deliverSlicesRequest, inParallel, readPushAnswer } from '../../bench/lib/fleet-push.js';
import { createUndoStack } from '../../bench/lib/undo-stack.js';
import { ed25519KeyLine } from '../support/ssh-keys.js';

const delegate = { name: 'fleet_plc', key: ed25519KeyLine(7, 'plc@example.org') };

test('each node of the fleet document finds its own one or two slivers and the authority delegate', (t) => {
  const xml = fleetDocument({ nodes: 10, version: 3, delegate });
  for (const node of [1, 2, 10]) {
    const doc = parseSlicesDocument(xml, { nodeId: node, maxBytes: 1 << 20 });
    t.deepEqual(doc.slivers.map((s) => s.name), sliversOf(node));
    t.deepEqual(doc.delegates.map((d) => d.name), ['fleet_plc']);
    t.is(doc.timestamp, timestampOf(3));
    t.deepEqual(doc.skipped, [], 'nothing in the document is refused');
    t.is(doc.slicesSeen, 15);
  }
  t.is(parseSlicesDocument(xml, { nodeId: 11, maxBytes: 1 << 20 }).slivers.length, 0);
});

test('a new version of the fleet document changes every sliver and nothing else', (t) => {
  const [before, after] = [4, 5].map((version) => parseSlicesDocument(fleetDocument({ nodes: 4, version, delegate }), { nodeId: 4, maxBytes: 1 << 20 }));
  t.not(before!.slivers[0]!.rspec['cpu_share'], after!.slivers[0]!.rspec['cpu_share']);
  t.deepEqual(before!.slivers.map((s) => s.keys), after!.slivers.map((s) => s.keys));
  t.true(after!.timestamp > before!.timestamp);
  t.throws(() => fleetDocument({ nodes: 0, version: 1, delegate }), { message: /nodes must be a whole number >= 1, not 0/ });
});

test('the push request is a DeliverSlices call the API decodes to the document and signature, byte for byte', (t) => {
  const document = `${fleetDocument({ nodes: 2, version: 1, delegate })}<!-- & < > -->`;
  const call = decodeCall(Buffer.from(deliverSlicesRequest(document, 'c2lnbmF0dXJl')));
  t.is(call.method, 'DeliverSlices');
  t.deepEqual(call.params, [document, 'c2lnbmF0dXJl']);
});

test('the answer of a push is read as its outcome, or as the fault the node gave', (t) => {
  t.deepEqual(readPushAnswer(encodeResponse({ outcome: 'applied', detail: '2 slivers' })), { outcome: 'applied' });
  t.deepEqual(readPushAnswer(encodeFault(108, 'permission denied: not the authority delegate')), { fault: 'fault 108: permission denied: not the authority delegate' });
  t.regex((readPushAnswer('Permission denied (publickey).') as { fault: string }).fault, /not a DeliverSlices answer/);
});

// nginx writes a quote inside a value as \x22.
const LOG = [
  '1700000000.100 10.213.0.2 304 180 183 "W/\\x22abc\\x22" "Tue, 14 Nov 2023 22:13:20 GMT" "-" "/slices.xml"',
  '1700000001.000 10.213.0.3 200 180 1500 "W/\\x22abc\\x22" "Tue, 14 Nov 2023 22:13:20 GMT" "gzip" "/slices.xml"',
  '1700000002.000 10.213.0.2 200 180 4200 "-" "-" "-" "/slices.xml"',
  '1700000003.000 10.213.0.1 200 90 1500 "-" "-" "gzip" "/slices.xml?probe"',
  '',
].join('\n');

test('a poll cycle is each node\'s first request of the document from its start on', (t) => {
  const entries = parseAccessLog(LOG);
  t.is(entries.length, 4);
  t.true(entries[0]!.ifNoneMatch && entries[0]!.ifModifiedSince && !entries[0]!.gzip);
  const all = pollCycle(entries, '/slices.xml', 1_700_000_000);
  t.deepEqual(all, { requests: 2, byStatus: { 304: 1, 200: 1 }, gzipped: 1, conditional: 2, requestBytes: 360, responseBytes: 1683 });
  const later = pollCycle(entries, '/slices.xml', 1_700_000_000.5);
  t.deepEqual(later.byStatus, { 200: 2 });
  t.is(later.conditional, 1, 'the unconditional fetch is counted as such');
});

test('an access log line not in the fleet format is an error naming its line', (t) => {
  t.throws(() => parseAccessLog(`${LOG}10.213.0.2 - - [14/Nov/2023] "GET /slices.xml" 200\n`), { message: /^access log line 5 is not in the fleet format/ });
});

test('spreads, loads and sizes', (t) => {
  t.deepEqual(spreadOf([5, 1, 4, 2, 3]), { count: 5, p50: 3, p95: 5, max: 5 });
  t.deepEqual(spreadOf(Array.from({ length: 100 }, (_, i) => i + 1)), { count: 100, p50: 50, p95: 95, max: 100 });
  t.throws(() => spreadOf([]), { message: /no values/ });
  // 1,000 nodes every 900 s + up to 60 s of jitter: a mean interval of 930 s.
  const load = authorityLoad(1_000, 465, 900, 60);
  t.is(load.requestsPerSecond, 1_000 / 930);
  t.is(load.bytesPerSecond, (1_000 * 465) / 930);
  t.is(bytesText(999), '999 B');
  t.is(bytesText(1_500), '1.5 kB');
  t.is(bytesText(123_456_789), '123 MB');
});

test('node addresses run on from the bridge\'s through the /16', (t) => {
  t.is(nodeAddress(1), '10.213.0.2');
  t.is(nodeAddress(254), '10.213.0.255');
  t.is(nodeAddress(255), '10.213.1.0');
  t.throws(() => nodeAddress(0), { message: /outside 1\.\.65000/ });
});

test('inParallel keeps the order of the items and never runs more than asked', async (t) => {
  let running = 0;
  let most = 0;
  const results = await inParallel([30, 10, 20, 5, 15], 2, async (ms) => {
    most = Math.max(most, ++running);
    await new Promise((r) => setTimeout(r, ms));
    running--;
    return ms * 2;
  });
  t.deepEqual(results, [60, 20, 40, 10, 30]);
  t.is(most, 2);
});

test('the undo stack undoes newest first, goes on past a failure and undoes nothing twice', async (t) => {
  const done: string[] = [];
  const reports: string[] = [];
  const undo = createUndoStack((line) => reports.push(line));
  undo.push('bridge', async () => void done.push('bridge'));
  undo.push('nginx', async () => {
    throw new Error('no pid file');
  });
  undo.push('daemons', async () => void done.push('daemons'));
  await undo.unwind();
  await undo.unwind();
  t.deepEqual(done, ['daemons', 'bridge']);
  t.deepEqual(reports, ['cleanup: nginx failed: no pid file']);
});
