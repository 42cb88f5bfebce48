// MAC addresses of a virtual cluster's interfaces, unique on this host. Pure (hashing is no I/O).
//
// pragma left MACs to Rocks, which handed them out from a counter in its database. Here there is no
// such database to ask, so a MAC is derived from the cluster's id, the node's index and the
// interface's index: the same cluster gets the same MACs when it is planned again (after a restart,
// recovery can match domains to records by them), and adding computes leaves the others' MACs alone.
// A derived MAC that another interface on the host already has is passed over for the next
// candidate of the same sequence; only when every candidate is taken is the cluster refused.
import { createHash } from 'node:crypto';
import { PermanentError } from '../util/errors.js';

/**
 * Every cluster MAC starts with this. 0x06: unicast (low bit clear) and locally administered (second
 * bit set), so it can clash with no vendor's address; 0x76 is "v" (virtual cluster). Kept apart
 * from 52:54:00, where libvirt and QEMU pick addresses for interfaces that were given none.
 */
export const CLUSTER_MAC_PREFIX = '06:76';

/** How many derived candidates one interface tries before the cluster is refused. */
export const MAC_CANDIDATES = 16;

/** The most interfaces one node may ask for (the frontend has two: private and public). */
export const MAX_INTERFACES_PER_NODE = 8;

export interface NodeInterfaceCount {
  /** For messages only: compute-0, or the frontend's name. */
  readonly name: string;
  readonly interfaces: number;
}

export interface NodeMacs {
  readonly name: string;
  /** One per interface, in interface order; lower case, colon separated. */
  readonly macs: readonly string[];
}

/** Candidate `attempt` of interface `interfaceIndex` of node `nodeIndex` of the cluster `clusterId`. */
export function derivedMac(clusterId: string, nodeIndex: number, interfaceIndex: number, attempt: number): string {
  // NUL cannot occur in the id's text form here, so no two tuples hash the same input.
  const digest = createHash('sha256').update(`${clusterId}\u0000${nodeIndex}\u0000${interfaceIndex}\u0000${attempt}`).digest();
  const tail = [...digest.subarray(0, 4)].map((byte) => byte.toString(16).padStart(2, '0'));
  return [CLUSTER_MAC_PREFIX, ...tail].join(':');
}

function normalised(mac: string): string {
  return mac.trim().toLowerCase().replaceAll('-', ':');
}

/**
 * MACs for every interface of every node, nodes in the order given (by convention the frontend
 * first, then compute-0, compute-1, ...: a node's index is part of what its MACs derive from).
 * `inUse`: the MACs of every other interface on this host (any case, ':' or '-').
 */
export function clusterMacs(clusterId: string, nodes: readonly NodeInterfaceCount[], inUse: Iterable<string>): NodeMacs[] {
  if (clusterId.length === 0 || clusterId.includes('\u0000')) throw new PermanentError('cluster id must be non-empty text without NUL');
  const taken = new Set([...inUse].map(normalised));
  return nodes.map((node, nodeIndex) => {
    if (!Number.isSafeInteger(node.interfaces) || node.interfaces < 0 || node.interfaces > MAX_INTERFACES_PER_NODE) {
      throw new PermanentError(`${node.name}: ${node.interfaces} interfaces asked for; a node may have 0 to ${MAX_INTERFACES_PER_NODE}`);
    }
    const macs: string[] = [];
    for (let interfaceIndex = 0; interfaceIndex < node.interfaces; interfaceIndex++) {
      const mac = firstFree(clusterId, nodeIndex, interfaceIndex, taken);
      if (mac === null) {
        throw new PermanentError(
          `no free MAC for ${node.name} (interface ${interfaceIndex}) of cluster ${clusterId}: all ${MAC_CANDIDATES} candidates, ` +
          `from ${derivedMac(clusterId, nodeIndex, interfaceIndex, 0)}, are in use on this host`,
        );
      }
      taken.add(mac); // the cluster's own interfaces must differ from one another too
      macs.push(mac);
    }
    return { name: node.name, macs };
  });
}

function firstFree(clusterId: string, nodeIndex: number, interfaceIndex: number, taken: ReadonlySet<string>): string | null {
  for (let attempt = 0; attempt < MAC_CANDIDATES; attempt++) {
    const mac = derivedMac(clusterId, nodeIndex, interfaceIndex, attempt);
    if (!taken.has(mac)) return mac;
  }
  return null;
}
