// Reading tc's class listing back: rates as tc prints them, counters, and only our own classes.
import test from 'ava';
import { parseClassListing, parseTcRate } from '../../src/limits/tc.js';

// `tc -s -d class show dev nmv0` from iproute2 6.1, with a class of another major mixed in.
const LISTING = `class htb 4e4d:100 parent 4e4d:1 leaf 100: prio 0 quantum 20000 rate 8bit ceil 5Mbit linklayer ethernet burst 225b/1 mpu 0b cburst 1600b/1 mpu 0b level 0 
 Sent 123456 bytes 99 pkt (dropped 0, overlimits 0 requeues 0) 
 backlog 0b 0p requeues 0
 lended: 0 borrowed: 0 giants: 0
 tokens: 2147483647 ctokens: 40000

class htb 4e4d:1 root rate 1234Kbit ceil 1Gbit linklayer ethernet burst 1599b/1 mpu 0b cburst 1375b/1 mpu 0b level 7 
 Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) 
 backlog 0b 0p requeues 0
 lended: 0 borrowed: 0 giants: 0
 tokens: 162000 ctokens: 187

class htb 1:10 root rate 10Mbit ceil 10Mbit linklayer ethernet burst 1600b/1 mpu 0b cburst 1600b/1 mpu 0b level 0 
 Sent 5 bytes 1 pkt (dropped 0, overlimits 0 requeues 0) 
`;

test('tc rates are SI multiples of bits per second', (t) => {
  t.is(parseTcRate('8bit'), 8);
  t.is(parseTcRate('1234Kbit'), 1_234_000);
  t.is(parseTcRate('5Mbit'), 5_000_000);
  t.is(parseTcRate('1.5Gbit'), 1_500_000_000);
  t.throws(() => parseTcRate('5MBps'), { message: /not a tc rate/ });
});

test('the listing gives our classes with parent, rates, quantum and bytes sent', (t) => {
  const classes = parseClassListing(LISTING, '4e4d');
  t.deepEqual([...classes.keys()], [0x100, 0x1]);
  t.deepEqual(classes.get(0x100), { minor: 0x100, parentMinor: 0x1, rateBit: 8, ceilBit: 5_000_000, quantum: 20_000, sentBytes: 123_456 });
  t.is(classes.get(0x1)!.parentMinor, null);
  t.is(classes.get(0x1)!.quantum, null);
});
