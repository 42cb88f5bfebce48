// The typed form of an authority document (slices.xml) after parsing and validation,
// restricted to what concerns this node.
import type { Rspec } from '../rspec/resources.js';

export interface SliverSpec {
  /** Slice name, also the sliver's Unix account name (e.g. "princeton_sirius"). */
  readonly name: string;
  readonly sliceId: number;
  /** Seconds since the epoch; the slice's version as the authority stamped it. */
  readonly timestamp: number;
  /** Seconds since the epoch after which the sliver must go, or null for never. */
  readonly expiry: number | null;
  /** Canonical resource names only; defaults are not filled in here. */
  readonly rspec: Rspec;
  readonly initscript: string | null;
  /** The sliver's disk image: a cached image's name or an http(s)/file URI; null for none. */
  readonly vref: string | null;
  /** What the sliver is made of on the host, and what a libvirt guest boots. */
  readonly guest: GuestAttributes;
  /** authorized_keys lines of the slice's users, in document order, without duplicates. */
  readonly keys: readonly string[];
  /** Delegate account names allowed to act on this slice through the API. */
  readonly controllers: readonly string[];
  /**
   * "plc-instantiated": the node makes the sliver as soon as the authority lists it.
   * "delegated": the node makes it only when a controller asks (the API's Create).
   */
  readonly instantiation: Instantiation;
  /** Resources the program does not know, kept and reported, never fatal. */
  readonly unknownResources: Readonly<Record<string, string>>;
}

/** What a sliver is made of: a Unix account, an LXC container or a QEMU/KVM virtual machine. */
export type RuntimeKind = 'unix' | 'lxc' | 'qemu';
export const RUNTIME_KINDS: readonly RuntimeKind[] = ['unix', 'lxc', 'qemu'];

/** Instance sizes a guest is given unless its rspec says otherwise (vcpus, mem_max). */
export type InstanceSize = 'small' | 'medium' | 'large';
export const INSTANCE_SIZES: readonly InstanceSize[] = ['small', 'medium', 'large'];

/** A slice's attributes for libvirt slivers; every one null when the document does not set it. */
export interface GuestAttributes {
  /** null: the node's default runtime. */
  readonly runtime: RuntimeKind | null;
  /** A cached kernel's name or a URI, for direct kernel boot. */
  readonly kernel: string | null;
  readonly initrd: string | null;
  /** null: small. */
  readonly size: InstanceSize | null;
}

export const NO_GUEST_ATTRIBUTES: GuestAttributes = { runtime: null, kernel: null, initrd: null, size: null };

export type Instantiation = 'plc-instantiated' | 'delegated';
export const INSTANTIATIONS: readonly Instantiation[] = ['plc-instantiated', 'delegated'];

export interface DelegateSpec {
  readonly name: string;
  readonly timestamp: number;
  readonly expiry: number | null;
  readonly keys: readonly string[];
}

/** Something in the document that was left out, and why. */
export interface SkippedEntry {
  /** What was skipped, e.g. `slice "x" (id 17)` or `delegate "d"`. */
  readonly what: string;
  readonly reason: string;
  /**
   * Set when an entry that is (or may be) this node's was invalid but still says which record it
   * is about, by a usable name or a readable slice id: the node keeps the record it holds under
   * that name or slice id, so one bad entry from the authority never destroys a running sliver.
   */
  readonly held?: { readonly type: 'sliver' | 'delegate'; readonly name: string | null; readonly sliceId: number | null };
}

export interface SlicesDocument {
  /** The document's version: its own timestamp, else the newest slice timestamp, else 0. */
  readonly timestamp: number;
  readonly nodeId: number;
  readonly slivers: readonly SliverSpec[];
  readonly delegates: readonly DelegateSpec[];
  /** Node-wide outgoing bandwidth cap in kbit/s, or null when the document sets none. */
  readonly bwcapKbit: number | null;
  readonly skipped: readonly SkippedEntry[];
  /** Number of <slice> elements in the whole document (all nodes). */
  readonly slicesSeen: number;
}
