// A libvirt sliver's shape and domain XML: sizes and rspec overrides, what the XML says and what we
// read back from libvirt's own XML, and that hostile names and paths stay text.
import test from 'ava';
import { XMLValidator } from 'fast-xml-parser';
import { sliverLimits } from '../../src/limits/sliver-limits.js';
import { withDefaults, type Rspec } from '../../src/rspec/resources.js';
import {
  buildDomainXml, escapeXml, readDomainDetails, type DomainPlan, type LxcDomainPlan, type QemuDomainPlan,
} from '../../src/runtimes/libvirt/domain-xml.js';
import { guestCpuShares, guestShape, INSTANCE_SIZES, type GuestShape } from '../../src/runtimes/libvirt/shape.js';

function shapeOf(rspec: Rspec, size: string | null = null, cpuShares?: number): GuestShape {
  const result = guestShape(withDefaults(rspec), size, cpuShares === undefined ? {} : { cpuShares });
  if (!result.ok) throw new Error(result.reason);
  return result.shape;
}

function reasonOf(rspec: Rspec, size: string | null = null): string {
  const result = guestShape(withDefaults(rspec), size);
  return result.ok ? '(accepted)' : result.reason;
}

const MARKER = { name: 'princeton_sirius', runtime: 'qemu', spec: 'sha256:0f1e', created: '2024-05-01T12:00:00.000Z', guestDir: '/var/lib/nodemgr/guests' };

function qemuPlan(more: Partial<QemuDomainPlan> = {}): QemuDomainPlan {
  return {
    driver: 'qemu',
    name: 'princeton_sirius',
    uuid: '6f1c2b9e-3a4d-4e5f-8a7b-1c2d3e4f5a6b',
    marker: MARKER,
    shape: shapeOf({ cpu_share: 4, cpu_cap: 150, net_max_rate: 8_000 }, 'medium'),
    interfaces: [
      { mac: '52:54:00:00:02:0B', targetDev: 'nm-sirius0', bridge: 'br0' },
      { mac: '52:54:00:00:02:0c', targetDev: 'nm-sirius1', bridge: null },
    ],
    boot: { kernel: '/var/lib/nodemgr/images/k1', initrd: '/var/lib/nodemgr/images/i1', cmdline: 'console=ttyS0 quiet' },
    disks: [{ path: '/var/lib/nodemgr/guests/princeton_sirius/overlay.qcow2', format: 'qcow2' }],
    consoleLog: '/var/lib/nodemgr/guests/princeton_sirius/console.log',
    vnc: true,
    ...more,
  };
}

function lxcPlan(more: Partial<LxcDomainPlan> = {}): LxcDomainPlan {
  return {
    driver: 'lxc',
    name: 'princeton_lxc',
    uuid: '6f1c2b9e-3a4d-4e5f-8a7b-1c2d3e4f5a6c',
    marker: { ...MARKER, name: 'princeton_lxc', runtime: 'lxc' },
    shape: shapeOf({ cpu_cap: 50 }),
    interfaces: [{ mac: '52:54:00:00:02:0d', targetDev: 'nm-lxc0', bridge: null }],
    init: '/sbin/init',
    initArgs: ['--ready', 'two words'],
    rootDir: '/var/lib/nodemgr/guests/princeton_lxc/root',
    ...more,
  };
}

function wellFormed(xml: string): boolean {
  return XMLValidator.validate(xml) === true;
}

// ---- shape -----------------------------------------------------------------------------------

test('instance sizes: small by default, medium and large as the issue gives them', (t) => {
  t.deepEqual(INSTANCE_SIZES, {
    small: { memoryKiB: 524_288, vcpus: 1 },
    medium: { memoryKiB: 1_048_576, vcpus: 2 },
    large: { memoryKiB: 2_097_152, vcpus: 4 },
  });
  for (const size of [null, '', 'small']) t.like(shapeOf({}, size), { size: 'small', memoryKiB: 524_288, vcpus: 1 });
  t.like(shapeOf({}, 'large'), { size: 'large', memoryKiB: 2_097_152, vcpus: 4 });
  t.is(reasonOf({}, 'huge'), 'unknown instance_size "huge" (one of small, medium, large)');
  t.is(reasonOf({}, 'constructor'), 'unknown instance_size "constructor" (one of small, medium, large)');
});

