// jsdl:Resources: the guest's file systems (which paths are relative to), its size, what it boots
// (XenBEE's xsdl:InstanceDefinition) and the ticket XenBEE's client adds at confirm time.
import { quoted } from '../util/text.js';
import { checkAttributes, plainText, readChildren, trimmedText, type ChildSpec, type Reading } from './xsdl-elements.js';
import { readLocation } from './xsdl-location.js';
import { absolutePath, ROOT_FILE_SYSTEM, type FileSystems } from './xsdl-paths.js';
import { refuse, type XmlElement } from './xsdl-tree.js';
import {
  TASK_RUNTIMES, type ImageLocation, type KernelLocation, type Location, type TaskRuntime, type XsdlInstance,
} from './xsdl-types.js';
import { readRange } from './xsdl-values.js';

// Requirements on the node rather than on the guest (which host, which OS or CPU) and amounts
// the guest is not made with: accepted as XenBEE did, and named as not honoured.
const UNHONOURED_RESOURCES = [
  'CandidateHosts', 'ExclusiveExecution', 'OperatingSystem', 'CPUArchitecture', 'IndividualCPUSpeed',
  'IndividualCPUTime', 'IndividualCPUCount', 'IndividualNetworkBandwidth', 'IndividualPhysicalMemory',
  'IndividualVirtualMemory', 'IndividualDiskSpace', 'TotalCPUTime', 'TotalVirtualMemory', 'TotalDiskSpace',
  'TotalResourceCount',
];

const RESOURCES: ChildSpec = {
  'jsdl:FileSystem': 'many',
  'jsdl:TotalCPUCount': 'optional',
  'jsdl:TotalPhysicalMemory': 'optional',
  'xsdl:InstanceDefinition': 'one',
  'xbe:Reservation': 'optional',
  ...Object.fromEntries(UNHONOURED_RESOURCES.map((local) => [`jsdl:${local}`, 'unhonoured'])),
};

export interface JobResources {
  readonly fileSystems: FileSystems;
  readonly cpuCount: number | null;
  readonly memoryBytes: number | null;
  readonly runtime: TaskRuntime;
  readonly instance: XsdlInstance;
  readonly ticket: string | null;
}

export function readResources(reading: Reading, element: XmlElement): JobResources {
  checkAttributes(element, []);
  const children = readChildren(reading, element, RESOURCES);
  const cpus = children.opt('jsdl:TotalCPUCount');
  const memory = children.opt('jsdl:TotalPhysicalMemory');
  const reservation = children.opt('xbe:Reservation');
  return {
    fileSystems: readFileSystems(reading, children.all('jsdl:FileSystem')),
    cpuCount: cpus === null ? null : readRange(reading, cpus, 'CPUs', 1),
    memoryBytes: memory === null ? null : readRange(reading, memory, 'bytes', 1),
    ...readInstanceDefinition(reading, children.one('xsdl:InstanceDefinition')),
    ticket: reservation === null ? null : readTicket(reading, reservation),
  };
}

const FILE_SYSTEM_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

function readFileSystems(reading: Reading, elements: readonly XmlElement[]): FileSystems {
  const mounts = new Map<string, string>();
  for (const element of elements) {
    checkAttributes(element, ['name', 'fsType']);
    const name = element.attributes.get('name');
    if (name === undefined) refuse(element, 'has no name attribute');
    if (!FILE_SYSTEM_NAME.test(name)) refuse(element, `name ${quoted(name, 40)} is not a name (a letter or _, then letters, digits, _ . -)`);
    if (mounts.has(name)) refuse(element, `a second file system named ${name}`);
    const children = readChildren(reading, element, {
      'jsdl:Description': 'informative',
      'jsdl:MountPoint': 'optional',
      'jsdl:MountSource': 'unhonoured',
      'jsdl:DiskSpace': 'unhonoured',
      'jsdl:FileSystemType': 'unhonoured',
    });
    const mountPoint = children.opt('jsdl:MountPoint');
    if (mountPoint === null) {
      if (name !== ROOT_FILE_SYSTEM) refuse(element, `has no jsdl:MountPoint (only ${ROOT_FILE_SYSTEM} is / without one)`);
      mounts.set(name, '/');
      continue;
    }
    const resolved = absolutePath(plainText(mountPoint), 'a mount point is an absolute path in the guest');
    if ('why' in resolved) refuse(mountPoint, resolved.why);
    mounts.set(name, resolved.path);
  }
  return mounts;
}

function readInstanceDefinition(reading: Reading, element: XmlElement): { runtime: TaskRuntime; instance: XsdlInstance } {
  checkAttributes(element, []);
  const description = readChildren(reading, element, { 'xsdl:InstanceDescription': 'one' }).one('xsdl:InstanceDescription');
  checkAttributes(description, []);
  const children = readChildren(reading, description, { 'xsdl:Package': 'optional', 'xsdl:Instance': 'optional', 'xsdl:Control': 'optional' });
  const pack = children.opt('xsdl:Package');
  if (pack !== null) {
    refuse(pack, 'a package (one archive holding kernel, initrd and image) is not supported; describe an xsdl:Instance with its xsdl:Image or xsdl:Kernel');
  }
  const control = children.opt('xsdl:Control');
  // XenBEE never ran them either; a job that relies on them must not start as if they had run.
  if (control !== null) refuse(control, 'control scripts are not supported; remove xsdl:Control');
  const instance = children.opt('xsdl:Instance');
  if (instance === null) refuse(description, 'has no xsdl:Instance');
  return readInstance(reading, instance);
}

