// A virtual cluster's description (pragma_boot's vc-in.xml): what a realistic one says, and the
// refusals, each with the place and the reason an author needs to fix it.
import test from 'ava';
import { parseVcIn, VcInError, type VcDescription } from '../../src/clusters/vc-in.js';

const OPTIONS = { maxBytes: 64 * 1024, source: 'rocks7.xml' };

// As pragma's README shows it (frontend with two bridged NICs, compute with one, compressed
// images), with the per-node <file> of later pragma for the compute and a README <networks>.
const README_STYLE = `<vc version='0.1'>
  <virtualization engine='kvm' type='hvm' arch='x86_64'/>
  <driver>rocks6_client</driver>
  <frontend>
    <!-- this is the libvirt xml syntax unmodified -->
    <domain type='kvm'>
      <name>calit2-119-222</name>
      <os>
        <type>hvm</type>
        <boot dev='network'/>
        <boot dev='hd'/>
        <bootmenu enable='yes'/>
      </os>
      <memory>1048576</memory>
      <vcpu>1</vcpu>
      <features><acpi/><apic/><pae/></features>
      <devices>
        <emulator>/usr/libexec/qemu-kvm</emulator>
        <interface type='bridge'>
          <source bridge='eth0.2'/>
          <mac address='7a:77:6e:40:00:07'/>
          <model type='virtio' />
        </interface>
        <interface type='bridge'>
          <source bridge='eth1'/>
          <mac address='7a:77:6e:40:00:08'/>
          <model type='virtio' />
        </interface>
        <disk type='file' device='disk'>
          <driver name='qemu' type='raw'/>
          <source file='calit2-119-222.img.gz'/>
          <target dev='hda' bus='ide'/>
        </disk>
        <disk type='file' device='cdrom'>
          <source file='tools.iso'/>
          <target dev='hdc' bus='ide'/>
        </disk>
        <graphics type='vnc' port='-1'/>
        <console tty='/dev/pts/0'/>
      </devices>
    </domain>
    <!-- end libvirt xml format -->
  </frontend>
  <compute>
    <boot_dependency parent='frontend'>
      <wait type='clock' value='300'/>
    </boot_dependency>
    <file type='splited_gzip'>
      <part>parts/compute.img.gz.aa</part>
      <part>./parts//compute.img.gz.ab</part>
    </file>
    <domain type='kvm'>
      <name>compute-0-0-0</name>
      <memory unit='GiB'>2</memory>
      <vcpu placement='static'>4</vcpu>
      <devices>
        <interface type='bridge'>
          <source bridge='eth0.2'/>
          <mac address='7a:77:6e:40:00:0a'/>
        </interface>
        <disk type='file' device='disk'>
          <driver name='qemu' type='raw'/>
          <source file='compute.img'/>
          <target dev='hda' bus='ide'/>
        </disk>
      </devices>
    </domain>
  </compute>
  <networks>
    <network name='private'>
      <ipaddress>10.1.1.1</ipaddress>
      <netmask>255.255.0.0</netmask>
    </network>
    <network name='public' subnet='198.202.88.0' netmask='255.255.255.0' mtu='1500'/>
    <frontend>
      <public>eth1</public>
    </frontend>
  </networks>
</vc>
`;

test("pragma's README description: sizes, images, interfaces, the wait and the networks", (t) => {
  const vc: VcDescription = parseVcIn(README_STYLE, OPTIONS);
  t.deepEqual(vc, {
    arch: 'x86_64',
    frontend: {
      memoryKiB: 1_048_576,
      vcpus: 1,
      disk: { path: 'calit2-119-222.img.gz', format: 'gzip', parts: ['calit2-119-222.img.gz'] },
      interfaces: ['private', 'public'], kernel: null, initrd: null,
    },
    compute: {
      memoryKiB: 2 * 1024 * 1024,
      vcpus: 4,
      disk: { path: 'compute.img', format: 'gzip', parts: ['parts/compute.img.gz.aa', 'parts/compute.img.gz.ab'] },
      interfaces: ['private'], kernel: null, initrd: null,
    },
    bootDependency: { parent: 'frontend', wait: { type: 'clock', seconds: 300 } },
    networks: [
      { name: 'private', address: '10.1.1.1', subnet: null, netmask: '255.255.0.0', mtu: null },
      { name: 'public', address: null, subnet: '198.202.88.0', netmask: '255.255.255.0', mtu: 1500 },
    ],
    frontendPublicDevice: 'eth1',
  });
});

