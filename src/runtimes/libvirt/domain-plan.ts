// What every guest's domain definition is made of, whatever its kind: its marker, interfaces and
// the digest of what only a new boot can change. Pure, so that what a guest is made of can be read
// and tested apart from libvirt; each driver adds its kind's part (drivers/).
import { createHash } from 'node:crypto';
import type { AddressLease } from '../../db/types.js';
import type { CommonPlan } from './domain-xml.js';
import type { ExtraDisk, GuestBoot, GuestKind, NetworkInterface, ResolvedBoot } from './guest-definition.js';
import type { GuestFiles } from './guest-files.js';
import type { GuestShape } from './shape.js';

/** The host-side device of a guest's interface: short, stable, and never one of libvirt's own prefixes. */
export function tapName(sliver: string, iface: number): string {
  return `nmg${createHash('sha256').update(sliver).digest('hex').slice(0, 8)}${iface}`.slice(0, 15);
}

/** The tap devices of interfaces on libvirt networks are numbered from here. */
const NETWORK_TAP_BASE = 50;

/** What else of a definition only a new boot can change (guest-definition.ts). */
export interface BootExtras {
  readonly agent?: boolean;
  readonly kernelArgs?: readonly string[];
  readonly disks?: readonly ExtraDisk[];
  readonly networks?: readonly NetworkInterface[];
}

/** The parts of a spec that only a new boot can change: a change of these restarts the guest. */
export function bootDigest(boot: GuestBoot, shape: GuestShape, kind: GuestKind, extras: BootExtras = {}): string {
  const parts: unknown[] = [kind, boot.image, boot.kernel, boot.initrd, shape.vcpus, shape.memoryKiB];
  // Only what is asked for is added, so that a guest without them keeps the digest it had.
  if (extras.agent === true) parts.push({ agent: true });
  if (extras.kernelArgs !== undefined && extras.kernelArgs.length > 0) parts.push({ kernelArgs: extras.kernelArgs });
  if (extras.disks !== undefined && extras.disks.length > 0) parts.push({ disks: extras.disks });
  if (extras.networks !== undefined && extras.networks.length > 0) parts.push({ networks: extras.networks });
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
}

function netmaskOf(prefix: number): string {
  const bits = prefix <= 0 ? 0 : (0xffffffff << (32 - Math.min(32, prefix))) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 255).join('.');
}

/**
 * The kernel command line of a directly booted guest: its console, its name and its address, then
 * the definition's own words. The pool's first address is on eth<firstLeaseDevice> (after the
 * interfaces on libvirt networks).
 */
export function kernelCmdline(name: string, leases: readonly AddressLease[], kernelArgs: readonly string[] = [], firstLeaseDevice = 0): string {
  const words = ['console=ttyS0', `nodemgr.sliver=${name}`];
  const first = leases[0];
  if (first && !first.ip.includes(':')) {
    const mask = first.prefix === null ? '' : netmaskOf(first.prefix);
    words.push(`ip=${first.ip}:::${mask}:${name}:eth${firstLeaseDevice}:off`);
  }
  return [...words, ...kernelArgs].join(' ');
}

/** The longest command line the kernel takes (x86's COMMAND_LINE_SIZE, with its NUL). */
const KERNEL_CMDLINE_MAX = 2047;

/** Why the kernel could not take `kernelArgs` as words of its command line, or null. Pure. */
export function kernelArgsProblem(kernelArgs: readonly string[]): string | null {
  for (const word of kernelArgs) {
    // One word each: white space would split it, a quote would join it with the next.
    if (word === '' || /[\s"\u0000-\u001f\u007f]/.test(word)) return `kernel argument ${JSON.stringify(word)} is not one word (empty, or with white space, a quote or a control character)`;
  }
  // nodemgr's own words take at most this much (a 64-character name twice, an address line).
  const room = KERNEL_CMDLINE_MAX - 256;
  const length = kernelArgs.reduce((sum, word) => sum + Buffer.byteLength(word) + 1, 0);
  return length > room ? `the kernel arguments take ${length} bytes; at most ${room} fit on the kernel command line beside nodemgr's own` : null;
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
  /** The definition's agent and kernel arguments (guest-definition.ts); absent for a sliver. */
  readonly extras?: BootExtras;
}

/** The part of a domain's plan that every kind shares: its name, marker, shape and interfaces. */
export function commonDomainPlan(input: GuestDomainInput): CommonPlan {
  const { name, kind, leases } = input;
  return {
    name,
    uuid: input.uuid,
    marker: { name, runtime: kind, spec: bootDigest(input.boot, input.shape, kind, input.extras), created: input.created, guestDir: input.guestDir },
    shape: input.shape,
    interfaces: [
      // Devices numbered past the pool's, which are 0, 1, …: a name is never taken twice.
      ...(input.extras?.networks ?? []).map((n, i) => ({ mac: n.mac, targetDev: tapName(name, NETWORK_TAP_BASE + i), bridge: null, network: n.network })),
      ...leases.map((l) => ({ mac: l.mac, targetDev: tapName(name, l.iface), bridge: input.bridge })),
    ],
  };
}
