// A sliver's libvirt domain as XML, and what we need back from the XML libvirt returns. Pure.
//
// Every value that comes from outside (names, paths, the kernel command line) reaches the text only
// through the escaper below, and the domain carries our marker in <metadata>, by which recovery and
// cleanup tell our domains from everyone else's.
import { parseMac } from '../../addresses/pool.js';
import { MARKER_ELEMENT, MARKER_NAMESPACE, MARKER_PREFIX, type SliverMarker } from './domain-details.js';
import type { GuestShape } from './shape.js';

export {
  MARKER_ELEMENT, MARKER_NAMESPACE, MARKER_PREFIX, readDomainDetails,
  type DomainDetails, type DomainDisk, type DomainInterface, type SliverMarker,
} from './domain-details.js';

export interface InterfacePlan {
  readonly mac: string;
  /** The host side's device name (tap for qemu, veth for lxc): 1-15 of [A-Za-z0-9_.-]. */
  readonly targetDev: string;
  /** The bridge to join; null: a bare device (type ethernet) that the runtime wires itself. */
  readonly bridge: string | null;
  /** A libvirt network to join instead (type network): the only kind on which a floor is kept. */
  readonly network?: string | null;
}

export interface CommonPlan {
  /** The domain's name: the sliver's name. */
  readonly name: string;
  readonly uuid: string;
  readonly marker: SliverMarker;
  /** vCPUs, memory, CPU weight and cap, bandwidth of every interface. */
  readonly shape: GuestShape;
  /** The host's cgroup version for the cpu controller: libvirt wants cpu.weight's scale on v2. Default 1. */
  readonly cgroupVersion?: 1 | 2;
  readonly interfaces: readonly InterfacePlan[];
}

export interface DiskPlan {
  readonly path: string;
  readonly format: 'qcow2' | 'raw';
  readonly readOnly?: boolean;
  /** What the guest reads in /sys/block/vdX/serial: up to 20 letters, digits and dashes. */
  readonly serial?: string;
}

export interface QemuDomainPlan extends CommonPlan {
  readonly driver: 'qemu';
  /** 'kvm' where the host has /dev/kvm; default 'qemu', software emulation. */
  readonly accel?: 'qemu' | 'kvm';
  /** Direct kernel boot; null: boot from the first disk. */
  readonly boot: { readonly kernel: string; readonly initrd: string | null; readonly cmdline: string | null } | null;
  /** vda, vdb, ... in this order; the first is the sliver's overlay. */
  readonly disks: readonly DiskPlan[];
  /** The serial console's log (virtlogd), rewritten at each start; null: none. */
  readonly consoleLog: string | null;
  /** A VNC display on 127.0.0.1 with a port libvirt picks. */
  readonly vnc: boolean;
  /** The virtio-serial channel of QEMU's guest agent (GUEST_AGENT_CHANNEL); libvirt makes its socket and talks to it. */
  readonly agentChannel?: boolean;
}

export interface LxcDomainPlan extends CommonPlan {
  readonly driver: 'lxc';
  /** The container's first process, a path inside the root. */
  readonly init: string;
  readonly initArgs?: readonly string[];
  /** The host directory that becomes the container's root. */
  readonly rootDir: string;
}

export type DomainPlan = QemuDomainPlan | LxcDomainPlan;

/** The name of QEMU's guest agent's port: qemu-ga opens /dev/virtio-ports/<this> in the guest. */
export const GUEST_AGENT_CHANNEL = 'org.qemu.guest_agent.0';

// ---- writing ---------------------------------------------------------------------------------

type AttrValue = string | number | null | undefined;
interface XmlElement {
  readonly name: string;
  readonly attrs: Readonly<Record<string, AttrValue>>;
  readonly children: readonly (XmlElement | string)[];
}
type Child = XmlElement | string | null | false | undefined | readonly Child[];

function el(name: string, attrs: Record<string, AttrValue> = {}, ...children: Child[]): XmlElement {
  const flat: (XmlElement | string)[] = [];
  const add = (c: Child) => {
    if (Array.isArray(c)) c.forEach(add);
    else if (c !== null && c !== false && c !== undefined) flat.push(c as XmlElement | string);
  };
  children.forEach(add);
  return { name, attrs, children: flat };
}

// XML 1.0 cannot carry these at all, escaped or not.
const NOT_IN_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF\uD800-\uDFFF]/u;
const TEXT_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '\r': '&#13;' };
// In attributes, white space other than a space is escaped too, or a parser would turn it into spaces.
const ATTR_ESCAPES: Record<string, string> = { ...TEXT_ESCAPES, '"': '&quot;', "'": '&apos;', '\t': '&#9;', '\n': '&#10;' };