/** A minimal valid description whose parts a test replaces. */
function describe(parts: { frontend?: string; compute?: string; top?: string; root?: string } = {}): string {
  const frontend = parts.frontend ?? `<domain type='kvm'><memory unit='MiB'>512</memory>
      <devices>
        <interface type='network'><source network='private'/></interface>
        <interface type='network'><source network='public'/></interface>
        <disk type='file'><driver type='qcow2'/><source file='fe.qcow2'/></disk>
      </devices></domain>`;
  return `${parts.root ?? '<vc>'}
  <virtualization arch='x86_64'/>
  <frontend>${frontend}</frontend>${parts.compute === undefined ? '' : `
  <compute>${parts.compute}</compute>`}${parts.top ?? ''}
</vc>`;
}

const COMPUTE_DOMAIN = `<domain><memory>1024</memory><devices><interface type='bridge'/><disk><source file='c.img'/></disk></devices></domain>`;

test('a domain that boots a kernel directly names it and its initrd next to the description', (t) => {
  const direct = README_STYLE.replace(/<os>/g, '<os><kernel>boot/vmlinuz</kernel><initrd>boot/initrd.img</initrd>');
  const vc = parseVcIn(direct, OPTIONS);
  t.like(vc.frontend, { kernel: 'boot/vmlinuz', initrd: 'boot/initrd.img' });
  t.like(vc.compute, { kernel: null, initrd: null }, 'a domain without <os> boots its disk');
  const escaping = README_STYLE.replace('<os>', '<os><kernel>../vmlinuz</kernel>');
  t.throws(() => parseVcIn(escaping, OPTIONS), { message: /kernel: file: / });
});

test('a frontend alone, as bytes: no compute, no boot dependency, vcpu 1 by default, qcow2 as it is', (t) => {
  const vc = parseVcIn(Buffer.from(describe()), OPTIONS);
  t.is(vc.compute, null);
  t.is(vc.bootDependency, null);
  t.deepEqual(vc.networks, []);
  t.deepEqual(vc.frontend, {
    memoryKiB: 512 * 1024, vcpus: 1, disk: { path: 'fe.qcow2', format: 'qcow2', parts: ['fe.qcow2'] }, interfaces: ['private', 'public'],
    kernel: null, initrd: null,
  });
});

test('the waits a compute may declare: clock, agent and ready, in seconds', (t) => {
  for (const type of ['clock', 'agent', 'ready'] as const) {
    const compute = `<boot_dependency parent='frontend'><wait type='${type}' value='90'/></boot_dependency>${COMPUTE_DOMAIN}`;
    t.deepEqual(parseVcIn(describe({ compute }), OPTIONS).bootDependency, { parent: 'frontend', wait: { type, seconds: 90 } });
  }
});

test('libvirt memory units: bytes round up to a KiB, KB is 1000 bytes, k and KiB are 1024', (t) => {
  const memoryOf = (memory: string) => parseVcIn(describe({
    frontend: `<domain>${memory}<devices><interface/><interface/><disk><source file='fe.img'/></disk></devices></domain>`,
  }), OPTIONS).frontend.memoryKiB;
  t.is(memoryOf("<memory unit='b'>1025</memory>"), 2);
  t.is(memoryOf("<memory unit='KB'>2048</memory>"), 2000);
  t.is(memoryOf("<memory unit='k'>7</memory>"), 7);
  t.is(memoryOf("<memory unit='G'>1</memory>"), 1024 * 1024);
});

/** The message of the VcInError that parsing `text` throws. */
function refusal(t: import('ava').ExecutionContext, text: string | Uint8Array, maxBytes = OPTIONS.maxBytes): VcInError {
  const error = t.throws(() => parseVcIn(text, { ...OPTIONS, maxBytes }), { instanceOf: VcInError });
  return error!;
}

test('a DOCTYPE is refused at its place, so no entity can be declared', (t) => {
  const error = refusal(t, `<?xml version="1.0"?>\n<!DOCTYPE vc [<!ENTITY big "x">]>\n${describe()}`);
  t.is(error.message, 'rocks7.xml line 2 column 1: document: DOCTYPE is not allowed (nor, with it, entity declarations)');
  t.is(error.line, 2);
  t.is(error.element, 'document');
});

test('a description over the size limit is refused before it is parsed', (t) => {
  const error = refusal(t, Buffer.from(describe()), 100);
  t.regex(error.message, /^rocks7\.xml: document: document is \d+ bytes, more than the limit of 100 bytes$/);
  t.is(error.line, null);
});

