// How a virtual cluster's CPUs and memory are cut into a frontend and computes on this node. Pure.
//
// pragma_boot (kvm_rocks) gave each VM container, most free first, one compute of as many CPUs as it
// had free, until NUM_CPUS were placed, and refused a shortfall before creating anything. On one node
// the containers' sizes become `maxComputeCpus`: full computes first, the remainder last (5 CPUs with
// at most 2 each: 2, 2, 1). Unlike pragma, the frontend's vCPUs and every node's memory are counted
// against what the capacity budget has free, so a cluster never overcommits the node it was admitted on.
import { PermanentError } from '../util/errors.js';

/** Memory of each kind of node, in KiB (libvirt's unit). */
export interface NodeMemory {
  readonly frontendKiB: number;
  readonly computeKiB: number;
}

export interface PackingRequest {
  /** The cluster's name on this node: a DNS label; the computes' domains are named after it. */
  readonly clusterName: string;
  /** NUM_CPUS: vCPUs to spread over computes; 0 makes a frontend alone. */
  readonly computeCpus: number;
  /** The most vCPUs one compute gets. */
  readonly maxComputeCpus: number;
  readonly frontendVcpus: number;
  readonly memory: NodeMemory;
}

/** What the node's capacity budget has free now. */
export interface FreeCapacity {
  readonly vcpus: number;
  readonly memoryKiB: number;
}

export interface FrontendShape {
  /** The frontend's domain on this node: the cluster's name. */
  readonly domainName: string;
  readonly vcpus: number;
  readonly memoryKiB: number;
}

export interface ComputeShape {
  /** The name inside the cluster, as pragma's vc-out.xml gives it: compute-0, compute-1, ... */
  readonly name: string;
  /** The domain on this node, unique among clusters: <cluster>-compute-0, ... */
  readonly domainName: string;
  readonly vcpus: number;
  readonly memoryKiB: number;
}

export interface ClusterPacking {
  readonly frontend: FrontendShape;
  /** Largest first; index i is named compute-i. */
  readonly computes: readonly ComputeShape[];
}

/** pragma's default for `mem` when neither the option nor the description says. */
export const DEFAULT_NODE_MEMORY_MIB = 2048;

const KIB_PER_MIB = 1024;
const MAX_HOSTNAME_LABEL = 63;
const DNS_LABEL = /^[a-z](?:[a-z0-9-]*[a-z0-9])?$/;

function requireWhole(value: number, field: string, least: number): void {
  if (!Number.isSafeInteger(value) || value < least) {
    throw new PermanentError(`${field} must be a whole number of at least ${least}, got ${value}`);
  }
}

/** `--mem` as pragma took it, in MiB: `N` for every node or `FE:COMPUTE`. */
export function parseMemoryOption(text: string): NodeMemory {
  const match = /^([1-9][0-9]{0,7})(?::([1-9][0-9]{0,7}))?$/.exec(text.trim());
  if (!match) throw new PermanentError(`mem: "${text}" is not a memory size in MiB (N for every node, or FE:COMPUTE, e.g. 4096:2048)`);
  const frontendMiB = Number(match[1]);
  const computeMiB = match[2] === undefined ? frontendMiB : Number(match[2]);
  return { frontendKiB: frontendMiB * KIB_PER_MIB, computeKiB: computeMiB * KIB_PER_MIB };
}

/**
 * Each node's memory: the `--mem` option when given, else the description's own domains' <memory>
 * (in KiB; the compute's falls back to the frontend's, as a description without a compute image
 * boots computes from the frontend's), else pragma's 2048 MiB.
 */
export function chooseNodeMemory(option: string | null, description: { frontendKiB: number | null; computeKiB: number | null }): NodeMemory {
  if (option !== null) return parseMemoryOption(option);
  const fallback = DEFAULT_NODE_MEMORY_MIB * KIB_PER_MIB;
  const frontendKiB = description.frontendKiB ?? fallback;
  return { frontendKiB, computeKiB: description.computeKiB ?? description.frontendKiB ?? fallback };
}

/** Compute `index`'s name inside the cluster. */
export function computeName(index: number): string {
  return `compute-${index}`;
}

/** Compute `index`'s domain name on this node. */
export function computeDomainName(clusterName: string, index: number): string {
  return `${clusterName}-${computeName(index)}`;
}

function checkRequest(request: PackingRequest, free: FreeCapacity): void {
  requireWhole(request.computeCpus, 'NUM_CPUS', 0);
  requireWhole(request.maxComputeCpus, 'the most vCPUs of one compute', 1);
  requireWhole(request.frontendVcpus, "the frontend's vCPUs", 1);
  requireWhole(request.memory.frontendKiB, "the frontend's memory (KiB)", 1);
  requireWhole(request.memory.computeKiB, "a compute's memory (KiB)", 1);
  requireWhole(free.vcpus, 'free vCPUs', 0);
  requireWhole(free.memoryKiB, 'free memory (KiB)', 0);
  if (!DNS_LABEL.test(request.clusterName)) {
    throw new PermanentError(`cluster name "${request.clusterName}" must be a DNS label: lower-case letters, digits and '-', starting with a letter`);
  }
}

/** The numbers of vCPUs of the computes: full ones of `max` first, then what remains. */
export function splitCpus(total: number, max: number): number[] {
  const sizes: number[] = [];
  for (let left = total; left > 0; left -= Math.min(left, max)) sizes.push(Math.min(left, max));
  return sizes;
}

function mib(kib: number, round: (x: number) => number): number {
  return round(kib / KIB_PER_MIB);
}

/**
 * The cluster's frontend and computes, or a refusal (thrown before anything is made) when the node
 * has not enough vCPUs or memory free for all of them together.
 */
export function packCluster(request: PackingRequest, free: FreeCapacity): ClusterPacking {
  checkRequest(request, free);
  const neededCpus = request.computeCpus + request.frontendVcpus;
  if (neededCpus > free.vcpus) throw new PermanentError(`not enough capacity for ${neededCpus} CPUs (free: ${free.vcpus})`);

  const sizes = splitCpus(request.computeCpus, request.maxComputeCpus);
  const neededKiB = request.memory.frontendKiB + sizes.length * request.memory.computeKiB;
  if (neededKiB > free.memoryKiB) {
    throw new PermanentError(
      `not enough memory for ${mib(neededKiB, Math.ceil)} MiB (free: ${mib(free.memoryKiB, Math.floor)} MiB): ` +
      `a frontend and ${sizes.length} compute${sizes.length === 1 ? '' : 's'}`,
    );
  }
  const lastDomain = computeDomainName(request.clusterName, Math.max(0, sizes.length - 1));
  if (lastDomain.length > MAX_HOSTNAME_LABEL) {
    throw new PermanentError(`cluster name "${request.clusterName}" is too long: "${lastDomain}" would exceed ${MAX_HOSTNAME_LABEL} characters`);
  }
  return {
    frontend: { domainName: request.clusterName, vcpus: request.frontendVcpus, memoryKiB: request.memory.frontendKiB },
    computes: sizes.map((vcpus, index) => ({
      name: computeName(index),
      domainName: computeDomainName(request.clusterName, index),
      vcpus,
      memoryKiB: request.memory.computeKiB,
    })),
  };
}
