// jsdl:Application: a POSIX program to run in the guest (JSDL-POSIX), or XenBEE's ContinuousTask
// (boot the instance and run nothing).
import { quoted } from '../util/text.js';
import { checkAttributes, readChildren, trimmedText, type ChildSpec, type Reading } from './xsdl-elements.js';
import { guestPath, type FileSystems } from './xsdl-paths.js';
import { refuse, type XmlElement } from './xsdl-tree.js';
import type { ContinuousTask, EnvironmentVariable, PosixApplication, XsdlApplication } from './xsdl-types.js';
import { readWhole } from './xsdl-values.js';

const APPLICATION: ChildSpec = {
  'jsdl:ApplicationName': 'informative',
  'jsdl:ApplicationVersion': 'informative',
  'jsdl:Description': 'informative',
  'jsdl-posix:POSIXApplication': 'optional',
  'xbe:XBEApplication': 'optional',
};

// The process limits and the user to run as concern the inside of the guest, which is the job's
// own; the node accepts them as XenBEE did and says that it does not apply them.
const UNHONOURED_POSIX = [
  'FileSizeLimit', 'CoreDumpLimit', 'DataSegmentLimit', 'LockedMemoryLimit', 'MemoryLimit', 'OpenDescriptorsLimit',
  'PipeSizeLimit', 'StackSizeLimit', 'CPUTimeLimit', 'ProcessCountLimit', 'VirtualMemoryLimit', 'ThreadCountLimit',
  'UserName', 'GroupName',
];

const POSIX: ChildSpec = {
  'jsdl-posix:Executable': 'one',
  'jsdl-posix:Argument': 'many',
  'jsdl-posix:Input': 'optional',
  'jsdl-posix:Output': 'optional',
  'jsdl-posix:Error': 'optional',
  'jsdl-posix:WorkingDirectory': 'optional',
  'jsdl-posix:Environment': 'many',
  'jsdl-posix:WallTimeLimit': 'optional',
  ...Object.fromEntries(UNHONOURED_POSIX.map((local) => [`jsdl-posix:${local}`, 'unhonoured'])),
};

export function readApplication(reading: Reading, element: XmlElement, fileSystems: FileSystems): XsdlApplication {
  checkAttributes(element, []);
  const children = readChildren(reading, element, APPLICATION);
  const posix = children.opt('jsdl-posix:POSIXApplication');
  const xbe = children.opt('xbe:XBEApplication');
  if (posix !== null && xbe !== null) {
    refuse(xbe, 'an application is either a jsdl-posix:POSIXApplication or an xbe:XBEApplication, not both');
  }
  if (xbe !== null) return readXbeApplication(reading, xbe);
  if (posix !== null) return readPosixApplication(reading, posix, fileSystems);
  return refuse(element, 'has no jsdl-posix:POSIXApplication (a program to run) or xbe:XBEApplication (with xbe:ContinuousTask)');
}

function readXbeApplication(reading: Reading, element: XmlElement): ContinuousTask {
  checkAttributes(element, []);
  const task = readChildren(reading, element, { 'xbe:ContinuousTask': 'one' }).one('xbe:ContinuousTask');
  checkAttributes(task, []);
  readChildren(reading, task, {});
  return { kind: 'continuous' };
}

/**
 * The guest path an element names, relative to its filesystemName's mount point when it has one.
 * The caller checks the element's attributes: Environment has a name besides filesystemName.
 */
function pathOf(element: XmlElement, fileSystems: FileSystems): string {
  const resolved = guestPath(trimmedText(element), element.attributes.get('filesystemName') ?? null, fileSystems, null);
  if ('why' in resolved) refuse(element, resolved.why);
  return resolved.path;
}

function readPosixApplication(reading: Reading, element: XmlElement, fileSystems: FileSystems): PosixApplication {
  checkAttributes(element, ['name']);
  const children = readChildren(reading, element, POSIX);
  const optionalPath = (key: string): string | null => {
    const found = children.opt(key);
    if (found === null) return null;
    checkAttributes(found, ['filesystemName']);
    return pathOf(found, fileSystems);
  };
  const executable = children.one('jsdl-posix:Executable');
  checkAttributes(executable, ['filesystemName']);
  if (trimmedText(executable) === '') refuse(executable, 'names no program');
  const wallTime = children.opt('jsdl-posix:WallTimeLimit');
  return {
    kind: 'posix',
    executable: pathOf(executable, fileSystems),
    arguments: children.all('jsdl-posix:Argument').map((argument) => {
      // Only an argument marked with a file system is a path; any other is passed as written.
      checkAttributes(argument, ['filesystemName']);
      return argument.attributes.has('filesystemName') ? pathOf(argument, fileSystems) : trimmedText(argument);
    }),
    input: optionalPath('jsdl-posix:Input'),
    output: optionalPath('jsdl-posix:Output'),
    error: optionalPath('jsdl-posix:Error'),
    workingDirectory: optionalPath('jsdl-posix:WorkingDirectory'),
    environment: readEnvironment(children.all('jsdl-posix:Environment'), fileSystems),
    wallTimeSeconds: wallTime === null ? null : readWallTime(wallTime),
  };
}

const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function readEnvironment(elements: readonly XmlElement[], fileSystems: FileSystems): EnvironmentVariable[] {
  const seen = new Set<string>();
  return elements.map((element) => {
    checkAttributes(element, ['name', 'filesystemName']);
    const name = element.attributes.get('name');
    if (name === undefined) refuse(element, 'has no name attribute');
    if (!VARIABLE_NAME.test(name)) refuse(element, `name ${quoted(name, 40)} is not a variable name (a letter or _, then letters, digits, _)`);
    // Which of two values would win is up to the program that builds the environment: say so now.
    if (seen.has(name)) refuse(element, `a second value for variable ${name}`);
    seen.add(name);
    const value = element.attributes.has('filesystemName') ? pathOf(element, fileSystems) : trimmedText(element);
    return { name, value };
  });
}

function readWallTime(element: XmlElement): number {
  checkAttributes(element, []);
  const seconds = readWhole(element, 'seconds');
  if (seconds === 0) refuse(element, 'a wall-time limit of 0 seconds would end the job before it starts; leave it out for none');
  return seconds;
}