test('the rspec overrides the size: vcpus, and mem_max in KiB (0 meaning the size\'s)', (t) => {
  t.like(shapeOf({ vcpus: 3, mem_max: 786_432 }, 'small'), { size: 'small', vcpus: 3, memoryKiB: 786_432 });
  t.like(shapeOf({ vcpus: 0, mem_max: 0 }, 'medium'), { vcpus: 2, memoryKiB: 1_048_576 });
  t.regex(reasonOf({ mem_max: 512 }), /mem_max is 512 KiB, less than the 16384 KiB a guest needs/);
});

test('no CPU cap, no bandwidth limit by default; the weight of cpu_share 1 is the cgroup default', (t) => {
  const shape = shapeOf({});
  t.is(shape.cpuQuotaUs, null);
  t.is(shape.bandwidth, null);
  t.is(shape.cpuShares, 1024);
  t.is(shape.cpuPeriodUs, 100_000);
});

test('cpu_cap is a quota of the whole guest per 100 ms period', (t) => {
  t.is(shapeOf({ cpu_cap: 50 }).cpuQuotaUs, 50_000);
  t.is(shapeOf({ cpu_cap: 250 }, 'large').cpuQuotaUs, 250_000);
});

test('CPU weights of guests follow the cgroups of unix slivers: the same numbers for the same rspecs', (t) => {
  const rspecs = { a: withDefaults({ cpu_share: 1 }), b: withDefaults({ cpu_share: 3 }), c: withDefaults({ cpu_share: 2, cpu_pct: 20 }) };
  const guests = Object.entries(rspecs).map(([name, rspec]) => ({ name, rspec }));
  const shares = guestCpuShares(guests, 2);
  const unix = sliverLimits(guests.map((g, i) => ({ ...g, uid: 1000 + i })), 2);
  for (const u of unix) t.is(shares.get(u.name), u.cgroup.cpuShares, u.name);
  const b = shapeOf({ cpu_share: 3 }, null, shares.get('b'));
  t.is(b.cpuShares, shares.get('b')!);
  t.true(b.cpuWeight >= 1 && b.cpuWeight <= 10_000);
  t.false(guestShape(withDefaults({}), null, { cpuShares: 1 }).ok, 'below cpu.shares\' range');
});

test('a guest weighed alone gets 1024 per unit of cpu_share, within cpu.shares\' range', (t) => {
  t.is(shapeOf({ cpu_share: 3 }).cpuShares, 3072);
  t.is(shapeOf({ cpu_share: 1_000_000 }).cpuShares, 262_144);
});

test('bandwidth: net_max_rate in kbit/s becomes kB/s, net_min_rate a floor; the default rate is no limit', (t) => {
  t.deepEqual(shapeOf({ net_max_rate: 8_000 }).bandwidth, { averageKBps: 1_000, floorKBps: null });
  t.deepEqual(shapeOf({ net_max_rate: 4 }).bandwidth, { averageKBps: 1, floorKBps: null }, 'at least 1');
  t.deepEqual(shapeOf({ net_min_rate: 801 }).bandwidth, { averageKBps: null, floorKBps: 101 }, 'a guarantee rounds up');
  t.deepEqual(shapeOf({ net_max_rate: 800, net_min_rate: 8_000 }).bandwidth, { averageKBps: 100, floorKBps: 100 }, 'the cap wins');
  t.is(shapeOf({ net_max_rate: 1_000_000 }).bandwidth, null);
});

// ---- the XML ---------------------------------------------------------------------------------

