// What the daemon needs from the XML libvirt returns for a domain: our marker, the console and VNC
// port of a running guest, and the settings to compare with what the spec wants. Pure.
import { XMLParser, XMLValidator } from 'fast-xml-parser';

/** Our marker: <nodemgr:sliver xmlns:nodemgr="urn:nodemgr:sliver:1" .../> in the domain's <metadata>. */
export const MARKER_NAMESPACE = 'urn:nodemgr:sliver:1';
export const MARKER_PREFIX = 'nodemgr';
export const MARKER_ELEMENT = 'sliver';

/** What the marker records: whose domain it is and from which spec it was made. */
export interface SliverMarker {
  readonly name: string;
  /** lxc or qemu. */
  readonly runtime: string;
  /** A digest of the spec the domain was defined from, to tell when it must be defined again. */
  readonly spec: string;
  /** ISO time of creation. */
  readonly created: string;
  /**
   * The guest directory of the daemon that made it: one host may run several daemons (tests do),
   * and each manages only its own domains.
   */
  readonly guestDir: string;
}

export interface DomainInterface {
  readonly type: string | null;
  /** Lower case. */
  readonly mac: string | null;
  readonly targetDev: string | null;
  readonly bridge: string | null;
  readonly network: string | null;
  /** kB/s as libvirt has them; null where not set. */
  readonly inboundAverageKBps: number | null;
  readonly outboundAverageKBps: number | null;
  readonly floorKBps: number | null;
}

export interface DomainDisk {
  readonly source: string | null;
  readonly target: string | null;
  readonly format: string | null;
}

export interface DomainDetails {
  readonly name: string | null;
  readonly uuid: string | null;
  /** The domain type: qemu, kvm, lxc, ... */
  readonly type: string | null;
  /** Our marker; null on a domain that is not ours. */
  readonly marker: SliverMarker | null;
  readonly vcpus: number | null;
  readonly memoryKiB: number | null;
  readonly currentMemoryKiB: number | null;
  readonly cpuShares: number | null;
  /** global_period/global_quota (qemu), else period/quota. */
  readonly cpuPeriodUs: number | null;
  readonly cpuQuotaUs: number | null;
  readonly kernel: string | null;
  readonly initrd: string | null;
  readonly cmdline: string | null;
  readonly disks: readonly DomainDisk[];
  readonly interfaces: readonly DomainInterface[];
  /** Lower case, in interface order (interfaces without a MAC left out). */
  readonly macs: readonly string[];
  /** The host pty of the console of a running guest. */
  readonly consolePty: string | null;
  /** The serial console's log file. */
  readonly consoleLog: string | null;
  /** The VNC port of a running guest; null when it has none or none is assigned yet. */
  readonly vncPort: number | null;
  /** The names of the guest's virtio channels (org.qemu.guest_agent.0: QEMU's guest agent). */
  readonly channels: readonly string[];
}

// Every element as an array, whatever its count, so that one access pattern serves all.
type Node = string | { readonly [key: string]: unknown };
const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseTagValue: false,
  parseAttributeValue: false,
  // Text as written: a kernel command line is compared with the plan's to the letter.
  trimValues: false,
  // Also decodes numeric character references (&#10;), which the default leaves as they are.
  htmlEntities: true,
  isArray: (_name, _path, _leaf, isAttribute) => !isAttribute,
});

function all(node: Node | undefined, name: string): Node[] {
  if (node === undefined || typeof node === 'string') return [];
  const v = node[name];
  return Array.isArray(v) ? (v as Node[]) : [];
}
const first = (node: Node | undefined, name: string): Node | undefined => all(node, name)[0];

function attr(node: Node | undefined, name: string): string | null {
  if (node === undefined || typeof node === 'string') return null;
  const v = node[`@_${name}`];
  return typeof v === 'string' ? v : null;
}

function text(node: Node | undefined): string | null {
  if (node === undefined) return null;
  if (typeof node === 'string') return node;
  const v = node['#text'];
  return typeof v === 'string' ? v : '';
}

function integer(value: string | null): number | null {
  if (value === null || !/^-?[0-9]+$/.test(value.trim())) return null;
  const n = Number(value.trim());
  return Number.isSafeInteger(n) ? n : null;
}

// libvirt's memory units, in bytes.
const UNIT_BYTES: Record<string, number> = {
  b: 1, bytes: 1, kb: 1e3, k: 1024, kib: 1024, mb: 1e6, m: 1024 ** 2, mib: 1024 ** 2,
  gb: 1e9, g: 1024 ** 3, gib: 1024 ** 3, tb: 1e12, t: 1024 ** 4, tib: 1024 ** 4,
};

function kib(node: Node | undefined): number | null {
  const n = integer(text(node));
  const factor = UNIT_BYTES[(attr(node, 'unit') ?? 'KiB').toLowerCase()];
  return n === null || factor === undefined ? null : Math.round((n * factor) / 1024);
}

type Namespaces = ReadonlyMap<string, string>;

