// What the virtual clusters' engine works with: their records, their own guest lifecycle, the
// private networks, the node's address pool (the frontend's public pair), the repository and the
// injection of files into a node's disk. Each is a port, so the engine's order of steps and its
// rollback are tested on their own and the adapters against the host.
import type { AddressBook } from '../addresses/address-book.js';
import type { RecordSection } from '../db/record-section.js';
import type { ClusterRecord } from '../db/types.js';
import type { Logger } from '../log.js';
import type { PrivateNetwork } from '../runtimes/libvirt/private-networks.js';
import type { Need } from '../tasks/budget.js';
import type { TaskGuests } from '../tasks/task-context.js';

/** The clusters' records by name (db/record-section.ts). */
export type ClusterBook = RecordSection<ClusterRecord>;

/** What the engine asks of the clusters' guest lifecycle: the tasks' (guests.ts serves both), and each node's disk. */
export interface ClusterGuests extends Omit<TaskGuests, 'check'> {
  /** The path of the guest's copy-on-write disk (its overlay over the base image). */
  overlayOf(name: string): string;
}

export interface ClusterNetworks {
  create(network: PrivateNetwork): Promise<void>;
  remove(name: string): Promise<void>;
  list(): Promise<string[]>;
}

/** A boot dependency's wait, as vc-in.xml gives it (agent and ready are beyond pragma). */
export interface BootWait {
  readonly type: 'clock' | 'agent' | 'ready';
  readonly seconds: number;
}

/** A repository image made ready to boot: its disk (and kernel) in the image cache, what its description asks. */
export interface PreparedImage {
  /** Cache entries: each role's disk image, and a kernel and initrd when the description boots one directly. */
  readonly frontendDisk: string;
  /** null when the description has no compute (a frontend alone is all it can boot). */
  readonly computeDisk: string | null;
  readonly kernel: string | null;
  readonly initrd: string | null;
  readonly frontendMemoryKiB: number | null;
  readonly computeMemoryKiB: number | null;
  readonly frontendVcpus: number;
  readonly wait: BootWait | null;
  /** The private network's subnet and MTU when the description gives them. */
  readonly privateSubnet: string | null;
  readonly privateMtu: number | null;
}

export interface ClusterRepository {
  /** The images the repository offers, by name, with where their description is. */
  list(): Promise<{ readonly name: string; readonly description: string }[]>;
  /** Fetches (once) and checks what the image needs; throws naming what is wrong. */
  prepare(image: string): Promise<PreparedImage>;
}

export interface FileToInject {
  readonly path: string;
  readonly content: string;
  readonly mode: number;
}

export type Injector = (overlay: string, files: readonly FileToInject[], renames: readonly string[]) => Promise<void>;

export interface ClusterSettings {
  readonly maxComputeCpus: number;
  /** The private subnet of a description that gives none (each cluster's network is its own). */
  readonly privateSubnet: string;
  readonly privateMtu: number;
  /** Paths in each node's disk renamed out of the way with the injection (pragma's ifcfg-eth*). */
  readonly renames: readonly string[];
  /** The frontend's public gateway; null: the first address of its subnet. */
  readonly publicGateway: string | null;
  readonly dnsServers: readonly string[];
  /** The DNS domain of the clusters' fully qualified names. */
  readonly domain: string;
  /** How long a boot dependency of type agent or ready waits at the most (the clock waits its value). */
  readonly readyTimeoutMs: number;
}

export interface ClusterContext {
  readonly book: ClusterBook;
  readonly guests: ClusterGuests;
  readonly networks: ClusterNetworks;
  readonly addresses: AddressBook;
  readonly repository: ClusterRepository;
  readonly inject: Injector;
  /** What the node's capacity budget has free now. */
  readonly free: () => Need;
  /** Every MAC the node uses already (pool leases, other clusters' private MACs). */
  readonly macsInUse: () => Iterable<string>;
  readonly settings: ClusterSettings;
  readonly logger: Logger;
  readonly now: () => Date;
}
