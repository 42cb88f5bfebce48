// A virtual cluster's MACs: stable for the same cluster, distinct on the host, refused only when no
// candidate is free.
import test from 'ava';
import { parseMac } from '../../src/addresses/pool.js';
import { CLUSTER_MAC_PREFIX, MAC_CANDIDATES, clusterMacs, derivedMac } from '../../src/clusters/macs.js';

const NODES = [
  { name: 'vc7', interfaces: 2 },
  { name: 'compute-0', interfaces: 1 },
  { name: 'compute-1', interfaces: 1 },
];

test('the same cluster id gives the same MACs; another id gives others', (t) => {
  const first = clusterMacs('vc7', NODES, []);
  t.deepEqual(clusterMacs('vc7', NODES, []), first);
  t.deepEqual(first.map((n) => [n.name, n.macs.length]), [['vc7', 2], ['compute-0', 1], ['compute-1', 1]]);
  const other = clusterMacs('vc8', NODES, []).flatMap((n) => n.macs);
  for (const mac of first.flatMap((n) => n.macs)) t.false(other.includes(mac));
});

test('every MAC is a unicast, locally administered address under the cluster prefix, all distinct', (t) => {
  const macs = clusterMacs('cluster-42', [{ name: 'fe', interfaces: 2 }, ...Array.from({ length: 50 }, (_, i) => ({ name: `compute-${i}`, interfaces: 1 }))], [])
    .flatMap((n) => n.macs);
  t.is(new Set(macs).size, 52);
  for (const mac of macs) {
    const parsed = parseMac(mac);
    t.true(parsed.ok && parsed.mac === mac, mac);
    t.true(mac.startsWith(`${CLUSTER_MAC_PREFIX}:`));
    const firstOctet = parseInt(mac.slice(0, 2), 16);
    t.is(firstOctet & 1, 0); // unicast
    t.is(firstOctet & 2, 2); // locally administered
  }
});

test('growing a cluster leaves the MACs of the nodes it had', (t) => {
  const small = clusterMacs('vc7', NODES.slice(0, 2), []);
  const large = clusterMacs('vc7', NODES, []);
  t.deepEqual(large.slice(0, 2), small);
});

test('a derived MAC in use on the host is passed over for the next candidate, in any spelling', (t) => {
  const usual = derivedMac('vc7', 1, 0, 0);
  const inUse = [usual.toUpperCase().replaceAll(':', '-')];
  const macs = clusterMacs('vc7', NODES, inUse);
  t.is(macs[1]!.macs[0], derivedMac('vc7', 1, 0, 1));
  t.not(macs[1]!.macs[0], usual);
  // The others are untouched.
  t.deepEqual(macs[0]!.macs, clusterMacs('vc7', NODES, [])[0]!.macs);
});

test('a collision that cannot be avoided is refused, naming the node and the interface', (t) => {
  const every = Array.from({ length: MAC_CANDIDATES }, (_, attempt) => derivedMac('vc7', 0, 1, attempt));
  const error = t.throws(() => clusterMacs('vc7', NODES, every));
  t.is(error?.message, `no free MAC for vc7 (interface 1) of cluster vc7: all ${MAC_CANDIDATES} candidates, from ${every[0]}, are in use on this host`);
});

test('bad input is refused', (t) => {
  t.throws(() => clusterMacs('', NODES, []), { message: /cluster id must be non-empty/ });
  t.throws(() => clusterMacs('vc7', [{ name: 'compute-0', interfaces: 9 }], []), { message: 'compute-0: 9 interfaces asked for; a node may have 0 to 8' });
});
