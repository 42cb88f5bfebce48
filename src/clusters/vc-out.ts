// vc-out.xml, the file each node of a virtual cluster finds as /root/vc-out.xml and configures its
// network from, in the shape pragma_boot's current kvm_rocks driver writes (its XmlOutput). Pure.
//
// The frontend's file:
//   <vc>
//     <frontend fqdn=.. gw=.. name=..>  <NET ip mac mtu netmask subnet/> one per interface  </frontend>
//     <compute count=n>  <node cpus gw name> <NET .../> </node> ...  </compute>
//     <network> <dns domain ip search/> </network>
//     <key>ssh public key</key>
//   </vc>
// A compute's file: <frontend fqdn/>, <compute gw name> with its <NET/> elements (no cpus), the same
// <network> and <key>. NET is the network's name (private, public, or an extra one).
//
// The plan is checked whole before any text is written: a file a guest cannot use is worse than none.
import { parseMac } from '../addresses/pool.js';
import { PermanentError } from '../util/errors.js';
import { isUsableHost, parseIpv4, type Ipv4Subnet } from './subnet.js';
import { element, xmlDocument, type XmlNode } from './xml-text.js';

/** A network of the cluster, as every interface on it is described. */
export interface VcNetwork {
  /** The element name of its interfaces: `private`, `public`, or an extra one (e.g. `openflow`). */
  readonly name: string;
  readonly subnet: Ipv4Subnet;
  readonly mtu: number;
}

/** One interface of a node. */
export interface VcInterface {
  /** A VcNetwork's name. */
  readonly network: string;
  readonly ip: string;
  /** Lower case, colon separated. */
  readonly mac: string;
}

export interface VcFrontend {
  /** Its host name: the first label of `fqdn`, as pragma took it. */
  readonly name: string;
  readonly fqdn: string;
  /** Its default gateway: the public network's. */
  readonly gateway: string;
  /** In the order the guest's NICs are: private first, then public (pragma's requirement), then extras. */
  readonly interfaces: readonly VcInterface[];
}

export interface VcCompute {
  /** compute-0, compute-1, ... */
  readonly name: string;
  readonly vcpus: number;
  /** Its default gateway: the frontend's private address. */
  readonly gateway: string;
  readonly interfaces: readonly VcInterface[];
}

export interface VcDns {
  /** Name servers, most preferred first; each is written as its own <dns> element (see `dnsElements`). */
  readonly servers: readonly string[];
  /** pragma wrote "local". */
  readonly search: string;
  /** pragma wrote "". */
  readonly domain: string;
}

export interface VcClusterPlan {
  readonly frontend: VcFrontend;
  readonly computes: readonly VcCompute[];
  readonly networks: readonly VcNetwork[];
  readonly dns: VcDns;
  /** An OpenSSH public key line, authorized for root on the frontend; a trailing newline is dropped. */
  readonly sshPublicKey: string;
}

/** The text of every node's vc-out.xml. */
export interface VcOutFiles {
  readonly frontend: string;
  /** In the plan's order of computes. */
  readonly computes: readonly { readonly name: string; readonly text: string }[];
}

const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;
const NETWORK_NAME = /^[a-z][a-z0-9_-]{0,31}$/;
const SSH_PUBLIC_KEY = /^(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,3}(?: [^\n\r]*)?$/;
const MIN_MTU = 68; // the least an IPv4 link may have (RFC 791)
const MAX_MTU = 65535;

function refuse(field: string, reason: string): never {
  throw new PermanentError(`vc-out: ${field}: ${reason}`);
}

function checkIpv4(text: string, field: string): void {
  try {
    parseIpv4(text, field);
  } catch {
    refuse(field, `"${text}" is not an IPv4 address`);
  }
}

function checkHostName(name: string, field: string): void {
  if (!DNS_LABEL.test(name)) refuse(field, `"${name}" is not a host name (letters, digits and '-', at most 63)`);
}