test('a qemu domain round trip: what is written is what is read back', (t) => {
  const plan = qemuPlan();
  const xml = buildDomainXml(plan);
  t.true(wellFormed(xml));
  t.regex(xml, /^<domain type="qemu">/);
  t.notRegex(xml, /<emulator/, 'libvirt picks the emulator');
  const d = readDomainDetails(xml);
  t.deepEqual(d.marker, MARKER);
  t.like(d, {
    name: 'princeton_sirius', uuid: plan.uuid, type: 'qemu', vcpus: 2, memoryKiB: 1_048_576, currentMemoryKiB: 1_048_576,
    cpuShares: 4096, cpuPeriodUs: 100_000, cpuQuotaUs: 150_000,
    kernel: '/var/lib/nodemgr/images/k1', initrd: '/var/lib/nodemgr/images/i1', cmdline: 'console=ttyS0 quiet',
    consoleLog: plan.consoleLog, consolePty: null, vncPort: null,
  });
  t.deepEqual(d.macs, ['52:54:00:00:02:0b', '52:54:00:00:02:0c']);
  t.deepEqual(d.disks, [{ source: plan.disks[0]!.path, target: 'vda', format: 'qcow2' }]);
  t.deepEqual(d.interfaces, [
    { type: 'bridge', mac: '52:54:00:00:02:0b', targetDev: 'nm-sirius0', bridge: 'br0', network: null, inboundAverageKBps: 1_000, outboundAverageKBps: 1_000, floorKBps: null },
    { type: 'ethernet', mac: '52:54:00:00:02:0c', targetDev: 'nm-sirius1', bridge: null, network: null, inboundAverageKBps: 1_000, outboundAverageKBps: 1_000, floorKBps: null },
  ]);
  t.regex(xml, /<global_quota>150000<\/global_quota>/, 'qemu caps all vCPUs together');
  t.regex(xml, /<log file="[^"]+console\.log" append="off"\/>/);
  t.regex(xml, /<graphics type="vnc" port="-1" autoport="yes" listen="127\.0\.0\.1">/);
  t.regex(xml, /<model type="virtio"\/>/);
  t.regex(xml, /<on_poweroff>destroy<\/on_poweroff>\s*<on_crash>destroy<\/on_crash>/);
});

test('a qemu domain without kernel, cap, VNC or limits boots its disk and says no more than it must', (t) => {
  const xml = buildDomainXml(qemuPlan({ boot: null, vnc: false, consoleLog: null, shape: shapeOf({}), accel: 'kvm' }));
  t.regex(xml, /^<domain type="kvm">/);
  t.regex(xml, /<boot dev="hd"\/>/);
  for (const absent of ['<kernel', '<graphics', '<log', 'global_quota', '<bandwidth']) t.false(xml.includes(absent), absent);
  t.like(readDomainDetails(xml), { kernel: null, cpuQuotaUs: null, vncPort: null, consoleLog: null });
});

test('an lxc domain: init and its arguments, the root directory, a console, the container\'s own period and quota', (t) => {
  const plan = lxcPlan();
  const xml = buildDomainXml(plan);
  t.true(wellFormed(xml));
  t.regex(xml, /^<domain type="lxc">/);
  t.regex(xml, /<type>exe<\/type>\s*<init>\/sbin\/init<\/init>\s*<initarg>--ready<\/initarg>\s*<initarg>two words<\/initarg>/);
  t.regex(xml, /<filesystem type="mount" accessmode="passthrough">\s*<source dir="\/var\/lib\/nodemgr\/guests\/princeton_lxc\/root"\/>\s*<target dir="\/"\/>/);
  t.regex(xml, /<console type="pty"\/>/);
  t.false(xml.includes('<model'), 'no NIC model in a container');
  t.false(xml.includes('global_'), 'no vCPU threads to cap');
  t.like(readDomainDetails(xml), { type: 'lxc', cpuPeriodUs: 100_000, cpuQuotaUs: 50_000, vcpus: 1, memoryKiB: 524_288, macs: ['52:54:00:00:02:0d'] });
  t.deepEqual(readDomainDetails(xml).marker, plan.marker);
});

test('a cgroup v2 host gets the weight on cpu.weight\'s scale', (t) => {
  const plan = qemuPlan({ cgroupVersion: 2 });
  t.is(readDomainDetails(buildDomainXml(plan)).cpuShares, plan.shape.cpuWeight);
  t.true(plan.shape.cpuWeight <= 10_000);
});

test('a floor goes only on an interface of a libvirt network, where libvirt can keep it', (t) => {
  const shape = shapeOf({ net_max_rate: 8_000, net_min_rate: 800 });
  const plan = qemuPlan({ shape, interfaces: [
    { mac: '52:54:00:00:02:01', targetDev: 'nm0', bridge: null, network: 'nodemgr' },
    { mac: '52:54:00:00:02:02', targetDev: 'nm1', bridge: 'br0' },
  ] });
  const [onNetwork, onBridge] = readDomainDetails(buildDomainXml(plan)).interfaces;
  t.like(onNetwork, { type: 'network', network: 'nodemgr', inboundAverageKBps: 1_000, floorKBps: 100 });
  t.like(onBridge, { type: 'bridge', inboundAverageKBps: 1_000, floorKBps: null });
  const floorOnly = buildDomainXml(qemuPlan({ shape: shapeOf({ net_min_rate: 800 }), interfaces: [plan.interfaces[0]!] }));
  t.regex(floorOnly, /<inbound floor="100"\/>/, 'a floor without a cap caps nothing');
  t.false(floorOnly.includes('<outbound'));
});

