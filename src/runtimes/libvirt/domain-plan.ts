// A libvirt sliver's domain definition from its spec, shape, leases and files: pure, so that what
// a guest is made of can be read and tested apart from libvirt.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { AddressLease } from '../../db/types.js';
import type { GuestSpec } from '../types.js';
import { buildDomainXml, type DiskPlan, type InterfacePlan } from './domain-xml.js';
import type { GuestFiles } from './guest-files.js';
import type { GuestShape } from './shape.js';

export type GuestDriver = 'qemu' | 'lxc';

/** The host-side device of a guest's interface: short, stable, and never one of libvirt's own prefixes. */
export function tapName(sliver: string, iface: number): string {
  return `nmg${createHash('sha256').update(sliver).digest('hex').slice(0, 8)}${iface}`.slice(0, 15);
}

/** The parts of a spec that only a new boot can change: a change of these restarts the guest. */
export function bootDigest(guest: GuestSpec, shape: GuestShape, driver: GuestDriver): string {
  const parts = [driver, guest.image, guest.kernel, guest.initrd, shape.vcpus, shape.memoryKiB];
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
}

function netmaskOf(prefix: number): string {
  const bits = prefix <= 0 ? 0 : (0xffffffff << (32 - Math.min(32, prefix))) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 255).join('.');
}

/** The kernel command line of a directly booted guest: its console, its name and its address. */
export function kernelCmdline(name: string, leases: readonly AddressLease[]): string {
  const words = ['console=ttyS0', `nodemgr.sliver=${name}`];
  const first = leases[0];
  if (first && !first.ip.includes(':')) {
    const mask = first.prefix === null ? '' : netmaskOf(first.prefix);
    words.push(`ip=${first.ip}:::${mask}:${name}:eth0:off`);
  }
  return words.join(' ');
}

export interface GuestDomainInput {
  readonly name: string;
  readonly driver: GuestDriver;
  readonly guest: GuestSpec;
  readonly shape: GuestShape;
  readonly uuid: string;
  readonly created: string;
  readonly leases: readonly AddressLease[];
  readonly files: GuestFiles;
  readonly kernel: { readonly path: string } | null;
  readonly initrd: { readonly path: string } | null;
  /** True when the guest has an overlay disk (a qemu sliver with a vref). */
  readonly hasDisk: boolean;
  readonly bridge: string | null;
  /** The daemon's guest directory, in the marker: each daemon manages its own domains only. */
  readonly guestDir: string;
  readonly accel: 'kvm' | 'qemu';
}

export function guestDomainXml(input: GuestDomainInput): string {
  const { name, driver, leases, files } = input;
  const interfaces: InterfacePlan[] = leases.map((l) => ({ mac: l.mac, targetDev: tapName(name, l.iface), bridge: input.bridge }));
  const marker = { name, runtime: driver, spec: bootDigest(input.guest, input.shape, driver), created: input.created, guestDir: input.guestDir };
  if (driver === 'lxc') {
    return buildDomainXml({ driver, name, uuid: input.uuid, marker, shape: input.shape, interfaces, init: '/sbin/init', rootDir: join(files.dir, 'rootfs') });
  }
  const disks: DiskPlan[] = input.hasDisk ? [{ path: files.overlay, format: 'qcow2' }] : [];
  return buildDomainXml({
    driver, accel: input.accel, name, uuid: input.uuid, marker, shape: input.shape, interfaces, disks,
    boot: input.kernel === null ? null : { kernel: input.kernel.path, initrd: input.initrd?.path ?? null, cmdline: kernelCmdline(name, leases) },
    consoleLog: files.consoleLog,
    vnc: true,
  });
}
