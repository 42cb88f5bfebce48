// vc-out.xml as a cluster's nodes read it: pragma's current shape, every value where the guest's
// scripts look for it, text escaped, and a plan a guest could not use refused before any text.
import test from 'ava';
import { XMLParser } from 'fast-xml-parser';
import { clusterMacs } from '../../src/clusters/macs.js';
import { packCluster } from '../../src/clusters/packing.js';
import { parseCidr, subnetOfHost } from '../../src/clusters/subnet.js';
import { computeVcOut, frontendVcOut, vcOutFiles, type VcClusterPlan } from '../../src/clusters/vc-out.js';
import { assembleVcCluster, macRequest } from '../../src/clusters/vc-plan.js';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE user@host';

const SMALL: VcClusterPlan = {
  frontend: {
    name: 'vc7', fqdn: 'vc7.example.org', gateway: '198.202.88.1', interfaces: [
      { network: 'private', ip: '10.1.0.1', mac: '06:76:00:00:00:01' },
      { network: 'public', ip: '198.202.88.50', mac: '06:76:00:00:00:02' },
    ],
  },
  computes: [{ name: 'compute-0', vcpus: 2, gateway: '10.1.0.1', interfaces: [{ network: 'private', ip: '10.1.0.2', mac: '06:76:00:00:00:03' }] }],
  networks: [
    { name: 'private', subnet: parseCidr('10.1.0.0/16', 'private'), mtu: 1500 },
    { name: 'public', subnet: subnetOfHost('198.202.88.50', 24, 'public'), mtu: 1500 },
  ],
  dns: { servers: ['8.8.8.8'], search: 'local', domain: '' },
  sshPublicKey: `${KEY}\n`,
};

test('golden: a frontend and one compute, laid out as pragma (minidom, sorted attributes) wrote it', (t) => {
  const files = vcOutFiles(SMALL);
  t.is(files.frontend, `<?xml version="1.0" ?>
<vc>
  <frontend fqdn="vc7.example.org" gw="198.202.88.1" name="vc7">
    <private ip="10.1.0.1" mac="06:76:00:00:00:01" mtu="1500" netmask="255.255.0.0" subnet="10.1.0.0"/>
    <public ip="198.202.88.50" mac="06:76:00:00:00:02" mtu="1500" netmask="255.255.255.0" subnet="198.202.88.0"/>
  </frontend>
  <compute count="1">
    <node cpus="2" gw="10.1.0.1" name="compute-0">
      <private ip="10.1.0.2" mac="06:76:00:00:00:03" mtu="1500" netmask="255.255.0.0" subnet="10.1.0.0"/>
    </node>
  </compute>
  <network>
    <dns domain="" ip="8.8.8.8" search="local"/>
  </network>
  <key>${KEY}</key>
</vc>
`);
  t.deepEqual(files.computes.map((c) => c.name), ['compute-0']);
  t.is(files.computes[0]!.text, `<?xml version="1.0" ?>
<vc>
  <frontend fqdn="vc7.example.org"/>
  <compute gw="10.1.0.1" name="compute-0">
    <private ip="10.1.0.2" mac="06:76:00:00:00:03" mtu="1500" netmask="255.255.0.0" subnet="10.1.0.0"/>
  </compute>
  <network>
    <dns domain="" ip="8.8.8.8" search="local"/>
  </network>
  <key>${KEY}</key>
</vc>
`);
});

const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', parseAttributeValue: false, parseTagValue: false, isArray: (name) => ['node', 'dns'].includes(name) });
const parse = (text: string): any => parser.parse(text).vc;

function fiveCpuCluster(): VcClusterPlan {
  const packing = packCluster(
    { clusterName: 'vc9', computeCpus: 5, maxComputeCpus: 2, frontendVcpus: 1, memory: { frontendKiB: 1 << 20, computeKiB: 1 << 20 } },
    { vcpus: 8, memoryKiB: 8 << 20 },
  );
  return assembleVcCluster(packing, {
    fqdn: 'vc9.cluster.example.org',
    privateSubnet: parseCidr('192.168.40.0/28', 'private'),
    privateMtu: 9000,
    publicAddress: { ip: '203.0.113.77', prefixLength: 25, gateway: '203.0.113.1', mtu: 1500 },
    dns: { servers: ['192.0.2.53', '192.0.2.54'], search: 'local', domain: 'cluster.example.org' },
    sshPublicKey: 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== root@somehost',
    macs: clusterMacs('vc9', macRequest(packing), []),
  });
}