/** `value` as XML text (or, with `attribute`, a double-quoted attribute's content). */
export function escapeXml(value: string, where: string, attribute = false): string {
  const bad = NOT_IN_XML.exec(value);
  if (bad) throw new Error(`${where}: character U+${bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')} cannot be written in XML`);
  return value.replace(attribute ? /[&<>"'\t\n\r]/g : /[&<>\r]/g, (c) => (attribute ? ATTR_ESCAPES : TEXT_ESCAPES)[c]!);
}

function render(node: XmlElement, indent: string, path: string): string {
  const here = `${path}/${node.name}`;
  const attrs = Object.entries(node.attrs)
    .filter((entry): entry is [string, string | number] => entry[1] !== null && entry[1] !== undefined)
    .map(([k, v]) => ` ${k}="${escapeXml(String(v), `${here}@${k}`, true)}"`)
    .join('');
  if (node.children.length === 0) return `${indent}<${node.name}${attrs}/>`;
  if (node.children.every((c) => typeof c === 'string')) {
    return `${indent}<${node.name}${attrs}>${escapeXml(node.children.join(''), here)}</${node.name}>`;
  }
  const inner = node.children.map((c) => (typeof c === 'string' ? indent + '  ' + escapeXml(c, here) : render(c, indent + '  ', here)));
  return `${indent}<${node.name}${attrs}>\n${inner.join('\n')}\n${indent}</${node.name}>`;
}

// ---- the plan's checks -----------------------------------------------------------------------

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DEVICE = /^[A-Za-z0-9_.-]{1,15}$/;
// libvirt takes these prefixes for its own generated names and would ignore ours.
const RESERVED_DEVICE_PREFIXES = ['vnet', 'vif', 'macvtap', 'macvlan'];
const MAX_DISKS = 26;

function check(ok: boolean, field: string, reason: string): void {
  if (!ok) throw new Error(`domain plan ${field}: ${reason}`);
}

function checkPath(path: string, field: string): void {
  check(path.startsWith('/'), field, `must be an absolute path, got "${path}"`);
}

function checkPlan(plan: DomainPlan): void {
  check(plan.name !== '' && !plan.name.includes('/'), 'name', `"${plan.name}" is not a domain name (empty or with "/")`);
  check(UUID.test(plan.uuid), 'uuid', `"${plan.uuid}" is not a UUID`);
  const { shape } = plan;
  check(Number.isSafeInteger(shape.vcpus) && shape.vcpus > 0, 'shape.vcpus', `must be a positive integer, got ${shape.vcpus}`);
  check(Number.isSafeInteger(shape.memoryKiB) && shape.memoryKiB > 0, 'shape.memoryKiB', `must be a positive integer, got ${shape.memoryKiB}`);
  plan.interfaces.forEach((iface, i) => {
    const field = `interfaces[${i}]`;
    const mac = parseMac(iface.mac);
    check(mac.ok, `${field}.mac`, mac.ok ? '' : mac.reason);
    check(DEVICE.test(iface.targetDev) && iface.targetDev !== '.' && iface.targetDev !== '..', `${field}.targetDev`,
      `"${iface.targetDev}" is not a device name (1-15 of letters, digits, "_", ".", "-")`);
    const reserved = RESERVED_DEVICE_PREFIXES.find((p) => iface.targetDev.startsWith(p));
    check(reserved === undefined, `${field}.targetDev`, `"${iface.targetDev}" starts with "${reserved}", which libvirt keeps for its own names`);
    check(!(iface.bridge && iface.network), field, 'names both a bridge and a network');
  });
  if (plan.driver === 'qemu') {
    check(plan.disks.length <= MAX_DISKS, 'disks', `at most ${MAX_DISKS}, got ${plan.disks.length}`);
    plan.disks.forEach((d, i) => {
      checkPath(d.path, `disks[${i}].path`);
      if (d.serial !== undefined) check(/^[A-Za-z0-9-]{1,20}$/.test(d.serial), `disks[${i}].serial`, `must be 1 to 20 letters, digits or dashes, got "${d.serial}"`);
    });
    if (plan.boot) {
      checkPath(plan.boot.kernel, 'boot.kernel');
      if (plan.boot.initrd !== null) checkPath(plan.boot.initrd, 'boot.initrd');
    }
    if (plan.consoleLog !== null) checkPath(plan.consoleLog, 'consoleLog');
  } else {
    checkPath(plan.rootDir, 'rootDir');
    checkPath(plan.init, 'init');
  }
}

// ---- the domain ------------------------------------------------------------------------------

function cputune(plan: DomainPlan): XmlElement {
  const { shape } = plan;
  const shares = plan.cgroupVersion === 2 ? shape.cpuWeight : shape.cpuShares;
  const capped = shape.cpuQuotaUs !== null;
  // QEMU caps all vCPUs together with global_*; its plain period/quota would cap each vCPU.
  // LXC has no vCPUs: its period/quota are the container's.
  const [period, quota] = plan.driver === 'qemu' ? ['global_period', 'global_quota'] : ['period', 'quota'];
  return el('cputune', {}, el('shares', {}, String(shares)), capped && [el(period, {}, String(shape.cpuPeriodUs)), el(quota, {}, String(shape.cpuQuotaUs))]);
}

function interfaceElement(plan: DomainPlan, iface: InterfacePlan): XmlElement {
  const type = iface.network ? 'network' : iface.bridge ? 'bridge' : 'ethernet';
  const bw = plan.shape.bandwidth;
  // libvirt keeps a floor only on a libvirt network's interfaces and refuses it elsewhere.
  const floor = type === 'network' ? bw?.floorKBps ?? null : null;
  const average = bw?.averageKBps ?? null;
  const bandwidth =
    (average !== null || floor !== null) &&
    el('bandwidth', {},
      el('inbound', { average, floor }),
      average !== null && el('outbound', { average }));
  return el('interface', { type },
    type === 'network' && el('source', { network: iface.network }),
    type === 'bridge' && el('source', { bridge: iface.bridge }),
    el('mac', { address: (parseMac(iface.mac) as { mac: string }).mac }),
    el('target', { dev: iface.targetDev }),
    plan.driver === 'qemu' && el('model', { type: 'virtio' }),
    bandwidth);
}

function markerElement(marker: SliverMarker): XmlElement {
  return el('metadata', {},
    el(`${MARKER_PREFIX}:${MARKER_ELEMENT}`, {
      [`xmlns:${MARKER_PREFIX}`]: MARKER_NAMESPACE, name: marker.name, runtime: marker.runtime, spec: marker.spec, created: marker.created,
      'guest-dir': marker.guestDir,
    }));
}

function qemuParts(plan: QemuDomainPlan): { os: XmlElement; devices: Child[] } {
  const os = el('os', {},
    el('type', { arch: 'x86_64' }, 'hvm'),
    plan.boot && [
      el('kernel', {}, plan.boot.kernel),
      plan.boot.initrd !== null && el('initrd', {}, plan.boot.initrd),
      plan.boot.cmdline !== null && el('cmdline', {}, plan.boot.cmdline),
    ],
    !plan.boot && el('boot', { dev: 'hd' }));
  const devices: Child[] = [
    plan.disks.map((d, i) =>
      el('disk', { type: 'file', device: 'disk' },
        el('driver', { name: 'qemu', type: d.format }),
        el('source', { file: d.path }),
        el('target', { dev: `vd${String.fromCharCode(97 + i)}`, bus: 'virtio' }),
        d.serial !== undefined && el('serial', {}, d.serial),
        d.readOnly === true && el('readonly'))),
    plan.interfaces.map((i) => interfaceElement(plan, i)),
    el('serial', { type: 'pty' },
      plan.consoleLog !== null && el('log', { file: plan.consoleLog, append: 'off' }),
      el('target', { port: 0 })),
    el('console', { type: 'pty' }, el('target', { type: 'serial', port: 0 })),
    // No source path: libvirt picks the socket, and is the agent's one client (qemu-agent-command).
    plan.agentChannel === true && el('channel', { type: 'unix' }, el('target', { type: 'virtio', name: GUEST_AGENT_CHANNEL })),
    plan.vnc && el('graphics', { type: 'vnc', port: -1, autoport: 'yes', listen: '127.0.0.1' }, el('listen', { type: 'address', address: '127.0.0.1' })),
  ];
  return { os, devices };
}

function lxcParts(plan: LxcDomainPlan): { os: XmlElement; devices: Child[] } {
  const os = el('os', {}, el('type', {}, 'exe'), el('init', {}, plan.init), (plan.initArgs ?? []).map((a) => el('initarg', {}, a)));
  const devices: Child[] = [
    el('filesystem', { type: 'mount', accessmode: 'passthrough' }, el('source', { dir: plan.rootDir }), el('target', { dir: '/' })),
    plan.interfaces.map((i) => interfaceElement(plan, i)),
    el('console', { type: 'pty' }),
  ];
  return { os, devices };
}

/** The domain's XML for virDomainDefineXML. Throws, naming the field, on a plan libvirt would misread. */
export function buildDomainXml(plan: DomainPlan): string {
  checkPlan(plan);
  const { os, devices } = plan.driver === 'qemu' ? qemuParts(plan) : lxcParts(plan);
  const domainType = plan.driver === 'qemu' ? plan.accel ?? 'qemu' : 'lxc';
  const memory = String(plan.shape.memoryKiB);
  const domain = el('domain', { type: domainType },
    el('name', {}, plan.name),
    el('uuid', {}, plan.uuid.toLowerCase()),
    markerElement(plan.marker),
    el('memory', { unit: 'KiB' }, memory),
    el('currentMemory', { unit: 'KiB' }, memory),
    el('vcpu', { placement: 'static' }, String(plan.shape.vcpus)),
    cputune(plan),
    os,
    // ACPI, so that a guest can be asked to shut down (Stop) before it is powered off.
    plan.driver === 'qemu' && el('features', {}, el('acpi')),
    el('on_poweroff', {}, 'destroy'),
    el('on_crash', {}, 'destroy'),
    el('devices', {}, devices));
  return render(domain, '', '') + '\n';
}
