// IPv4 subnet arithmetic for a virtual cluster's networks. Pure.
//
// pragma_boot found the frontend's private address by replacing every ".0" octet of the subnet with
// ".1" and counted the computes down from ".255.254": right for 10.1.0.0/16 and wrong for almost any
// other prefix (a /24 gave addresses outside the subnet). Here every address comes from the prefix
// length: the frontend takes the first usable address, the computes the ones after it, and a subnet
// that cannot hold the cluster is refused before anything is made.
import { PermanentError } from '../util/errors.js';

export interface Ipv4Subnet {
  /** The network address, e.g. 10.1.0.0. */
  readonly network: string;
  /** 0-30: a /31 or /32 has no host addresses beside its network and broadcast addresses. */
  readonly prefixLength: number;
  /** The dotted form of the prefix, e.g. 255.255.0.0. */
  readonly netmask: string;
  readonly broadcast: string;
  /** Addresses a node may take: all but the network and broadcast addresses. */
  readonly usableHosts: number;
}

/** The longest prefix that still leaves a host address between the network and broadcast addresses. */
export const LONGEST_USABLE_PREFIX = 30;

const TWO_TO_32 = 2 ** 32;

/** `text` as a 32-bit unsigned number; throws, naming `field`, when it is not a dotted-quad IPv4 address. */
export function parseIpv4(text: string, field: string): number {
  const octets = text.split('.');
  if (octets.length !== 4) throw new PermanentError(`${field}: "${text}" is not an IPv4 address (four numbers 0-255 separated by dots)`);
  let value = 0;
  for (const octet of octets) {
    // A leading zero reads as octal to inet_aton and as decimal to most people: refuse the ambiguity.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(octet) || Number(octet) > 255) {
      throw new PermanentError(`${field}: "${text}" is not an IPv4 address (octet "${octet}" is not a number 0-255 without leading zeros)`);
    }
    value = value * 256 + Number(octet);
  }
  return value;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

function maskOf(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (TWO_TO_32 - 2 ** (32 - prefixLength));
}

/** The prefix length of a dotted netmask; throws when its ones are not contiguous from the left. */
export function prefixOfNetmask(netmask: string, field: string): number {
  const mask = parseIpv4(netmask, field);
  const hostBits = TWO_TO_32 - mask; // for a contiguous mask, a power of two
  const prefixLength = 32 - Math.log2(hostBits);
  if (!Number.isInteger(prefixLength)) {
    throw new PermanentError(`${field}: netmask ${netmask} is not contiguous (it must be ones followed by zeros, e.g. 255.255.255.0)`);
  }
  return prefixLength;
}

function subnetOf(network: number, prefixLength: number, field: string): Ipv4Subnet {
  const size = 2 ** (32 - prefixLength);
  const text = `${formatIpv4(network)}/${prefixLength}`;
  if (prefixLength > LONGEST_USABLE_PREFIX) {
    throw new PermanentError(`${field}: subnet ${text} has no usable host addresses (a cluster network needs /${LONGEST_USABLE_PREFIX} or shorter)`);
  }
  return {
    network: formatIpv4(network),
    prefixLength,
    netmask: formatIpv4(maskOf(prefixLength)),
    broadcast: formatIpv4(network + size - 1),
    usableHosts: size - 2,
  };
}

function checkedNetwork(address: string, prefixLength: number, field: string): number {
  const value = parseIpv4(address, field);
  const network = value - (value % 2 ** (32 - prefixLength));
  if (network !== value) {
    throw new PermanentError(`${field}: ${address} is not the network address of a /${prefixLength} (that network is ${formatIpv4(network)})`);
  }
  return network;
}

function parsePrefixLength(text: string, field: string): number {
  if (!/^(0|[1-9][0-9]?)$/.test(text) || Number(text) > 32) {
    throw new PermanentError(`${field}: "/${text}" is not a prefix length (a number 0-32)`);
  }
  return Number(text);
}

/** A subnet written as CIDR, `10.1.0.0/16`; the address must be the network address. */
export function parseCidr(text: string, field: string): Ipv4Subnet {
  const slash = text.indexOf('/');
  if (slash < 0) throw new PermanentError(`${field}: "${text}" is not a subnet in CIDR form (address/prefix, e.g. 10.1.0.0/16)`);
  const prefixLength = parsePrefixLength(text.slice(slash + 1), field);
  return subnetOf(checkedNetwork(text.slice(0, slash), prefixLength, field), prefixLength, field);
}

/** A subnet written as a network address and a netmask, as vc-in.xml and `rocks list network` give it. */
export function subnetFromNetmask(network: string, netmask: string, field: string): Ipv4Subnet {
  const prefixLength = prefixOfNetmask(netmask, field);
  return subnetOf(checkedNetwork(network, prefixLength, field), prefixLength, field);
}

/** The subnet a host address belongs to, e.g. 192.0.2.11 with /24 → 192.0.2.0/24 (a pool entry's network). */
export function subnetOfHost(address: string, prefixLength: number, field: string): Ipv4Subnet {
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32) {
    throw new PermanentError(`${field}: "/${prefixLength}" is not a prefix length (a number 0-32)`);
  }
  const value = parseIpv4(address, field);
  const subnet = subnetOf(value - (value % 2 ** (32 - prefixLength)), prefixLength, field);
  if (!isUsableHost(subnet, address)) {
    throw new PermanentError(`${field}: ${address} is the ${address === subnet.network ? 'network' : 'broadcast'} address of ${describeSubnet(subnet)}, not a host address`);
  }
  return subnet;
}

/** `10.1.0.0/16`. */
export function describeSubnet(subnet: Ipv4Subnet): string {
  return `${subnet.network}/${subnet.prefixLength}`;
}

/** Whether `address` lies strictly between the network and broadcast addresses of `subnet`. */
export function isUsableHost(subnet: Ipv4Subnet, address: string): boolean {
  const value = parseIpv4(address, 'address');
  const network = parseIpv4(subnet.network, 'network');
  return value > network && value <= network + subnet.usableHosts;
}

/** The `index`-th usable address (0: the first after the network address); throws past the last one. */
export function usableAddress(subnet: Ipv4Subnet, index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= subnet.usableHosts) {
    throw new PermanentError(`subnet ${describeSubnet(subnet)} has ${subnet.usableHosts} usable addresses; there is no address number ${index + 1}`);
  }
  return formatIpv4(parseIpv4(subnet.network, 'network') + 1 + index);
}

/** The frontend's private address: the first usable one. */
export function frontendAddress(subnet: Ipv4Subnet): string {
  return usableAddress(subnet, 0);
}

/** Compute `index`'s private address (0-based): the usable addresses after the frontend's, in order. */
export function computeAddress(subnet: Ipv4Subnet, index: number): string {
  return usableAddress(subnet, index + 1);
}

/**
 * The computes' default gateway. Under pragma the computes' route table (Rocks') pointed at the
 * frontend's private address, which routes for them; kept so images built for pragma work unchanged.
 */
export function privateGateway(subnet: Ipv4Subnet): string {
  return frontendAddress(subnet);
}

/** Refuses a subnet that cannot give every node of the cluster (frontend and computes) an address. */
export function requireRoom(subnet: Ipv4Subnet, nodes: number): void {
  if (subnet.usableHosts < nodes) {
    throw new PermanentError(`subnet ${describeSubnet(subnet)} has ${subnet.usableHosts} usable addresses; the cluster needs ${nodes}`);
  }
}
