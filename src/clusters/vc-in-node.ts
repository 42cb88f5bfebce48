// One node of a description (<frontend> or <compute>): the few things read from its unmodified
// libvirt <domain> (memory, vCPUs, the disk's file, the interfaces in order) and pragma's <file>
// that says how the disk image is stored in the repository. Everything else in the domain (its
// name, MACs, bridges, emulator, boot order) is the site's business, not the image's, and is left
// unread, as pragma left it.
import {
  childrenNamed, readChildren, refuse, requiredAttribute, textOf, type Occurs, type VcElement,
} from './vc-in-tree.js';
import type { VcImageFile, VcImageFormat, VcNetworkName, VcNodeTemplate } from './vc-in-types.js';
import { memoryUnitBytes, relativeFilePath, wholeNumber } from './vc-in-values.js';

/** The most memory a node may ask for: 16 TiB, in KiB. */
const MAX_MEMORY_KIB = 16 * 1024 ** 3;
const MAX_VCPUS = 4096;

/** pragma's storage types of <file type>: "splited" was its word for an image cut into parts. */
const FILE_TYPES: Readonly<Record<string, VcImageFormat>> = {
  gzip: 'gzip', raw: 'raw', splited: 'raw', splited_gzip: 'gzip',
};

export type NodeRole = 'frontend' | 'compute';

/** What a frontend's and a compute's interfaces are on, by position, when a domain does not say. */
const CONVENTIONAL_NETWORKS: Readonly<Record<NodeRole, readonly VcNetworkName[]>> = {
  frontend: ['private', 'public'],
  compute: ['private'],
};

/** The template of a <frontend> or <compute> element; the compute's boot_dependency is read by the caller. */
export function readNode(element: VcElement, role: NodeRole): VcNodeTemplate {
  const spec: Record<string, Occurs> = { domain: 'one', file: 'optional' };
  if (role === 'compute') spec['boot_dependency'] = 'optional';
  const children = readChildren(element, spec);
  const domain = children.one('domain');
  const source = readDiskSource(domain);
  const file = children.opt('file');
  return {
    memoryKiB: readMemory(domain),
    vcpus: readVcpus(domain),
    disk: file === null ? imageOfSource(source) : imageOfFile(file, source.path),
    interfaces: readInterfaces(domain, role),
    ...readDirectBoot(domain),
  };
}

/** <os><kernel> and <initrd>: files next to the description, fetched into the image cache like the disk. */
function readDirectBoot(domain: VcElement): { kernel: string | null; initrd: string | null } {
  const os = onlyChild(domain, 'os');
  const fileOf = (name: 'kernel' | 'initrd'): string | null => {
    const element = os === null ? null : onlyChild(os, name);
    if (element === null) return null;
    const path = relativeFilePath(textOf(element));
    if (typeof path !== 'string') refuse(element, `file: ${path.reason}`);
    return path as string;
  };
  const kernel = fileOf('kernel');
  const initrd = fileOf('initrd');
  if (initrd !== null && kernel === null) refuse(os!, 'has an <initrd> without a <kernel>');
  return { kernel, initrd };
}

function onlyChild(parent: VcElement, name: string): VcElement | null {
  const found = childrenNamed(parent, name);
  if (found.length > 1) refuse(found[1]!, `a second <${name}> in <${parent.name}>`);
  return found[0] ?? null;
}

function readMemory(domain: VcElement): number {
  const memory = onlyChild(domain, 'memory');
  if (memory === null) refuse(domain, 'has no <memory> (libvirt requires it)');
  const perUnit = memoryUnitBytes(memory!.attributes.get('unit'));
  if (typeof perUnit !== 'number') refuse(memory!, perUnit.reason);
  const amount = wholeNumber(textOf(memory!), 1, Number.MAX_SAFE_INTEGER);
  if (typeof amount !== 'number') refuse(memory!, amount.reason);
  const bytes = (amount as number) * (perUnit as number);
  const kib = Math.ceil(bytes / 1024);
  if (!Number.isSafeInteger(bytes) || kib > MAX_MEMORY_KIB) refuse(memory!, `${amount} ${memory!.attributes.get('unit') ?? 'KiB'} is more than 16 TiB`);
  return kib;
}

function readVcpus(domain: VcElement): number {
  const vcpu = onlyChild(domain, 'vcpu');
  if (vcpu === null) return 1;
  const n = wholeNumber(textOf(vcpu), 1, MAX_VCPUS);
  if (typeof n !== 'number') refuse(vcpu, n.reason);
  return n as number;
}

interface DiskSource {
  /** Relative, normalised path of <source file>. */
  readonly path: string;
  /** <driver type>: raw or qcow2. */
  readonly driverType: 'raw' | 'qcow2';
  readonly element: VcElement;
}