function checkFqdn(fqdn: string, field: string): void {
  const labels = fqdn.replace(/\.$/, '').split('.');
  if (fqdn.length > 253 || labels.length < 2 || !labels.every((label) => DNS_LABEL.test(label))) {
    refuse(field, `"${fqdn}" is not a fully qualified domain name`);
  }
}

function checkNetworks(networks: readonly VcNetwork[]): Map<string, VcNetwork> {
  const byName = new Map<string, VcNetwork>();
  for (const network of networks) {
    const field = `network ${network.name}`;
    if (!NETWORK_NAME.test(network.name)) refuse(field, 'a network name is a lower-case letter, then letters, digits, "_" or "-" (32 at most)');
    if (byName.has(network.name)) refuse(field, 'given twice');
    if (!Number.isSafeInteger(network.mtu) || network.mtu < MIN_MTU || network.mtu > MAX_MTU) refuse(field, `MTU ${network.mtu} is not ${MIN_MTU}-${MAX_MTU}`);
    byName.set(network.name, network);
  }
  if (!byName.has('private')) refuse('networks', 'the cluster has no "private" network');
  return byName;
}

interface Seen {
  readonly ips: Map<string, string>;
  readonly macs: Map<string, string>;
}

function checkInterfaces(node: string, interfaces: readonly VcInterface[], networks: Map<string, VcNetwork>, seen: Seen): void {
  const onNetwork = new Set<string>();
  interfaces.forEach((nic, index) => {
    const field = `${node} interface ${index}`;
    const network = networks.get(nic.network) ?? refuse(field, `network "${nic.network}" is not one of the cluster's (${[...networks.keys()].join(', ')})`);
    if (onNetwork.has(nic.network)) refuse(field, `a second interface on network ${nic.network}`);
    onNetwork.add(nic.network);
    checkIpv4(nic.ip, `${field} ip`);
    if (!isUsableHost(network.subnet, nic.ip)) {
      refuse(field, `${nic.ip} is not a host address of ${nic.network}'s subnet ${network.subnet.network}/${network.subnet.prefixLength}`);
    }
    const mac = parseMac(nic.mac);
    if (!mac.ok) refuse(field, mac.reason);
    if (mac.mac !== nic.mac) refuse(field, `MAC ${nic.mac} must be written as ${mac.mac}`);
    const ipOwner = seen.ips.get(nic.ip);
    if (ipOwner !== undefined) refuse(field, `${nic.ip} is also ${ipOwner}'s`);
    const macOwner = seen.macs.get(nic.mac);
    if (macOwner !== undefined) refuse(field, `MAC ${nic.mac} is also ${macOwner}'s`);
    seen.ips.set(nic.ip, node);
    seen.macs.set(nic.mac, node);
  });
  if (!onNetwork.has('private')) refuse(node, 'no interface on the private network');
}

/** A gateway must be reachable: a host address of a network the node has an interface on. */
function checkGateway(node: string, gateway: string, interfaces: readonly VcInterface[], networks: Map<string, VcNetwork>): void {
  checkIpv4(gateway, `${node} gateway`);
  const onLink = interfaces.some((nic) => isUsableHost(networks.get(nic.network)!.subnet, gateway));
  if (!onLink) refuse(`${node} gateway`, `${gateway} is on none of its networks (${interfaces.map((nic) => nic.network).join(', ')})`);
  if (interfaces.some((nic) => nic.ip === gateway)) refuse(`${node} gateway`, `${gateway} is the node's own address`);
}

/** The key as it goes into <key>: one line, a trailing newline dropped (as pragma did). */
export function normaliseSshPublicKey(key: string): string {
  const line = key.replace(/\r?\n$/, '');
  if (!SSH_PUBLIC_KEY.test(line)) refuse('key', 'not one OpenSSH public key line ("ssh-ed25519 AAAA... comment")');
  return line;
}