const HOSTILE = `x"'<&>]]><!--y`;

test('hostile names, paths and command lines stay text: the XML parses and reads back unchanged', (t) => {
  const dir = `/srv/${HOSTILE}/a b\tc\nd`;
  const plan = qemuPlan({
    name: `evil${HOSTILE}`,
    marker: { name: `</nodemgr:sliver><x y="`, runtime: 'qemu', spec: `a\nb\r\nc\t`, created: '&amp;', guestDir: '/tmp/"<>' },
    boot: { kernel: `${dir}/kernel`, initrd: null, cmdline: `console=ttyS0 init=/bin/sh -c "echo ${HOSTILE}" \r\n` },
    disks: [{ path: `${dir}/overlay.qcow2`, format: 'qcow2' }],
    consoleLog: `${dir}/console.log`,
    interfaces: [{ mac: '52:54:00:00:02:01', targetDev: 'nm0', bridge: `br"><x` }],
  });
  const xml = buildDomainXml(plan);
  t.true(wellFormed(xml), xml);
  const d = readDomainDetails(xml);
  t.is(d.name, plan.name);
  t.deepEqual(d.marker, plan.marker);
  t.is(d.kernel, plan.boot!.kernel);
  t.is(d.cmdline, plan.boot!.cmdline);
  t.is(d.disks[0]!.source, plan.disks[0]!.path);
  t.is(d.consoleLog, plan.consoleLog);
  t.is(d.interfaces[0]!.bridge, `br"><x`);
  t.is((xml.match(/<domain /g) ?? []).length, 1);
  t.is((xml.match(/<nodemgr:sliver /g) ?? []).length, 1);
  const lxc = lxcPlan({ rootDir: `${dir}/root`, init: `/sbin/${HOSTILE}`, initArgs: [HOSTILE, ''] });
  const lxcXml = buildDomainXml(lxc);
  t.true(wellFormed(lxcXml), lxcXml);
  t.regex(lxcXml, /<initarg><\/initarg>/, 'an empty argument stays an argument');
});

test('characters XML cannot carry are refused, naming where they were', (t) => {
  t.throws(() => buildDomainXml(qemuPlan({ boot: { kernel: '/k', initrd: null, cmdline: 'a\u0001b' } })), {
    message: '/domain/os/cmdline: character U+0001 cannot be written in XML',
  });
  t.throws(() => buildDomainXml(qemuPlan({ marker: { ...MARKER, spec: '\uD800' } })), { message: /@spec: character U\+D800/ });
  t.is(escapeXml('😀 ok', 'here'), '😀 ok', 'a character beyond the BMP is fine');
});

test('plans libvirt would misread are refused, naming the field', (t) => {
  const iface = (targetDev: string, mac = '52:54:00:00:02:01') => qemuPlan({ interfaces: [{ mac, targetDev, bridge: null }] });
  t.throws(() => buildDomainXml(iface('nm-sixteen-chars')), { message: /interfaces\[0\]\.targetDev: "nm-sixteen-chars" is not a device name/ });
  t.throws(() => buildDomainXml(iface('vnet7')), { message: /starts with "vnet", which libvirt keeps for its own names/ });
  t.throws(() => buildDomainXml(iface('a/b')), { message: /targetDev/ });
  t.throws(() => buildDomainXml(iface('nm0', '01:00:5e:00:00:01')), { message: /interfaces\[0\]\.mac: MAC 01:00:5e:00:00:01 is a multicast address/ });
  t.throws(() => buildDomainXml(qemuPlan({ uuid: 'not-a-uuid' })), { message: /uuid: "not-a-uuid" is not a UUID/ });
  t.throws(() => buildDomainXml(qemuPlan({ name: 'a/b' })), { message: /name/ });
  t.throws(() => buildDomainXml(qemuPlan({ disks: [{ path: 'overlay.qcow2', format: 'qcow2' }] })), { message: /disks\[0\]\.path: must be an absolute path/ });
  t.throws(() => buildDomainXml(lxcPlan({ rootDir: 'root' })), { message: /rootDir/ });
  t.throws(() => buildDomainXml(qemuPlan({ interfaces: [{ mac: '52:54:00:00:02:01', targetDev: 'nm0', bridge: 'br0', network: 'n' }] })), { message: /both a bridge and a network/ });
});

