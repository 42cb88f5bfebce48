// A virtual cluster's description (pragma_boot's vc-in.xml) -> the typed VcDescription the node
// boots a cluster from. Pure: text in, a description or a VcInError out.
//
// The format is pragma's: <vc> holds <virtualization>, a <frontend> and an optional <compute>, each
// wrapping an unmodified libvirt <domain> (plus pragma's <file> for a compressed or split image),
// the compute's <boot_dependency>, and <networks>. pragma itself read only the disk's file and the
// architecture; this reader also reads what the node must plan with (memory, vCPUs, interfaces,
// the boot dependency, which pragma documented and never honoured), and refuses what it cannot
// honour instead of failing later. pragma's own elements are read strictly (an unknown one is an
// error); inside a libvirt <domain>, elements this reader does not need are left alone.
import { readNode } from './vc-in-node.js';
import {
  buildTree, decodeVcIn, errorAt, readChildren, Refusal, refuse, requiredAttribute, textOf, type VcElement,
} from './vc-in-tree.js';
import {
  VC_WAIT_TYPES, type VcBootDependency, type VcDescription, type VcInOptions, type VcNetwork, type VcWaitType,
} from './vc-in-types.js';
import { ipv4Value, netmaskPrefix, networkOf, wholeNumber } from './vc-in-values.js';

export * from './vc-in-types.js';

/** The longest wait a boot dependency may ask for: a day. */
const MAX_WAIT_SECONDS = 86_400;

/**
 * Parses and validates a virtual cluster's description. Throws VcInError (`<source> line L column
 * C: <element>: <reason>`) when it is too large, not well-formed, has a DOCTYPE, or describes a
 * cluster this node cannot boot.
 */
export function parseVcIn(text: string | Uint8Array, options: VcInOptions): VcDescription {
  const { maxBytes, source } = options;
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new RangeError(`parseVcIn: maxBytes must be a whole number > 0, got ${maxBytes}`);
  const decoded = decodeVcIn(text, maxBytes, source);
  const root = buildTree(decoded, source);
  try {
    return readVc(root);
  } catch (error) {
    if (error instanceof Refusal) throw errorAt(source, decoded, error.element.at, error.element.name, error.why);
    throw error;
  }
}

function readVc(root: VcElement): VcDescription {
  if (root.name !== 'vc') refuse(root, 'the root element must be <vc> (a virtual cluster description)');
  const children = readChildren(root, {
    // <driver> named a client driver directory in pragma's 2013 scripts; it means nothing here.
    virtualization: 'one', driver: 'optional', frontend: 'one', compute: 'optional', networks: 'optional', files: 'optional',
  });
  const files = children.opt('files');
  if (files !== null) {
    refuse(files, 'the top-level <files> of 2014 is not read; put <file type="..."><part>...</part></file> in <frontend> and <compute>');
  }
  readVirtualization(children.one('virtualization'));
  const computeElement = children.opt('compute');
  const networks = children.opt('networks');
  return {
    arch: 'x86_64',
    frontend: readNode(children.one('frontend'), 'frontend'),
    compute: computeElement === null ? null : readNode(computeElement, 'compute'),
    bootDependency: computeElement === null ? null : readBootDependency(computeElement),
    networks: networks === null ? [] : readNetworks(networks),
    frontendPublicDevice: networks === null ? null : readFrontendDevice(networks),
  };
}

function readVirtualization(element: VcElement): void {
  const arch = requiredAttribute(element, 'arch');
  if (arch !== 'x86_64') refuse(element, `arch ${JSON.stringify(arch.slice(0, 20))} is not supported (x86_64)`);
  const engine = element.attributes.get('engine');
  if (engine !== undefined && engine !== 'kvm') refuse(element, `engine ${JSON.stringify(engine.slice(0, 20))} is not supported (kvm)`);
  const type = element.attributes.get('type');
  if (type !== undefined && type !== 'hvm') refuse(element, `type ${JSON.stringify(type.slice(0, 20))} is not supported (hvm)`);
  readChildren(element, {});
}