/** The one disk of the domain (pragma's images have a single disk; CD-ROMs and floppies are not disks). */
function readDiskSource(domain: VcElement): DiskSource {
  const devices = onlyChild(domain, 'devices');
  if (devices === null) refuse(domain, 'has no <devices> (and so no disk)');
  const disks = childrenNamed(devices!, 'disk').filter((d) => (d.attributes.get('device') ?? 'disk') === 'disk');
  if (disks.length === 0) refuse(devices!, 'has no <disk device="disk">: a node needs its disk image');
  if (disks.length > 1) refuse(disks[1]!, 'a second disk: a node of a virtual cluster has a single disk image');
  const disk = disks[0]!;
  const type = disk.attributes.get('type') ?? 'file';
  const source = onlyChild(disk, 'source');
  if (source === null) refuse(disk, 'has no <source file="...">');
  if (type !== 'file' || !source!.attributes.has('file')) {
    refuse(type === 'file' ? source! : disk, `a disk of type ${JSON.stringify(type)} is not accepted: give the image as <disk type="file"><source file="NAME"/> next to the description`);
  }
  const path = relativeFilePath(source!.attributes.get('file')!);
  if (typeof path !== 'string') refuse(source!, `file: ${path.reason}`);
  const driver = onlyChild(disk, 'driver');
  const driverType = driver?.attributes.get('type') ?? 'raw';
  if (driverType !== 'raw' && driverType !== 'qcow2') {
    refuse(driver!, `disk driver type ${JSON.stringify(driverType.slice(0, 20))} is not accepted (raw or qcow2)`);
  }
  return { path: path as string, driverType, element: source! };
}

/** The image as <source file> alone says it: compressed when its name ends in ".gz" (pragma's README). */
function imageOfSource(source: DiskSource): VcImageFile {
  const format: VcImageFormat = source.path.endsWith('.gz') ? 'gzip' : source.driverType;
  if (format === 'gzip' && source.path.slice(source.path.lastIndexOf('/') + 1) === '.gz') {
    refuse(source.element, 'file: a compressed image needs a name before ".gz"');
  }
  return { path: source.path, format, parts: [source.path] };
}

/** The image as pragma's <file type="..."><part>...</part></file> stores it. */
function imageOfFile(file: VcElement, path: string): VcImageFile {
  const children = readChildren(file, { part: 'many' });
  const typeText = requiredAttribute(file, 'type');
  const format = FILE_TYPES[typeText];
  if (format === undefined) refuse(file, `type ${JSON.stringify(typeText.slice(0, 20))} is not one of ${Object.keys(FILE_TYPES).join(', ')}`);
  const parts = children.all('part').map((part) => {
    const partPath = relativeFilePath(textOf(part));
    if (typeof partPath !== 'string') refuse(part, partPath.reason);
    return partPath as string;
  });
  if (parts.length === 0) refuse(file, 'has no <part>: name the file(s) the image is stored in');
  if (format === 'gzip' && path.endsWith('.gz')) {
    refuse(file, `the domain's <source file="${path}"> should name the image once decompressed, not the compressed file`);
  }
  return { path, format: format!, parts };
}

/**
 * The network of each interface, in order: <interface type="network"><source network="private">
 * names it; otherwise pragma's convention by position (a frontend's first is private, its second
 * public; a compute's only one private).
 */
function readInterfaces(domain: VcElement, role: NodeRole): VcNetworkName[] {
  const devices = onlyChild(domain, 'devices')!;
  const expected = CONVENTIONAL_NETWORKS[role];
  const interfaces = childrenNamed(devices, 'interface');
  const networks = interfaces.map((element, i): VcNetworkName => {
    const named = element.attributes.get('type') === 'network' ? onlyChild(element, 'source')?.attributes.get('network') : undefined;
    if (named === 'private' || named === 'public') return named;
    if (named !== undefined) refuse(element, `network ${JSON.stringify(named.slice(0, 40))} is not one a virtual cluster's node is on (private or public)`);
    const conventional = expected[i];
    if (conventional === undefined) {
      refuse(element, `a ${role} has ${expected.length === 1 ? 'one interface' : `${expected.length} interfaces`} (${expected.join(', ')}); this is number ${i + 1}`);
    }
    return conventional!;
  });
  for (const network of expected) {
    const count = networks.filter((n) => n === network).length;
    if (count !== 1) {
      refuse(count === 0 ? devices : interfaces[networks.lastIndexOf(network)]!,
        `a ${role} needs ${count === 0 ? 'an' : 'exactly one'} interface on the ${network} network (it has ${count})`);
    }
  }
  // With each expected network counted once and no interface past them, the list is exactly those.
  return networks;
}