test("parsed back, the frontend's file holds every value of every node", (t) => {
  const plan = fiveCpuCluster();
  const macs = clusterMacs('vc9', [{ name: 'vc9', interfaces: 2 }, ...[0, 1, 2].map((i) => ({ name: `compute-${i}`, interfaces: 1 }))], []);
  const vc = parse(frontendVcOut(plan));
  const privateNet = { mtu: '9000', netmask: '255.255.255.240', subnet: '192.168.40.0' };
  t.deepEqual(vc.frontend, {
    fqdn: 'vc9.cluster.example.org', name: 'vc9', gw: '203.0.113.1',
    private: { ip: '192.168.40.1', mac: macs[0]!.macs[0], ...privateNet },
    public: { ip: '203.0.113.77', mac: macs[0]!.macs[1], mtu: '1500', netmask: '255.255.255.128', subnet: '203.0.113.0' },
  });
  t.is(vc.compute.count, '3');
  t.deepEqual(vc.compute.node, [0, 1, 2].map((i) => ({
    name: `compute-${i}`, cpus: ['2', '2', '1'][i], gw: '192.168.40.1',
    private: { ip: `192.168.40.${i + 2}`, mac: macs[i + 1]!.macs[0], ...privateNet },
  })));
  t.deepEqual(vc.network.dns, [
    { ip: '192.0.2.53', search: 'local', domain: 'cluster.example.org' },
    { ip: '192.0.2.54', search: 'local', domain: 'cluster.example.org' },
  ]);
  t.is(vc.key, 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== root@somehost');
});

test("parsed back, a compute's file holds its own interface and gateway, the frontend's fqdn, no cpus", (t) => {
  const plan = fiveCpuCluster();
  const vc = parse(computeVcOut(plan, 'compute-2'));
  t.deepEqual(vc.frontend, { fqdn: 'vc9.cluster.example.org' });
  t.deepEqual(vc.compute, {
    name: 'compute-2', gw: '192.168.40.1',
    private: { ip: '192.168.40.4', mac: plan.computes[2]!.interfaces[0]!.mac, mtu: '9000', netmask: '255.255.255.240', subnet: '192.168.40.0' },
  });
  t.is(vc.network.dns.length, 2);
  t.is(vc.key, plan.sshPublicKey);
  t.throws(() => computeVcOut(plan, 'compute-3'), { message: 'vc-out: compute: the cluster has no compute named "compute-3"' });
});

test('text and attributes are escaped and read back unchanged', (t) => {
  const plan: VcClusterPlan = {
    ...SMALL,
    dns: { servers: ['8.8.8.8'], search: 'a"b\'c<d>&e', domain: '' },
    sshPublicKey: 'ssh-ed25519 AAAAC3Nz alice & bob <lab>',
  };
  const text = frontendVcOut(plan);
  t.true(text.includes('<key>ssh-ed25519 AAAAC3Nz alice &amp; bob &lt;lab&gt;</key>'));
  const back = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', processEntities: true, isArray: (n) => n === 'dns' }).parse(text).vc;
  t.is(back.key, 'ssh-ed25519 AAAAC3Nz alice & bob <lab>');
  t.is(back.network.dns[0].search, 'a"b\'c<d>&e');
});

test('a frontend alone: compute count 0', (t) => {
  const vc = parse(frontendVcOut({ ...SMALL, computes: [] }));
  t.is(vc.compute.count, '0');
  t.is(vc.compute.node, undefined);
});

test('a plan a guest could not use is refused, naming the field', (t) => {
  const fe = SMALL.frontend;
  const c0 = SMALL.computes[0]!;
  const cases: [Partial<VcClusterPlan>, RegExp][] = [
    [{ frontend: { ...fe, interfaces: [{ ...fe.interfaces[0]!, ip: '10.2.0.1' }, fe.interfaces[1]!] } }, /vc7 interface 0: 10\.2\.0\.1 is not a host address of private's subnet 10\.1\.0\.0\/16/],
    [{ computes: [{ ...c0, interfaces: [{ ...c0.interfaces[0]!, ip: '10.1.0.1' }] }] }, /compute-0 interface 0: 10\.1\.0\.1 is also vc7's/],
    [{ computes: [{ ...c0, interfaces: [{ ...c0.interfaces[0]!, mac: '06:76:00:00:00:01' }] }] }, /MAC 06:76:00:00:00:01 is also vc7's/],
    [{ computes: [{ ...c0, interfaces: [{ ...c0.interfaces[0]!, mac: '06:76:00:00:00:AA' }] }] }, /must be written as 06:76:00:00:00:aa/],
    [{ computes: [{ ...c0, interfaces: [{ ...c0.interfaces[0]!, mac: '07:76:00:00:00:03' }] }] }, /multicast/],
    [{ computes: [{ ...c0, gateway: '198.202.88.1' }] }, /compute-0 gateway: 198\.202\.88\.1 is on none of its networks \(private\)/],
    [{ computes: [{ ...c0, interfaces: [{ ...c0.interfaces[0]!, network: 'openflow' }] }] }, /network "openflow" is not one of the cluster's \(private, public\)/],
    [{ computes: [{ ...c0, vcpus: 0 }] }, /compute-0: 0 vCPUs/],
    [{ computes: [c0, c0] }, /compute-0: two nodes have this name/],
    [{ frontend: { ...fe, fqdn: 'vc7' } }, /frontend fqdn: "vc7" is not a fully qualified domain name/],
    [{ frontend: { ...fe, name: 'vc_7' } }, /frontend name: "vc_7" is not a host name/],
    [{ networks: [SMALL.networks[0]!, { ...SMALL.networks[1]!, mtu: 40 }] }, /network public: MTU 40 is not 68-65535/],
    [{ networks: [SMALL.networks[0]!, { ...SMALL.networks[1]!, name: 'Bad Name' }] }, /network Bad Name: a network name is/],
    [{ dns: { ...SMALL.dns, servers: [] } }, /dns: no name server/],
    [{ dns: { ...SMALL.dns, servers: ['dns.example.org'] } }, /dns server 0: "dns\.example\.org" is not an IPv4 address/],
    [{ sshPublicKey: 'ssh-ed25519 AAAA a\nssh-rsa BBBB b' }, /key: not one OpenSSH public key line/],
    [{ sshPublicKey: '-----BEGIN OPENSSH PRIVATE KEY-----' }, /key: not one OpenSSH public key line/],
  ];
  for (const [change, message] of cases) {
    t.throws(() => frontendVcOut({ ...SMALL, ...change }), { message }, String(message));
  }
});

test('assembling refuses a private subnet too small and a MAC list that does not fit the nodes', (t) => {
  const packing = packCluster(
    { clusterName: 'vc9', computeCpus: 4, maxComputeCpus: 1, frontendVcpus: 1, memory: { frontendKiB: 1024, computeKiB: 1024 } },
    { vcpus: 8, memoryKiB: 1 << 20 },
  );
  const addressing = {
    fqdn: 'vc9.example.org',
    privateSubnet: parseCidr('10.0.0.0/30', 'private'),
    privateMtu: 1500,
    publicAddress: { ip: '203.0.113.77', prefixLength: 24, gateway: '203.0.113.1', mtu: 1500 },
    dns: { servers: ['192.0.2.53'], search: 'local', domain: '' },
    sshPublicKey: KEY,
    macs: clusterMacs('vc9', macRequest(packing), []),
  };
  t.throws(() => assembleVcCluster(packing, addressing), { message: 'subnet 10.0.0.0/30 has 2 usable addresses; the cluster needs 5' });
  const roomy = { ...addressing, privateSubnet: parseCidr('10.0.0.0/29', 'private') };
  t.is(assembleVcCluster(packing, roomy).computes.at(-1)!.interfaces[0]!.ip, '10.0.0.5');
  t.throws(() => assembleVcCluster(packing, { ...roomy, macs: roomy.macs.slice(0, 3) }), { message: 'compute-2: 1 MAC expected, 0 given' });
  t.throws(() => assembleVcCluster(packing, { ...roomy, publicAddress: { ...roomy.publicAddress, gateway: '198.51.100.1' } }), {
    message: /vc9 gateway: 198\.51\.100\.1 is on none of its networks \(private, public\)/,
  });
});