function readBootDependency(compute: VcElement): VcBootDependency | null {
  const dependency = compute.children.find((c) => c.name === 'boot_dependency');
  if (dependency === undefined) return null;
  const parent = requiredAttribute(dependency, 'parent');
  if (parent !== 'frontend') refuse(dependency, `parent ${JSON.stringify(parent.slice(0, 40))}: computes can only depend on the frontend`);
  const wait = readChildren(dependency, { wait: 'one' }).one('wait');
  readChildren(wait, {});
  const type = requiredAttribute(wait, 'type');
  if (!(VC_WAIT_TYPES as readonly string[]).includes(type)) {
    refuse(wait, `type ${JSON.stringify(type.slice(0, 20))} is not one of ${VC_WAIT_TYPES.join(', ')}`);
  }
  const seconds = wholeNumber(requiredAttribute(wait, 'value'), 1, MAX_WAIT_SECONDS);
  if (typeof seconds !== 'number') refuse(wait, `value: ${seconds.reason} (seconds)`);
  return { parent: 'frontend', wait: { type: type as VcWaitType, seconds: seconds as number } };
}

/** Each setting of a network may be an attribute (vc-out's style) or a child element (vc-in's README). */
const NETWORK_SETTINGS = ['ipaddress', 'subnet', 'netmask', 'mtu'] as const;
type NetworkSetting = (typeof NETWORK_SETTINGS)[number];

function readNetworks(networks: VcElement): VcNetwork[] {
  const children = readChildren(networks, { network: 'many', frontend: 'optional' });
  const seen = new Set<string>();
  return children.all('network').map((element) => {
    const network = readNetwork(element);
    if (seen.has(network.name)) refuse(element, `network ${network.name} is described twice`);
    seen.add(network.name);
    return network;
  });
}

function readNetwork(element: VcElement): VcNetwork {
  const name = requiredAttribute(element, 'name');
  if (!/^[a-z][a-z0-9_-]{0,31}$/.test(name)) {
    refuse(element, `name ${JSON.stringify(name.slice(0, 40))} is not a network name (a lower-case letter, then up to 31 of a-z 0-9 _ -)`);
  }
  const children = readChildren(element, { ipaddress: 'optional', subnet: 'optional', netmask: 'optional', mtu: 'optional' });
  const setting = (key: NetworkSetting): { text: string; at: VcElement } | null => {
    const child = children.opt(key);
    const attribute = element.attributes.get(key);
    if (child !== null && attribute !== undefined) refuse(child, `${key} is given both as an attribute and as an element`);
    if (child !== null) return { text: textOf(child), at: child };
    return attribute === undefined ? null : { text: attribute.trim(), at: element };
  };
  const address = ipv4Setting(setting('ipaddress'), 'ipaddress');
  const subnet = ipv4Setting(setting('subnet'), 'subnet');
  const netmask = setting('netmask');
  if (netmask !== null && netmaskPrefix(netmask.text) === null) {
    refuse(netmask.at, `netmask ${JSON.stringify(netmask.text.slice(0, 40))} is not a contiguous IPv4 netmask such as 255.255.0.0`);
  }
  const mtuText = setting('mtu');
  const mtu = mtuText === null ? null : wholeNumber(mtuText.text, 68, 65_535);
  if (mtu !== null && typeof mtu !== 'number') refuse(mtuText!.at, `mtu: ${mtu.reason}`);
  if (netmask !== null) {
    const mask = ipv4Value(netmask.text)!;
    if (subnet !== null && networkOf(ipv4Value(subnet)!, mask) !== ipv4Value(subnet)) {
      refuse(element, `subnet ${subnet} has host bits set under netmask ${netmask.text}`);
    }
    if (subnet !== null && address !== null && networkOf(ipv4Value(address)!, mask) !== ipv4Value(subnet)) {
      refuse(element, `address ${address} is not in subnet ${subnet}/${netmask.text}`);
    }
  }
  return { name, address, subnet, netmask: netmask?.text ?? null, mtu: mtu as number | null };
}

function ipv4Setting(setting: { text: string; at: VcElement } | null, key: string): string | null {
  if (setting === null) return null;
  if (ipv4Value(setting.text) === null) refuse(setting.at, `${key} ${JSON.stringify(setting.text.slice(0, 40))} is not an IPv4 address`);
  return setting.text;
}

/** <networks><frontend><public>eth1</public></frontend>: the frontend image's name for its public device. */
function readFrontendDevice(networks: VcElement): string | null {
  const frontend = networks.children.find((c) => c.name === 'frontend');
  if (frontend === undefined) return null;
  const publicDevice = readChildren(frontend, { public: 'optional' }).opt('public');
  if (publicDevice === null) return null;
  const device = textOf(publicDevice);
  if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(device)) {
    refuse(publicDevice, `${JSON.stringify(device.slice(0, 40))} is not a network device name (1 to 15 letters, digits, "_", "-", ".", ":" or "@")`);
  }
  return device;
}
