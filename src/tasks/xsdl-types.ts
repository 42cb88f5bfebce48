// The typed form of a XenBEE job description (XSDL: JSDL 1.0 + JSDL-POSIX + XenBEE's instance
// extension) after parsing and validation. Everything the engine acts on is resolved here: guest
// paths are absolute and normalised, sizes are single numbers, URIs are checked references.

import { ElementError } from '../slices/errors.js';

/** A file's source or destination: a URL the node fetches from (or sends to), or an image-cache entry. */
export type XsdlUri =
  /** An http:, https: or file: URL, normalised (WHATWG href); never with credentials. */
  | { readonly kind: 'url'; readonly href: string }
  /** The name of an entry of the node's image cache (also XenBEE's cache://xbe-file-cache/<id>). */
  | { readonly kind: 'cache'; readonly name: string };

export type HashAlgorithm = 'md5' | 'sha1' | 'sha224' | 'sha256' | 'sha384' | 'sha512';
export const HASH_HEX_DIGITS: Readonly<Record<HashAlgorithm, number>> = {
  md5: 32, sha1: 40, sha224: 56, sha256: 64, sha384: 96, sha512: 128,
};

export type Compression = 'gzip' | 'bzip2';

export interface FileHash {
  readonly algorithm: HashAlgorithm;
  /** Lower-case hex digest, of the bytes as fetched (still compressed, as in XenBEE). */
  readonly hex: string;
}

export interface Location {
  readonly uri: XsdlUri;
  readonly hash: FileHash | null;
  /** How the fetched bytes are compressed (decompress after checking the hash), or null. */
  readonly compression: Compression | null;
  /** File mode to set after fetching (from 4 octal digits, e.g. 0755 -> 493), or null to leave it. */
  readonly mode: number | null;
}

export interface KernelLocation extends Location {
  /** Kernel command-line words, in document order ("name=value" or a bare word). */
  readonly arguments: readonly string[];
}

export interface ImageLocation extends Location {
  /** The image's file system type as the document says (informative only; nothing depends on it). */
  readonly fsType: string | null;
}

export type CreationFlag = 'overwrite' | 'dontOverwrite' | 'append';

export interface StageIn {
  /** Absolute, normalised path inside the guest. */
  readonly path: string;
  readonly creationFlag: CreationFlag;
  readonly deleteOnTermination: boolean;
  readonly source: Location;
}

export interface StageOut {
  /** Absolute, normalised path inside the guest. */
  readonly path: string;
  readonly creationFlag: CreationFlag;
  readonly deleteOnTermination: boolean;
  /** Always a URL: a stage-out never writes into the image cache. */
  readonly target: Location;
}

export interface EnvironmentVariable {
  readonly name: string;
  readonly value: string;
}

export interface PosixApplication {
  readonly kind: 'posix';
  /** Absolute, normalised path inside the guest; run as argv[0], no PATH search. */
  readonly executable: string;
  /** Arguments marked with filesystemName are resolved to guest paths; the others are as written (trimmed). */
  readonly arguments: readonly string[];
  /** Absolute guest paths, or null for none (/dev/null). */
  readonly input: string | null;
  readonly output: string | null;
  readonly error: string | null;
  /** Absolute guest path, or null for the guest's default (/). */
  readonly workingDirectory: string | null;
  readonly environment: readonly EnvironmentVariable[];
  /** jsdl-posix:WallTimeLimit in seconds, or null when the document sets none. */
  readonly wallTimeSeconds: number | null;
}

/** xbe:ContinuousTask: boot the instance and run nothing, until the task is terminated. */
export interface ContinuousTask {
  readonly kind: 'continuous';
}

export type XsdlApplication = PosixApplication | ContinuousTask;

/** What the instance is: a QEMU virtual machine (XenBEE's Xen domain) or an LXC container. */
export type TaskRuntime = 'qemu' | 'lxc';
export const TASK_RUNTIMES: readonly TaskRuntime[] = ['qemu', 'lxc'];

export interface XsdlInstance {
  readonly kernel: KernelLocation | null;
  readonly initrd: Location | null;
  readonly image: ImageLocation | null;
}

export interface XsdlJob {
  /** jsdl:JobName, or null when the document gives none. */
  readonly name: string | null;
  readonly application: XsdlApplication;
  readonly runtime: TaskRuntime;
  /** From jsdl:TotalCPUCount, or null for the node's default. */
  readonly cpuCount: number | null;
  /** From jsdl:TotalPhysicalMemory in bytes, or null for the node's default. */
  readonly memoryBytes: number | null;
  readonly instance: XsdlInstance;
  /** In document order. */
  readonly stageIn: readonly StageIn[];
  readonly stageOut: readonly StageOut[];
  /** xbe:Reservation/xbe:Ticket as the client put it in, or null; the engine compares it with the confirm's. */
  readonly ticket: string | null;
  /**
   * Known JSDL elements the document uses that this node does not honour (e.g.
   * "jsdl:TotalVirtualMemory", "jsdl-posix:MemoryLimit"), sorted, for the engine to report.
   */
  readonly ignored: readonly string[];
}

export interface XsdlOptions {
  /** Documents larger than this many bytes are refused before parsing. */
  readonly maxBytes: number;
  /** Name of the document in messages (e.g. "task 3f2a... XSDL"). */
  readonly source: string;
}

/** Why a job description was refused: where (line, column, element) and why. */
export class XsdlError extends ElementError {
  override name = 'XsdlError';
}
