// A virtual cluster's private network: the addresses its nodes get for every prefix length, and the
// subnets it refuses before anything is made.
import test from 'ava';
import {
  computeAddress, frontendAddress, parseCidr, prefixOfNetmask, privateGateway, requireRoom, subnetFromNetmask, subnetOfHost,
  usableAddress,
} from '../../src/clusters/subnet.js';

test('a /16 as pragma used it: the frontend first, computes after it, the frontend as gateway', (t) => {
  const subnet = parseCidr('10.1.0.0/16', 'private');
  t.deepEqual(subnet, { network: '10.1.0.0', prefixLength: 16, netmask: '255.255.0.0', broadcast: '10.1.255.255', usableHosts: 65534 });
  t.is(frontendAddress(subnet), '10.1.0.1');
  t.is(computeAddress(subnet, 0), '10.1.0.2');
  t.is(computeAddress(subnet, 254), '10.1.1.0'); // crossing an octet boundary stays inside the /16
  t.is(privateGateway(subnet), '10.1.0.1');
  t.is(usableAddress(subnet, 65533), '10.1.255.254');
  t.throws(() => usableAddress(subnet, 65534), { message: /has 65534 usable addresses; there is no address number 65535/ });
});

test('a /8: carries across three octets', (t) => {
  const subnet = parseCidr('10.0.0.0/8', 'private');
  t.is(subnet.netmask, '255.0.0.0');
  t.is(subnet.broadcast, '10.255.255.255');
  t.is(subnet.usableHosts, 16777214);
  t.is(computeAddress(subnet, 65535), '10.1.0.1');
  t.is(usableAddress(subnet, 16777213), '10.255.255.254');
});

test('a /24: every address inside it, unlike pragma (which gave 10.102.1.1 and 10.102.255.254 for 10.102.0.0/24)', (t) => {
  const subnet = parseCidr('10.102.0.0/24', 'add-iface');
  t.is(frontendAddress(subnet), '10.102.0.1');
  t.is(computeAddress(subnet, 0), '10.102.0.2');
  t.is(usableAddress(subnet, 253), '10.102.0.254');
  t.is(subnet.broadcast, '10.102.0.255');
  t.is(subnet.usableHosts, 254);
});

test('a /28 and a /30 given as address and netmask', (t) => {
  const small = subnetFromNetmask('192.168.7.16', '255.255.255.240', 'private');
  t.deepEqual(small, { network: '192.168.7.16', prefixLength: 28, netmask: '255.255.255.240', broadcast: '192.168.7.31', usableHosts: 14 });
  t.is(frontendAddress(small), '192.168.7.17');
  t.is(computeAddress(small, 12), '192.168.7.30');
  t.throws(() => computeAddress(small, 13), { message: /192\.168\.7\.16\/28 has 14 usable addresses/ });

  const tiny = subnetFromNetmask('10.0.0.0', '255.255.255.252', 'private');
  t.is(tiny.prefixLength, 30);
  t.is(tiny.usableHosts, 2);
  t.is(frontendAddress(tiny), '10.0.0.1');
  t.is(computeAddress(tiny, 0), '10.0.0.2');
});

test('a subnet too small for the cluster is refused with both numbers', (t) => {
  const tiny = parseCidr('10.0.0.0/30', 'private');
  t.notThrows(() => requireRoom(tiny, 2));
  t.throws(() => requireRoom(tiny, 4), { message: 'subnet 10.0.0.0/30 has 2 usable addresses; the cluster needs 4' });
});

test('/31 and /32 are refused: no host address beside network and broadcast', (t) => {
  t.throws(() => parseCidr('10.0.0.0/31', 'private'), { message: 'private: subnet 10.0.0.0/31 has no usable host addresses (a cluster network needs /30 or shorter)' });
  t.throws(() => parseCidr('10.0.0.7/32', 'private'), { message: /subnet 10\.0\.0\.7\/32 has no usable host addresses/ });
  t.throws(() => subnetFromNetmask('10.0.0.0', '255.255.255.255', 'private'), { message: /\/32 has no usable host addresses/ });
});

test('an address that is not the network address is refused, naming the network it belongs to', (t) => {
  t.throws(() => parseCidr('10.1.1.1/16', 'private'), { message: 'private: 10.1.1.1 is not the network address of a /16 (that network is 10.1.0.0)' });
  t.throws(() => subnetFromNetmask('192.168.7.20', '255.255.255.240', 'private'), {
    message: /192\.168\.7\.20 is not the network address of a \/28 \(that network is 192\.168\.7\.16\)/,
  });
  // Aligned on its own prefix but not on an octet: fine.
  t.is(parseCidr('10.0.5.0/24', 'private').broadcast, '10.0.5.255');
  t.is(parseCidr('172.16.32.0/19', 'private').broadcast, '172.16.63.255');
});

test('netmasks: contiguous ones only', (t) => {
  t.is(prefixOfNetmask('255.255.255.0', 'm'), 24);
  t.is(prefixOfNetmask('255.255.192.0', 'm'), 18);
  t.is(prefixOfNetmask('0.0.0.0', 'm'), 0);
  t.throws(() => prefixOfNetmask('255.0.255.0', 'netmask'), { message: 'netmask: netmask 255.0.255.0 is not contiguous (it must be ones followed by zeros, e.g. 255.255.255.0)' });
  t.throws(() => prefixOfNetmask('0.255.255.255', 'netmask'), { message: /not contiguous/ });
});

test('malformed text is refused with the field and the reason', (t) => {
  t.throws(() => parseCidr('10.1.0.0', 'private'), { message: /private: "10\.1\.0\.0" is not a subnet in CIDR form/ });
  t.throws(() => parseCidr('10.1.0.0/33', 'private'), { message: /"\/33" is not a prefix length/ });
  t.throws(() => parseCidr('10.1.0.0/', 'private'), { message: /is not a prefix length/ });
  t.throws(() => parseCidr('10.1.0/16', 'private'), { message: /"10\.1\.0" is not an IPv4 address/ });
  t.throws(() => parseCidr('10.256.0.0/16', 'private'), { message: /octet "256"/ });
  t.throws(() => parseCidr('010.1.0.0/16', 'private'), { message: /octet "010" is not a number 0-255 without leading zeros/ });
  t.throws(() => subnetFromNetmask('10.1.0.0', '255.255.0', 'netmask'), { message: /netmask: "255\.255\.0" is not an IPv4 address/ });
});

test('the subnet of a host address from the node pool (the public network)', (t) => {
  t.deepEqual(subnetOfHost('198.202.88.50', 24, 'public'), {
    network: '198.202.88.0', prefixLength: 24, netmask: '255.255.255.0', broadcast: '198.202.88.255', usableHosts: 254,
  });
  t.throws(() => subnetOfHost('198.202.88.255', 24, 'public'), { message: /198\.202\.88\.255 is the broadcast address of 198\.202\.88\.0\/24/ });
  t.throws(() => subnetOfHost('198.202.88.0', 24, 'public'), { message: /is the network address/ });
});