// ---- what libvirt returns --------------------------------------------------------------------

// `virsh dumpxml` of a running domain made from buildDomainXml (libvirt 9.0, QEMU, software emulation).
const RUNNING = `<domain type='qemu' id='3'>
  <name>nmpure-check-r</name>
  <uuid>0b5a1f0e-1d2c-4b3a-9f8e-7d6c5b4a3923</uuid>
  <metadata>
    <nodemgr:sliver xmlns:nodemgr="urn:nodemgr:sliver:1" name="nmpure-check-r" runtime="qemu" spec="s" created="c"/>
  </metadata>
  <memory unit='KiB'>65536</memory>
  <currentMemory unit='KiB'>65536</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <cputune>
    <shares>1024</shares>
  </cputune>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'>
      <source path='/dev/pts/1'/>
      <log file='/tmp/r-console.log' append='off'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/1'>
      <source path='/dev/pts/1'/>
      <log file='/tmp/r-console.log' append='off'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
    <graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+64055</label>
  </seclabel>
</domain>
`;

test('a running domain as libvirt returns it: console pty, VNC port, marker', (t) => {
  const d = readDomainDetails(RUNNING);
  t.like(d, { name: 'nmpure-check-r', consolePty: '/dev/pts/1', vncPort: 5900, consoleLog: '/tmp/r-console.log', vcpus: 1, memoryKiB: 65_536, cpuShares: 1024 });
  t.deepEqual(d.marker, { name: 'nmpure-check-r', runtime: 'qemu', spec: 's', created: 'c', guestDir: '' });
  t.deepEqual(d.macs, []);
});

test('the marker is found by its namespace whatever prefix libvirt gives it, and only by its namespace', (t) => {
  // As libvirt writes it after virDomainSetMetadata with another key, next to someone else's element.
  const rewritten = `<domain type='qemu'><name>x</name><metadata>
    <other:sliver xmlns:other="urn:example:other" name="imposter"/>
    <nm0:sliver xmlns:nm0="urn:nodemgr:sliver:1" name="pure&amp;check" runtime="qemu" spec="x&#10;y" created="c"/>
  </metadata></domain>`;
  t.deepEqual(readDomainDetails(rewritten).marker, { name: 'pure&check', runtime: 'qemu', spec: 'x\ny', created: 'c', guestDir: '' });
  const declaredAbove = `<domain type='lxc' xmlns:n="urn:nodemgr:sliver:1"><metadata><n:sliver name="a"/></metadata></domain>`;
  t.like(readDomainDetails(declaredAbove).marker, { name: 'a', runtime: '' });
  const defaultNamespace = `<domain><metadata><sliver xmlns="urn:nodemgr:sliver:1" name="b"/></metadata></domain>`;
  t.like(readDomainDetails(defaultNamespace).marker, { name: 'b' });
  const imposterWithOurPrefix = `<domain><metadata><nodemgr:sliver xmlns:nodemgr="urn:example:other" name="c"/></metadata></domain>`;
  t.is(readDomainDetails(imposterWithOurPrefix).marker, null);
  t.is(readDomainDetails(`<domain type='kvm'><name>foreign</name></domain>`).marker, null);
});

test('memory in other units is read as KiB', (t) => {
  const d = readDomainDetails(`<domain><memory unit='MiB'>512</memory><currentMemory unit='GiB'>1</currentMemory></domain>`);
  t.is(d.memoryKiB, 524_288);
  t.is(d.currentMemoryKiB, 1_048_576);
  t.is(readDomainDetails(`<domain><memory>2048</memory></domain>`).memoryKiB, 2048, 'KiB when no unit is given');
});

test('XML that is not a domain is an error that says so', (t) => {
  t.throws(() => readDomainDetails('<domain><name>x</domain>'), { message: /^domain XML is not well-formed: line 1: / });
  t.throws(() => readDomainDetails('<network/>'), { message: 'domain XML has no <domain> element' });
});

test('buildDomainXml is deterministic: the same plan gives the same text', (t) => {
  const plan: DomainPlan = qemuPlan();
  t.is(buildDomainXml(plan), buildDomainXml(structuredClone(plan)));
});