/** The prefix -> URI map in force in `node`, given the one around it ('' is the default namespace). */
function scope(outer: Namespaces, node: Node | undefined): Namespaces {
  if (node === undefined || typeof node === 'string') return outer;
  const inner = new Map(outer);
  for (const [key, value] of Object.entries(node)) {
    if (typeof value !== 'string') continue;
    if (key === '@_xmlns') inner.set('', value);
    else if (key.startsWith('@_xmlns:')) inner.set(key.slice('@_xmlns:'.length), value);
  }
  return inner;
}

/** Our marker among the metadata's children, found by namespace URI: libvirt may change the prefix. */
function findMarker(domain: Node, metadata: Node | undefined): SliverMarker | null {
  if (metadata === undefined || typeof metadata === 'string') return null;
  const around = scope(scope(new Map(), domain), metadata);
  for (const key of Object.keys(metadata)) {
    if (key.startsWith('@_') || key === '#text') continue;
    const colon = key.indexOf(':');
    const [prefix, local] = colon < 0 ? ['', key] : [key.slice(0, colon), key.slice(colon + 1)];
    if (local !== MARKER_ELEMENT) continue;
    for (const element of all(metadata, key)) {
      if (scope(around, element).get(prefix) !== MARKER_NAMESPACE) continue;
      return {
        name: attr(element, 'name') ?? '',
        runtime: attr(element, 'runtime') ?? '',
        spec: attr(element, 'spec') ?? '',
        created: attr(element, 'created') ?? '',
        guestDir: attr(element, 'guest-dir') ?? '',
      };
    }
  }
  return null;
}

function consolePty(devices: Node | undefined): string | null {
  for (const c of all(devices, 'console').filter((c) => attr(c, 'type') === 'pty')) {
    const pty = attr(c, 'tty') ?? attr(first(c, 'source'), 'path');
    if (pty) return pty;
  }
  for (const s of all(devices, 'serial').filter((s) => attr(s, 'type') === 'pty')) {
    const pty = attr(first(s, 'source'), 'path');
    if (pty) return pty;
  }
  return null;
}

function vncPort(devices: Node | undefined): number | null {
  const vnc = all(devices, 'graphics').find((g) => attr(g, 'type') === 'vnc');
  const port = integer(attr(vnc, 'port'));
  // -1 is "let libvirt choose", which a running guest has done.
  return port !== null && port > 0 ? port : null;
}

function interfaceDetails(iface: Node): DomainInterface {
  const source = first(iface, 'source');
  const bandwidth = first(iface, 'bandwidth');
  const inbound = first(bandwidth, 'inbound');
  return {
    type: attr(iface, 'type'),
    mac: attr(first(iface, 'mac'), 'address')?.toLowerCase() ?? null,
    targetDev: attr(first(iface, 'target'), 'dev'),
    bridge: attr(source, 'bridge'),
    network: attr(source, 'network'),
    inboundAverageKBps: integer(attr(inbound, 'average')),
    outboundAverageKBps: integer(attr(first(bandwidth, 'outbound'), 'average')),
    floorKBps: integer(attr(inbound, 'floor')),
  };
}

/** Reads the XML of one domain as libvirt returns it. Throws when it is not well-formed XML of a domain. */
export function readDomainDetails(xml: string): DomainDetails {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new Error(`domain XML is not well-formed: line ${valid.err.line}: ${valid.err.msg}`);
  const domain = first(parser.parse(xml) as Node, 'domain');
  if (domain === undefined) throw new Error('domain XML has no <domain> element');
  const devices = first(domain, 'devices');
  const os = first(domain, 'os');
  const tune = first(domain, 'cputune');
  const interfaces = all(devices, 'interface').map(interfaceDetails);
  const serialLog = all(devices, 'serial').map((s) => attr(first(s, 'log'), 'file')).find((f) => f !== null);
  return {
    name: text(first(domain, 'name')),
    uuid: text(first(domain, 'uuid')),
    type: attr(domain, 'type'),
    marker: findMarker(domain, first(domain, 'metadata')),
    vcpus: integer(text(first(domain, 'vcpu'))),
    memoryKiB: kib(first(domain, 'memory')),
    currentMemoryKiB: kib(first(domain, 'currentMemory')),
    cpuShares: integer(text(first(tune, 'shares'))),
    cpuPeriodUs: integer(text(first(tune, 'global_period') ?? first(tune, 'period'))),
    cpuQuotaUs: integer(text(first(tune, 'global_quota') ?? first(tune, 'quota'))),
    kernel: text(first(os, 'kernel')),
    initrd: text(first(os, 'initrd')),
    cmdline: text(first(os, 'cmdline')),
    disks: all(devices, 'disk').map((d) => ({
      source: attr(first(d, 'source'), 'file') ?? attr(first(d, 'source'), 'dev'),
      target: attr(first(d, 'target'), 'dev'),
      format: attr(first(d, 'driver'), 'type'),
    })),
    interfaces,
    macs: interfaces.flatMap((i) => (i.mac === null ? [] : [i.mac])),
    consolePty: consolePty(devices),
    consoleLog: serialLog ?? null,
    vncPort: vncPort(devices),
    channels: all(devices, 'channel')
      .map((c) => first(c, 'target'))
      .filter((target) => attr(target, 'type') === 'virtio')
      .flatMap((target) => attr(target, 'name') ?? []),
  };
}