/** Throws, naming the field and the reason, when the plan cannot make files a guest can use. */
export function checkVcClusterPlan(plan: VcClusterPlan): void {
  const networks = checkNetworks(plan.networks);
  const { frontend } = plan;
  checkHostName(frontend.name, 'frontend name');
  checkFqdn(frontend.fqdn, 'frontend fqdn');
  const seen: Seen = { ips: new Map(), macs: new Map() };
  checkInterfaces(frontend.name, frontend.interfaces, networks, seen);
  checkGateway(frontend.name, frontend.gateway, frontend.interfaces, networks);
  const names = new Set([frontend.name]);
  for (const compute of plan.computes) {
    checkHostName(compute.name, 'compute name');
    if (names.has(compute.name)) refuse(compute.name, 'two nodes have this name');
    names.add(compute.name);
    if (!Number.isSafeInteger(compute.vcpus) || compute.vcpus < 1) refuse(compute.name, `${compute.vcpus} vCPUs: a whole number of at least 1 is needed`);
    checkInterfaces(compute.name, compute.interfaces, networks, seen);
    checkGateway(compute.name, compute.gateway, compute.interfaces, networks);
  }
  if (plan.dns.servers.length === 0) refuse('dns', 'no name server');
  plan.dns.servers.forEach((server, index) => checkIpv4(server, `dns server ${index}`));
  normaliseSshPublicKey(plan.sshPublicKey);
}

function interfaceElements(interfaces: readonly VcInterface[], networks: readonly VcNetwork[]): XmlNode[] {
  return interfaces.map((nic) => {
    const network = networks.find((n) => n.name === nic.network)!;
    return element(nic.network, {
      ip: nic.ip, mac: nic.mac, subnet: network.subnet.network, netmask: network.subnet.netmask, mtu: network.mtu,
    });
  });
}

/**
 * pragma wrote one <dns ip=..> with kvm_rocks.conf's single server. Each further server gets its own
 * <dns> after the first rather than a comma list in `ip`: a script that reads the first <dns> (as
 * pragma's did) still finds one address there.
 */
function dnsElements(dns: VcDns): XmlNode {
  return element('network', {}, dns.servers.map((ip) => element('dns', { ip, search: dns.search, domain: dns.domain })));
}

/** The frontend's vc-out.xml. */
export function frontendVcOut(plan: VcClusterPlan): string {
  checkVcClusterPlan(plan);
  const { frontend } = plan;
  return xmlDocument(element('vc', {}, [
    element('frontend', { fqdn: frontend.fqdn, name: frontend.name, gw: frontend.gateway }, interfaceElements(frontend.interfaces, plan.networks)),
    element('compute', { count: plan.computes.length }, plan.computes.map((compute) =>
      element('node', { name: compute.name, cpus: compute.vcpus, gw: compute.gateway }, interfaceElements(compute.interfaces, plan.networks)))),
    dnsElements(plan.dns),
    element('key', {}, normaliseSshPublicKey(plan.sshPublicKey)),
  ]));
}

/** The vc-out.xml of the compute named `name`. */
export function computeVcOut(plan: VcClusterPlan, name: string): string {
  checkVcClusterPlan(plan);
  const compute = plan.computes.find((c) => c.name === name) ?? refuse('compute', `the cluster has no compute named "${name}"`);
  return xmlDocument(element('vc', {}, [
    element('frontend', { fqdn: plan.frontend.fqdn }),
    element('compute', { name: compute.name, gw: compute.gateway }, interfaceElements(compute.interfaces, plan.networks)),
    dnsElements(plan.dns),
    element('key', {}, normaliseSshPublicKey(plan.sshPublicKey)),
  ]));
}

/** Every node's vc-out.xml. */
export function vcOutFiles(plan: VcClusterPlan): VcOutFiles {
  return {
    frontend: frontendVcOut(plan),
    computes: plan.computes.map((compute) => ({ name: compute.name, text: computeVcOut(plan, compute.name) })),
  };
}
