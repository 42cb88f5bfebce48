// What a guest is, apart from whoever asked for it: a name (the domain's) and a definition of what
// to boot. The guest lifecycle (guests.ts) works from these alone, so that a sliver, a XenBEE task,
// a Condor Cloud instance and a virtual cluster's node are made, booted and recovered the same way.
//
// Only what slivers use is here. The guests to come will need, as research/xenbee.md and
// research/pragma_boot.md describe: an owner (kept where such a guest is persisted, beside its
// name, not in what it boots), extra disks and files (XenBEE's stage-in disks, a cluster node's
// vc-out.xml) as a list beside `boot`, and words of their own on the kernel command line (XenBEE's
// connect-back address). Several interfaces are here already: a cluster's frontend has two.
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
