// Strict reading of one element: which children it may have and how often, which attributes, and
// its text. A name the namespace does not define is refused as unknown (a typo must not be
// ignored); a known name out of place is refused as out of place; each message lists what belongs.
import { quoted } from '../util/text.js';
import { NAMESPACES, refuse, type Prefix, type XmlElement } from './xsdl-tree.js';

// Every element name each namespace defines (JSDL 1.0, JSDL-POSIX 1.0, XenBEE's xsdl.xsd, the
// parts of XenBEE's xbe namespace that a job may hold), so that an unknown name is told apart
// from a known one in the wrong place.
const KNOWN: Readonly<Record<Prefix, ReadonlySet<string>>> = {
  jsdl: new Set([
    'JobDefinition', 'JobDescription', 'JobIdentification', 'JobName', 'Description', 'JobAnnotation',
    'JobProject', 'Application', 'ApplicationName', 'ApplicationVersion', 'Resources', 'CandidateHosts',
    'HostName', 'FileSystem', 'MountPoint', 'MountSource', 'DiskSpace', 'FileSystemType',
    'ExclusiveExecution', 'OperatingSystem', 'OperatingSystemType', 'OperatingSystemName',
    'OperatingSystemVersion', 'CPUArchitecture', 'CPUArchitectureName', 'IndividualCPUSpeed',
    'IndividualCPUTime', 'IndividualCPUCount', 'IndividualNetworkBandwidth', 'IndividualPhysicalMemory',
    'IndividualVirtualMemory', 'IndividualDiskSpace', 'TotalCPUTime', 'TotalCPUCount',
    'TotalPhysicalMemory', 'TotalVirtualMemory', 'TotalDiskSpace', 'TotalResourceCount', 'DataStaging',
    'FileName', 'FilesystemName', 'CreationFlag', 'DeleteOnTermination', 'Source', 'Target', 'URI',
    'UpperBoundedRange', 'LowerBoundedRange', 'Exact', 'Range', 'LowerBound', 'UpperBound',
  ]),
  'jsdl-posix': new Set([
    'POSIXApplication', 'Executable', 'Argument', 'Input', 'Output', 'Error', 'WorkingDirectory',
    'Environment', 'WallTimeLimit', 'FileSizeLimit', 'CoreDumpLimit', 'DataSegmentLimit',
    'LockedMemoryLimit', 'MemoryLimit', 'OpenDescriptorsLimit', 'PipeSizeLimit', 'StackSizeLimit',
    'CPUTimeLimit', 'ProcessCountLimit', 'VirtualMemoryLimit', 'ThreadCountLimit', 'UserName', 'GroupName',
  ]),
  xsdl: new Set([
    'InstanceDefinition', 'InstanceDescription', 'Package', 'Instance', 'Description', 'Kernel', 'Argument',
    'Initrd', 'Image', 'Location', 'URI', 'Mode', 'Hash', 'Compression', 'Control', 'Script',
  ]),
  xbe: new Set(['XBEApplication', 'ContinuousTask', 'Reservation', 'Ticket']),
};

/** How often a child may appear, and what becomes of it. */
export type Occurs =
  /** Exactly once. */
  | 'one'
  /** At most once. */
  | 'optional'
  /** Any number of times. */
  | 'many'
  /** Any number of times, read by no one: descriptions, names, annotations. */
  | 'informative'
  /** Accepted but not acted on; named in the job's `ignored` so that the engine can say so. */
  | 'unhonoured';

/** The children an element may have, by key ("jsdl-posix:Executable"). */
export type ChildSpec = Readonly<Record<string, Occurs>>;

/** What the whole reading of a document collects on the way. */
export interface Reading {
  readonly ignored: Set<string>;
}

export interface Children {
  /** The child of `key`, or null when absent (for 'optional'). */
  opt(key: string): XmlElement | null;
  /** The child of `key` (for 'one': its presence was checked). */
  one(key: string): XmlElement;
  all(key: string): readonly XmlElement[];
}

/** The children of `element`, checked against `spec`; text other than white space is refused. */
export function readChildren(reading: Reading, element: XmlElement, spec: ChildSpec): Children {
  const stray = element.text.trim();
  if (stray !== '') refuse(element, `has text ${quoted(stray, 40)} where only elements belong`);
  const groups = new Map<string, XmlElement[]>();
  for (const child of element.children) {
    const occurs = spec[child.key];
    if (occurs === undefined) refuse(child, outOfPlace(element, child, spec));
    if (occurs === 'informative') continue;
    if (occurs === 'unhonoured') {
      reading.ignored.add(child.key);
      continue;
    }
    const group = groups.get(child.key);
    if (group === undefined) groups.set(child.key, [child]);
    else if (occurs === 'many') group.push(child);
    else refuse(child, `a second ${child.key} in ${element.name}; only one is allowed`);
  }
  for (const [key, occurs] of Object.entries(spec)) {
    if (occurs === 'one' && !groups.has(key)) refuse(element, `has no ${key}`);
  }
  return {
    opt: (key) => groups.get(key)?.[0] ?? null,
    one: (key) => groups.get(key)![0]!,
    all: (key) => groups.get(key) ?? [],
  };
}

function outOfPlace(parent: XmlElement, child: XmlElement, spec: ChildSpec): string {
  const expected = Object.entries(spec).filter(([, o]) => o === 'one' || o === 'optional' || o === 'many').map(([k]) => k);
  const listed = expected.length === 0 ? `${parent.name} has no child elements` : `expected in ${parent.name}: ${expected.join(', ')}`;
  const prefix = child.prefix ?? 'jsdl';
  if (KNOWN[prefix].has(child.local)) return `${child.key} does not belong in ${parent.key} (${listed})`;
  // The likely mistakes: the right name in the wrong namespace, or in the wrong case.
  const near = Object.keys(spec).find((k) => k.slice(k.indexOf(':') + 1).toLowerCase() === child.local.toLowerCase());
  const hint = near === undefined ? '' : `; did you mean ${near}?`;
  return `unknown element: the ${prefix} namespace (${NAMESPACES[prefix]}) has no ${quoted(child.local, 40)}${hint} (${listed})`;
}

/** Refuses an attribute without a namespace that is not in `allowed` (a misspelt one must not be ignored). */
export function checkAttributes(element: XmlElement, allowed: readonly string[]): void {
  for (const name of element.attributes.keys()) {
    if (allowed.includes(name)) continue;
    refuse(element, allowed.length === 0
      ? `unknown attribute ${quoted(name, 40)} (${element.name} takes none)`
      : `unknown attribute ${quoted(name, 40)} (${element.name} takes: ${allowed.join(', ')})`);
  }
}

/** The text of a text-only element; child elements (of any namespace) are refused. */
export function textOf(element: XmlElement): string {
  if (element.markup) refuse(element, 'has child elements where only text belongs');
  return element.text;
}

/**
 * The text without surrounding white space: what XenBEE read, so that a value written on a line
 * of its own (`<Argument>\n  -c\n</Argument>`) means what its writer meant.
 */
export function trimmedText(element: XmlElement): string {
  return textOf(element).trim();
}

/** A text-only element with no attributes, trimmed. */
export function plainText(element: XmlElement): string {
  checkAttributes(element, []);
  return trimmedText(element);
}
