// The typed form of a virtual cluster's description (pragma_boot's vc-in.xml) after parsing and
// validation: what a frontend and its computes are made of, how the computes wait for the
// frontend, and the networks the description names. Paths are relative to the description's own
// location (a directory or a URL) and never leave it.

import { ElementError } from '../slices/errors.js';

/** The network an interface of a node is on, in pragma's terms. */
export type VcNetworkName = 'private' | 'public';

/**
 * How the repository holds a node's disk image. `gzip`: the parts, concatenated, are one gzip
 * stream to decompress; `raw` and `qcow2`: the parts, concatenated, are the image itself (one part
 * in the common case).
 */
export type VcImageFormat = 'raw' | 'qcow2' | 'gzip';

export interface VcImageFile {
  /**
   * The disk image as the domain's <source file> names it: relative to the description,
   * normalised, never escaping its directory. In pragma's README style it ends in ".gz" and is
   * also the only part.
   */
  readonly path: string;
  readonly format: VcImageFormat;
  /** The files to fetch, in the order they are concatenated (relative and normalised like `path`). */
  readonly parts: readonly string[];
}

export interface VcNodeTemplate {
  /** <memory> of the domain, in KiB (libvirt's unit when none is given), rounded up to a whole KiB. */
  readonly memoryKiB: number;
  /** <vcpu> of the domain; 1 when the domain gives none (libvirt's default). */
  readonly vcpus: number;
  readonly disk: VcImageFile;
  /**
   * The network of each of the domain's interfaces, in the domain's order: a frontend has one on
   * `private` and one on `public` (private first in pragma's images), a compute one on `private`.
   */
  readonly interfaces: readonly VcNetworkName[];
  /**
   * A kernel and initrd the domain boots directly (<os><kernel>, <initrd>), as paths relative to
   * the description like the disk; null when it boots its disk.
   */
  readonly kernel: string | null;
  readonly initrd: string | null;
}

/**
 * What computes wait for before they boot: `clock`, the given seconds after the frontend started
 * (pragma's only documented kind); `agent`, until the frontend's guest agent answers; `ready`, until
 * the frontend reports ready. For `agent` and `ready`, `seconds` is how long to wait at most.
 */
export type VcWaitType = 'clock' | 'agent' | 'ready';
export const VC_WAIT_TYPES: readonly VcWaitType[] = ['clock', 'agent', 'ready'];

export interface VcBootDependency {
  readonly parent: 'frontend';
  readonly wait: { readonly type: VcWaitType; readonly seconds: number };
}

export interface VcNetwork {
  /** The name as the description gives it: "private", "public", or a network of the site's. */
  readonly name: string;
  /** <ipaddress>: the frontend's address on it (pragma: 10.1.1.1 on private), or null. */
  readonly address: string | null;
  /** Dotted IPv4 network address, or null. */
  readonly subnet: string | null;
  /** Dotted IPv4 netmask (contiguous), or null. */
  readonly netmask: string | null;
  readonly mtu: number | null;
}

export interface VcDescription {
  /** <virtualization arch>: pragma boots x86_64 guests only. */
  readonly arch: 'x86_64';
  readonly frontend: VcNodeTemplate;
  /** Null when the description has no <compute>: a cluster of its frontend alone. */
  readonly compute: VcNodeTemplate | null;
  /** The compute's <boot_dependency>, or null: computes boot right after the frontend. */
  readonly bootDependency: VcBootDependency | null;
  /** <networks>/<network>, in document order. */
  readonly networks: readonly VcNetwork[];
  /** <networks>/<frontend>/<public>: the device name the frontend's image uses for its public interface, or null. */
  readonly frontendPublicDevice: string | null;
}

export interface VcInOptions {
  /** Descriptions larger than this many bytes are refused before parsing. */
  readonly maxBytes: number;
  /** Name of the description in messages (e.g. "vc rocks7 description"). */
  readonly source: string;
}

/** Why a description was refused: where (line, column, element) and why. */
export class VcInError extends ElementError {
  override name = 'VcInError';
}
