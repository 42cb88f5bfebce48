import test from 'ava';
import { bootDigest, kernelCmdline, tapName } from '../../src/runtimes/libvirt/domain-plan.js';
import { buildDomainXml, readDomainDetails } from '../../src/runtimes/libvirt/domain-xml.js';
import { qemuDomainPlan } from '../../src/runtimes/libvirt/drivers/qemu.js';
import { htbRateKbit, ifbOf } from '../../src/runtimes/libvirt/guest-shaper.js';
import { guestFiles } from '../../src/runtimes/libvirt/guest-files.js';
import { guestShape } from '../../src/runtimes/libvirt/shape.js';

const lease = { mac: '52:54:00:4e:4d:01', ip: '192.0.2.21', prefix: 24, sliver: 'site_vm', iface: 0, since: '2026-01-01T00:00:00.000Z' };
const guest = { image: 'base.qcow2', kernel: 'vmlinuz', initrd: 'initrd.img', size: 'small' as const };
const shape = (rspec: Record<string, number>) => {
  const result = guestShape(rspec, 'small');
  if (!result.ok) throw new Error(result.reason);
  return result.shape;
};

test('a qemu sliver boots its kernel with its console, name and address on the command line', (t) => {
  const files = guestFiles('/var/lib/nodemgr/guests', 'site_vm');
  const xml = buildDomainXml(qemuDomainPlan({
    name: 'site_vm', kind: 'qemu', boot: guest, shape: shape({ cpu_share: 3, cpu_cap: 50 }), uuid: '6f1c2b9e-3a4d-4e5f-8a7b-1c2d3e4f5a6b',
    created: '2026-01-01T00:00:00.000Z', leases: [lease], files,
    resolved: { disk: { path: '/c/base.qcow2' }, kernel: { path: '/c/vmlinuz' }, initrd: { path: '/c/initrd.img' } },
    bridge: null, guestDir: '/var/lib/nodemgr/guests',
  }, 'qemu'));
  const d = readDomainDetails(xml);
  t.is(d.cmdline, 'console=ttyS0 nodemgr.sliver=site_vm ip=192.0.2.21:::255.255.255.0:site_vm:eth0:off');
  t.deepEqual(d.disks.map((x) => x.source), [files.overlay]);
  t.is(d.consoleLog, files.consoleLog);
  t.deepEqual(d.macs, [lease.mac]);
  t.is(d.interfaces[0]!.targetDev, tapName('site_vm', 0));
  t.is(d.cpuShares, 3072);
  t.is(d.cpuQuotaUs, 50_000);
  t.like(d.marker, { name: 'site_vm', runtime: 'qemu', guestDir: '/var/lib/nodemgr/guests' });
});

test('tap names are short, stable and distinct per sliver and interface', (t) => {
  t.is(tapName('a_very_long_sliver_name_indeed', 3), tapName('a_very_long_sliver_name_indeed', 3));
  t.true(tapName('a_very_long_sliver_name_indeed', 3).length <= 15);
  t.not(tapName('site_a', 0), tapName('site_b', 0));
  t.not(tapName('site_a', 0), tapName('site_a', 1));
});

test('only what takes a new boot changes the boot digest', (t) => {
  const base = bootDigest(guest, shape({ cpu_share: 1 }), 'qemu');
  t.is(bootDigest(guest, shape({ cpu_share: 8, net_max_rate: 1000 }), 'qemu'), base, 'share and rate are changed live');
  t.not(bootDigest(guest, shape({ vcpus: 2 }), 'qemu'), base);
  t.not(bootDigest({ ...guest, image: 'other.qcow2' }, shape({}), 'qemu'), base);
  t.not(bootDigest(guest, shape({}), 'lxc'), base);
});

test('an IPv6 address is not put on the kernel command line (ip= is IPv4 only)', (t) => {
  t.is(kernelCmdline('v6', [{ ...lease, ip: '2001:db8::5', prefix: 64 }]), 'console=ttyS0 nodemgr.sliver=v6');
});

test('nodemgr\'s own guest interface limits: the ifb device is named from the tap, rates are read as tc prints them', (t) => {
  t.is(ifbOf(tapName('site_vm', 0)), `nmi${tapName('site_vm', 0).slice(3)}`);
  t.true(ifbOf(tapName('a_very_long_sliver_name_indeed', 9)).length <= 15);
  t.is(htbRateKbit('class htb 1:1 root prio 0 rate 8Mbit ceil 8Mbit burst 1600b cburst 1600b \n'), 8000);
  t.is(htbRateKbit('class htb 1:1 root prio 0 rate 512Kbit ceil 512Kbit burst 1600b cburst 1600b'), 512);
  t.is(htbRateKbit('class htb 1:1 root prio 0 rate 2Gbit ceil 2Gbit'), 2_000_000);
  t.is(htbRateKbit(''), null);
});
