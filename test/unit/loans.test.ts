import test from 'ava';
import { effectiveRspecs } from '../../src/rspec/loans.js';

const alice = { name: 'princeton_alice', rspec: { cpu_share: 30, net_max_rate: 1000 }, loans: [] };
const bob = { name: 'princeton_bob', rspec: { cpu_share: 10 }, loans: [] };

test('a loan moves an amount from lender to recipient', (t) => {
  const { effective, rejected } = effectiveRspecs([
    { ...alice, loans: [{ recipient: 'princeton_bob', resource: 'cpu_share', amount: 20 }] },
    bob,
  ]);
  t.deepEqual(rejected, []);
  t.is(effective.get('princeton_alice')!['cpu_share'], 10);
  t.is(effective.get('princeton_bob')!['cpu_share'], 30);
  t.is(effective.get('princeton_alice')!['net_max_rate'], 1000, 'other resources are untouched');
});

test('defaults fill what the rspec does not say', (t) => {
  const { effective } = effectiveRspecs([bob]);
  const rspec = effective.get('princeton_bob')!;
  t.is(rspec['enabled'], 1);
  t.is(rspec['cpu_pct'], 0);
  t.is(rspec['net_share'], 1);
});

test('the lender keeps at least the minimum allocation', (t) => {
  const { effective, rejected } = effectiveRspecs([
    { ...alice, loans: [{ recipient: 'princeton_bob', resource: 'cpu_share', amount: 30 }] },
    bob,
  ]);
  t.is(rejected.length, 1);
  t.regex(rejected[0]!.reason, /would leave princeton_alice 0 .*must keep 1/);
  t.is(effective.get('princeton_alice')!['cpu_share'], 30, 'a rejected loan changes nothing');
  t.is(effective.get('princeton_bob')!['cpu_share'], 10);

  const rate = effectiveRspecs([
    { ...alice, loans: [{ recipient: 'princeton_bob', resource: 'net_max_rate', amount: 995 }] },
    bob,
  ]);
  t.regex(rate.rejected[0]!.reason, /must keep 8/);
});

test('received amounts cannot be re-loaned', (t) => {
  const { effective, rejected } = effectiveRspecs([
    { ...alice, loans: [{ recipient: 'princeton_bob', resource: 'cpu_share', amount: 20 }] },
    { ...bob, loans: [{ recipient: 'princeton_alice', resource: 'cpu_share', amount: 25 }] },
  ]);
  t.is(rejected.length, 1);
  t.is(rejected[0]!.lender, 'princeton_bob');
  t.is(effective.get('princeton_bob')!['cpu_share'], 30);
  t.is(effective.get('princeton_alice')!['cpu_share'], 10);
});

test('several loans of one resource add up against what the lender has', (t) => {
  const { effective, rejected } = effectiveRspecs([
    {
      ...alice,
      loans: [
        { recipient: 'princeton_bob', resource: 'cpu_share', amount: 15 },
        { recipient: 'princeton_bob', resource: 'cpu_share', amount: 15 },
      ],
    },
    bob,
  ]);
  t.is(rejected.length, 1, 'the second loan would leave 0');
  t.is(effective.get('princeton_alice')!['cpu_share'], 15);
  t.is(effective.get('princeton_bob')!['cpu_share'], 25);
});

test('malformed loans are rejected with a reason naming what is wrong', (t) => {
  const { rejected } = effectiveRspecs([
    {
      ...alice,
      loans: [
        { recipient: 'nobody_here', resource: 'cpu_share', amount: 1 },
        { recipient: 'princeton_bob', resource: 'disk_max', amount: 1 },
        { recipient: 'princeton_bob', resource: 'bogus', amount: 1 },
        { recipient: 'princeton_bob', resource: 'cpu_share', amount: -1 },
        { recipient: 'princeton_bob', resource: 'cpu_share', amount: 1.5 },
        { recipient: 'princeton_alice', resource: 'cpu_share', amount: 1 },
      ],
    },
    bob,
  ]);
  t.deepEqual(
    rejected.map((r) => r.reason),
    [
      'recipient "nobody_here" is not a sliver on this node',
      'resource "disk_max" cannot be loaned',
      'resource "bogus" is not known',
      'amount -1 is not a non-negative integer',
      'amount 1.5 is not a non-negative integer',
      'a sliver cannot lend to itself',
    ],
  );
});
