// What every guest's domain definition is made of, whatever its kind: its marker, interfaces and
// the digest of what only a new boot can change. Pure, so that what a guest is made of can be read
// and tested apart from libvirt; each driver adds its kind's part (drivers/).
import { createHash } from 'node:crypto';
import type { AddressLease } from '../../db/types.js';
import type { CommonPlan } from './domain-xml.js';
import type { GuestBoot, GuestKind, ResolvedBoot } from './guest-definition.js';
import type { GuestFiles } from './guest-files.js';
import type { GuestShape } from './shape.js';

/** The host-side device of a guest's interface: short, stable, and never one of libvirt's own prefixes. */
export function tapName(sliver: string, iface: number): string {
  return `nmg${createHash('sha256').update(sliver).digest('hex').slice(0, 8)}${iface}`.slice(0, 15);
}

/** The parts of a spec that only a new boot can change: a change of these restarts the guest. */
export function bootDigest(boot: GuestBoot, shape: GuestShape, kind: GuestKind): string {
  const parts = [kind, boot.image, boot.kernel, boot.initrd, shape.vcpus, shape.memoryKiB];
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

/** What every kind's domain is made from (the drivers add what their kind needs). */
export interface GuestDomainInput {
  readonly name: string;
  readonly kind: GuestKind;
  readonly boot: GuestBoot;
  readonly shape: GuestShape;
  readonly uuid: string;
  readonly created: string;
  readonly leases: readonly AddressLease[];
  readonly files: GuestFiles;
  readonly resolved: { readonly [K in keyof ResolvedBoot]: { readonly path: string } | null };
  readonly bridge: string | null;
  /** The daemon's guest directory, in the marker: each daemon manages its own domains only. */
  readonly guestDir: string;
}

/** The part of a domain's plan that every kind shares: its name, marker, shape and interfaces. */
export function commonDomainPlan(input: GuestDomainInput): CommonPlan {
  const { name, kind, leases } = input;
  return {
    name,
    uuid: input.uuid,
    marker: { name, runtime: kind, spec: bootDigest(input.boot, input.shape, kind), created: input.created, guestDir: input.guestDir },
    shape: input.shape,
    interfaces: leases.map((l) => ({ mac: l.mac, targetDev: tapName(name, l.iface), bridge: input.bridge })),
  };
}