/**
 * An xsdl:Instance. Its `runtime` attribute is this node's addition to XenBEE's schema (which has
 * no attributes here): runtime="qemu" (the default, XenBEE's Xen domain) boots a virtual machine;
 * runtime="lxc" runs the image's root file system as an LXC container on the host's kernel, so it
 * takes an xsdl:Image and no xsdl:Kernel or xsdl:Initrd. An unqualified attribute keeps documents
 * written for XenBEE valid as they are, and XenBEE's own schema check would refuse it rather than
 * misread it.
 */
function readInstance(reading: Reading, element: XmlElement): { runtime: TaskRuntime; instance: XsdlInstance } {
  checkAttributes(element, ['runtime']);
  const written = element.attributes.get('runtime') ?? 'qemu';
  if (!(TASK_RUNTIMES as readonly string[]).includes(written)) refuse(element, `runtime ${quoted(written, 40)} is not one of ${TASK_RUNTIMES.join(', ')}`);
  const runtime = written as TaskRuntime;
  const children = readChildren(reading, element, {
    'xsdl:Description': 'informative', 'xsdl:Kernel': 'optional', 'xsdl:Initrd': 'optional', 'xsdl:Image': 'optional',
  });
  const kernel = children.opt('xsdl:Kernel');
  const initrd = children.opt('xsdl:Initrd');
  const image = children.opt('xsdl:Image');
  if (runtime === 'lxc' && (kernel ?? initrd) !== null) {
    refuse((kernel ?? initrd)!, 'a container (runtime="lxc") runs on the host\'s kernel and boots none; remove it, or use runtime="qemu"');
  }
  if (image === null && kernel === null) {
    refuse(element, runtime === 'lxc'
      ? 'has no xsdl:Image: a container (runtime="lxc") needs its root file system'
      : 'has neither xsdl:Image nor xsdl:Kernel; give at least one');
  }
  if (initrd !== null && kernel === null) refuse(initrd, 'an initrd needs an xsdl:Kernel to boot with');
  return {
    runtime,
    instance: {
      kernel: kernel === null ? null : readKernel(reading, kernel),
      initrd: initrd === null ? null : readFileElement(reading, initrd),
      image: image === null ? null : readImage(reading, image),
    },
  };
}

/** An Initrd: only its Location. */
function readFileElement(reading: Reading, element: XmlElement): Location {
  checkAttributes(element, []);
  return readLocation(reading, readChildren(reading, element, { 'xsdl:Location': 'one' }).one('xsdl:Location'));
}

function readKernel(reading: Reading, element: XmlElement): KernelLocation {
  checkAttributes(element, []);
  const children = readChildren(reading, element, { 'xsdl:Location': 'one', 'xsdl:Argument': 'many' });
  return {
    ...readLocation(reading, children.one('xsdl:Location')),
    arguments: children.all('xsdl:Argument').map(readKernelArgument),
  };
}

const PARAMETER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/** `name=value`, a bare `name`, or a bare value: one word of the kernel command line. */
function readKernelArgument(element: XmlElement): string {
  checkAttributes(element, ['name']);
  const name = element.attributes.get('name');
  const value = trimmedText(element);
  if (name !== undefined && !PARAMETER_NAME.test(name)) {
    refuse(element, `name ${quoted(name, 40)} is not a kernel parameter name (letters, digits, _ . -)`);
  }
  // The command line is split at white space: one argument must stay one word.
  if (/\s/.test(value)) refuse(element, `value ${quoted(value, 40)} contains white space, which would split it into several kernel arguments`);
  if (name === undefined) {
    if (value === '') refuse(element, 'is empty (give a value, or a name attribute)');
    return value;
  }
  return value === '' ? name : `${name}=${value}`;
}

const FS_TYPE = /^[A-Za-z0-9_.+-]{1,32}$/;

function readImage(reading: Reading, element: XmlElement): ImageLocation {
  checkAttributes(element, ['fs-type']);
  // Informative only: the guest mounts its own root; XenBEE crashed without it, nothing here needs it.
  const fsType = element.attributes.get('fs-type') ?? null;
  if (fsType !== null && !FS_TYPE.test(fsType)) refuse(element, `fs-type ${quoted(fsType, 40)} is not a file system type name`);
  const location = readChildren(reading, element, { 'xsdl:Location': 'one' }).one('xsdl:Location');
  return { ...readLocation(reading, location), fsType };
}

const TICKET = /^[\x21-\x7e]{1,256}$/;

function readTicket(reading: Reading, element: XmlElement): string {
  checkAttributes(element, []);
  const ticket = readChildren(reading, element, { 'xbe:Ticket': 'one' }).one('xbe:Ticket');
  const text = plainText(ticket);
  if (!TICKET.test(text)) {
    refuse(ticket, text === '' ? 'the ticket is empty' : `${quoted(text, 40)} is not a ticket (1 to 256 printable ASCII characters, no spaces)`);
  }
  return text;
}