test('a description without a frontend names what <vc> lacks', (t) => {
  const error = refusal(t, `<vc>\n  <virtualization arch='x86_64'/>\n  <compute>${COMPUTE_DOMAIN}</compute>\n</vc>`);
  t.is(error.message, 'rocks7.xml line 1 column 1: vc: has no <frontend>');
});

test('a disk path leading out of the description\'s directory is refused at its <source>', (t) => {
  const error = refusal(t, describe({
    frontend: `<domain><memory>1</memory><devices><interface/><interface/>
<disk type='file'><source file='images/../../etc/shadow'/></disk></devices></domain>`,
  }));
  t.is(error.message, 'rocks7.xml line 4 column 19: source: file: the path leads out of the description\'s directory ("..")');
  t.is(error.line, 4);
  t.is(error.column, 19);
});

test('an absolute path and a URL as a <part> are refused too', (t) => {
  const withPart = (part: string) => describe({
    frontend: `<file type='gzip'><part>${part}</part></file><domain><memory>1</memory><devices><interface/><interface/><disk><source file='fe.img'/></disk></devices></domain>`,
  });
  t.regex(refusal(t, withPart('/etc/passwd')).message, /part: an absolute path is not accepted/);
  t.regex(refusal(t, withPart('http://example.org/x.gz')).message, /part: a URL is not accepted/);
});

test('a wait of another type, or without seconds, is refused', (t) => {
  const compute = (wait: string) => describe({ compute: `<boot_dependency parent='frontend'>${wait}</boot_dependency>${COMPUTE_DOMAIN}` });
  t.is(refusal(t, compute("<wait type='ping' value='30'/>")).message,
    'rocks7.xml line 9 column 47: wait: type "ping" is not one of clock, agent, ready');
  t.regex(refusal(t, compute("<wait type='clock' value='soon'/>")).message, /wait: value: "soon" is not a whole number \(seconds\)$/);
  t.regex(refusal(t, compute("<wait type='clock'/>")).message, /wait: has no value attribute$/);
  t.regex(refusal(t, describe({ compute: `<boot_dependency parent='compute'><wait type='clock' value='3'/></boot_dependency>${COMPUTE_DOMAIN}` })).message,
    /boot_dependency: parent "compute": computes can only depend on the frontend$/);
});

test('a memory unit libvirt does not know is refused, naming the units it does', (t) => {
  const error = refusal(t, describe({
    frontend: "<domain><memory unit='gigs'>2</memory><devices><interface/><interface/><disk><source file='fe.img'/></disk></devices></domain>",
  }));
  t.regex(error.message, /^rocks7\.xml line 3 column 21: memory: unit "gigs" is not a libvirt memory unit \(b, bytes, KiB/);
});

test('what pragma could not boot either is refused before anything is fetched', (t) => {
  const frontend = (devices: string) => describe({ frontend: `<domain><memory>1</memory><devices>${devices}</devices></domain>` });
  t.regex(refusal(t, frontend("<interface/><disk><source file='fe.img'/></disk>")).message,
    /devices: a frontend needs an interface on the public network \(it has 0\)$/);
  t.regex(refusal(t, frontend("<interface/><interface/><disk type='volume'><source volume='fe-vol' pool='tank'/></disk>")).message,
    /disk: a disk of type "volume" is not accepted/);
  t.regex(refusal(t, frontend("<interface/><interface/><disk><driver type='vmdk'/><source file='fe.vmdk'/></disk>")).message,
    /driver: disk driver type "vmdk" is not accepted \(raw or qcow2\)$/);
  t.regex(refusal(t, describe({ root: "<vc><virtualization arch='aarch64'/>" }).replace("\n  <virtualization arch='x86_64'/>", '')).message,
    /virtualization: arch "aarch64" is not supported \(x86_64\)$/);
  t.regex(refusal(t, describe({ top: '<netwroks/>' })).message, /netwroks: unknown element in vc \(expected: virtualization, driver, frontend, compute, networks, files\)$/);
  t.regex(refusal(t, describe({ top: "<networks><network name='private'><ipaddress>10.2.0.1</ipaddress><subnet>10.1.0.0</subnet><netmask>255.255.0.0</netmask></network></networks>" })).message,
    /network: address 10\.2\.0\.1 is not in subnet 10\.1\.0\.0\/255\.255\.0\.0$/);
});

test('XML that is not well-formed is refused with the place of the fault', (t) => {
  const error = refusal(t, '<vc>\n  <frontend>\n</vc>');
  t.is(error.line, 3);
  t.regex(error.message, /^rocks7\.xml line 3 column 1: frontend: unexpected close tag <\/vc>/);
});
