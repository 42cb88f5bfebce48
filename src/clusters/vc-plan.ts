// A packed cluster, its networks and its MACs put together into what vc-out.xml says. Pure.
//
// The addresses follow subnet.ts (frontend first, computes after it) on the private network; the
// frontend's public address, prefix and gateway come from the node's address pool. The computes'
// gateway is the frontend's private address, as under pragma, where the frontend routes for them.
import { PermanentError } from '../util/errors.js';
import type { NodeInterfaceCount, NodeMacs } from './macs.js';
import type { ClusterPacking } from './packing.js';
import { computeAddress, frontendAddress, privateGateway, requireRoom, subnetOfHost, type Ipv4Subnet } from './subnet.js';
import { checkVcClusterPlan, type VcClusterPlan, type VcDns } from './vc-out.js';

/** The frontend's public side, from the node's address pool. */
export interface PublicAddress {
  readonly ip: string;
  readonly prefixLength: number;
  readonly gateway: string;
  readonly mtu: number;
}

export interface VcAddressing {
  /** The frontend's public name; its first label becomes the frontend's host name. */
  readonly fqdn: string;
  readonly privateSubnet: Ipv4Subnet;
  readonly privateMtu: number;
  readonly publicAddress: PublicAddress;
  readonly dns: VcDns;
  readonly sshPublicKey: string;
  /** From `clusterMacs(id, macRequest(packing), inUse)`: the frontend's [private, public], then each compute's [private]. */
  readonly macs: readonly NodeMacs[];
}

/** The interfaces each node needs, in the order `assembleVcCluster` reads the MACs. */
export function macRequest(packing: ClusterPacking): NodeInterfaceCount[] {
  return [
    { name: packing.frontend.domainName, interfaces: 2 },
    ...packing.computes.map((compute) => ({ name: compute.name, interfaces: 1 })),
  ];
}

function macsOf(addressing: VcAddressing, nodeIndex: number, name: string, count: number): readonly string[] {
  const macs = addressing.macs[nodeIndex]?.macs;
  if (macs === undefined || macs.length !== count) {
    throw new PermanentError(`${name}: ${count} MAC${count === 1 ? '' : 's'} expected, ${macs?.length ?? 0} given`);
  }
  return macs;
}

/** The cluster's vc-out plan; throws when its subnet cannot hold it or any value is unusable. */
export function assembleVcCluster(packing: ClusterPacking, addressing: VcAddressing): VcClusterPlan {
  const { privateSubnet, publicAddress } = addressing;
  requireRoom(privateSubnet, 1 + packing.computes.length);
  const publicSubnet = subnetOfHost(publicAddress.ip, publicAddress.prefixLength, 'public address');
  const [frontendPrivateMac, frontendPublicMac] = macsOf(addressing, 0, packing.frontend.domainName, 2) as [string, string];
  const plan: VcClusterPlan = {
    frontend: {
      name: addressing.fqdn.split('.')[0]!,
      fqdn: addressing.fqdn,
      gateway: publicAddress.gateway,
      interfaces: [
        { network: 'private', ip: frontendAddress(privateSubnet), mac: frontendPrivateMac },
        { network: 'public', ip: publicAddress.ip, mac: frontendPublicMac },
      ],
    },
    computes: packing.computes.map((compute, index) => ({
      name: compute.name,
      vcpus: compute.vcpus,
      gateway: privateGateway(privateSubnet),
      interfaces: [{ network: 'private', ip: computeAddress(privateSubnet, index), mac: macsOf(addressing, index + 1, compute.name, 1)[0]! }],
    })),
    networks: [
      { name: 'private', subnet: privateSubnet, mtu: addressing.privateMtu },
      { name: 'public', subnet: publicSubnet, mtu: publicAddress.mtu },
    ],
    dns: addressing.dns,
    sshPublicKey: addressing.sshPublicKey,
  };
  checkVcClusterPlan(plan);
  return plan;
}
