// What a guest is, apart from whoever asked for it: a name (the domain's) and a definition of what
// to boot. The guest lifecycle (guests.ts) works from these alone, so that a sliver, a XenBEE task,
// a Condor Cloud instance and a virtual cluster's node are made, booted and recovered the same way.
//
// Slivers use the required fields only; the optional ones are for on-demand guests (XenBEE's
// tasks): words of their own on the kernel command line, QEMU's guest agent, and readiness by that
// agent instead of a marker. A definition without them makes the same domain as before they were.
// The guests to come will also need, as research/xenbee.md and research/pragma_boot.md describe:
// an owner (kept where such a guest is persisted, beside its name, not in what it boots), and extra
// disks and files (a cluster node's vc-out.xml) as a list beside `boot`. Several interfaces are
// here already: a cluster's frontend has two.
import type { Rspec } from '../../rspec/resources.js';
import type { InstanceSize, RuntimeKind } from '../../slices/types.js';

/** The kinds of guest, each served by a driver (drivers/). */
export type GuestKind = Exclude<RuntimeKind, 'unix'>;

/** What a guest boots: images of the node's cache, by name or URI as the caller gives them. */
export interface GuestBoot {
  /** Its disk image or root file system archive, as its kind takes it; null for a kernel booted alone. */
  readonly image: string | null;
  readonly kernel: string | null;
  readonly initrd: string | null;
}

export interface GuestDefinition {
  readonly kind: GuestKind;
  readonly boot: GuestBoot;
  readonly size: InstanceSize;
  /**
   * The rspec whose resources shape the guest: vcpus and mem_max over the size, cpu_share and
   * cpu_cap, net_max_rate and net_min_rate (see shape.ts).
   */
  readonly limits: Rspec;
  /** How many interfaces, each with an address of its own from the node's pool. */
  readonly interfaces: number;
  /** Interfaces on libvirt networks, before the pool's (eth0, eth1, … in this order). */
  readonly networkInterfaces?: readonly NetworkInterface[];
  /**
   * Words appended to the kernel command line of a directly booted guest (XSDL's kernel Arguments),
   * after nodemgr's own; each one word (no white space, quotes or control characters).
   */
  readonly kernelArgs?: readonly string[];
  /**
   * Gives the guest an in-guest agent: for a virtual machine, the virtio-serial channel on which
   * QEMU's guest agent (qemu-ga, in the image) listens. A container needs none: its agent is
   * nodemgr entering its namespaces (lxc-agent.ts).
   */
  readonly agent?: boolean;
  /**
   * Raw disks beside the boot, after its image (a task's staging disks): a virtual machine sees each
   * with its serial, by which the guest finds it without udev (/sys/block/vdX/serial). A container has
   * none; its root is reached from the host.
   */
  readonly extraDisks?: readonly ExtraDisk[];
  /** How start hears that the guest is ready; by default by its kind's marker within the node's guest_ready_timeout. */
  readonly readiness?: GuestReadiness;
}

/**
 * `marker`: the guest reports ready as its kind does (a line on the serial console, a file in a
 * container's root); `agent`: its agent answers guest-ping within timeoutMs (a container's: its
 * init runs, so that its namespaces can be entered); `none`: started is enough (what waits for the
 * guest, such as a cluster's boot dependency, waits itself).
 */
export type GuestReadiness = { readonly by: 'marker' } | { readonly by: 'agent'; readonly timeoutMs: number } | { readonly by: 'none' };

/** An interface on a libvirt network of the node's own making (a virtual cluster's private one), with its MAC. */
export interface NetworkInterface {
  readonly network: string;
  readonly mac: string;
}

export interface ExtraDisk {
  readonly path: string;
  /** Up to 20 letters, digits and dashes. */
  readonly serial: string;
  readonly readOnly: boolean;
}

/** A cached image as a guest uses it. */
export interface ResolvedImage {
  readonly name: string;
  readonly path: string;
  readonly format: string;
}

export interface ImageSource {
  /** The cache entry that a name or URI refers to, fetched first if need be. */
  resolve(ref: string, type: 'image' | 'kernel' | 'initrd' | 'data'): Promise<ResolvedImage>;
}

/** The images of a guest's boot, resolved in the cache. */
export interface ResolvedBoot {
  /** The disk image or root file system archive. */
  readonly disk: ResolvedImage | null;
  readonly kernel: ResolvedImage | null;
  readonly initrd: ResolvedImage | null;
}
