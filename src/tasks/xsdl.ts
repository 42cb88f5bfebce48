// A XenBEE job description (XSDL) -> the typed job a task runs. XSDL is a JSDL 1.0 JobDefinition
// with JSDL-POSIX for the program and XenBEE's xsdl extension for what the instance boots.
//
// Pure: text in, a job or an XsdlError out. The document is read as strictly as the authority's:
// a size limit, no DOCTYPE, well-formed XML. Elements of JSDL's, JSDL-POSIX's, xsdl's and xbe's
// namespaces must be known and in their place (a misspelt element is an error, never ignored);
// elements of any other namespace are JSDL's extension points and are skipped. Where XenBEE
// ignored what a job said (kernel arguments, WallTimeLimit, append, DeleteOnTermination), the
// value is read and returned for the engine to honour. One addition to XenBEE's schema:
// <xsdl:Instance runtime="lxc"> asks for a container instead of a virtual machine (see
// xsdl-resources.ts).
import { checkAttributes, plainText, readChildren, type ChildSpec, type Reading } from './xsdl-elements.js';
import { readApplication } from './xsdl-application.js';
import { readSource, readTarget } from './xsdl-location.js';
import { guestPath, type FileSystems } from './xsdl-paths.js';
import { readResources } from './xsdl-resources.js';
import { buildTree, decodeXsdl, errorAt, NAMESPACES, Refusal, refuse, type XmlElement } from './xsdl-tree.js';
import type { CreationFlag, StageIn, StageOut, XsdlJob, XsdlOptions } from './xsdl-types.js';
import { readBoolean } from './xsdl-values.js';
import { quoted } from '../util/text.js';

export * from './xsdl-types.js';
export { NAMESPACES as XSDL_NAMESPACES } from './xsdl-tree.js';

/**
 * Parses and validates a XenBEE job description. Throws XsdlError (`<source> line L column C:
 * <element>: <reason>`) when the document is too large, not well-formed, has a DOCTYPE, or does
 * not describe a job this node can run.
 */
export function parseXsdl(input: string | Uint8Array, options: XsdlOptions): XsdlJob {
  const { maxBytes, source } = options;
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new RangeError(`parseXsdl: maxBytes must be a whole number > 0, got ${maxBytes}`);
  const text = decodeXsdl(input, maxBytes, source);
  const root = buildTree(text, source);
  try {
    return readJob(root);
  } catch (error) {
    if (error instanceof Refusal) throw errorAt(source, text, error.element.at, error.element.name, error.why);
    throw error;
  }
}

const DESCRIPTION: ChildSpec = {
  'jsdl:JobIdentification': 'optional',
  'jsdl:Application': 'one',
  'jsdl:Resources': 'one',
  'jsdl:DataStaging': 'many',
};

function readJob(root: XmlElement): XsdlJob {
  const reading: Reading = { ignored: new Set() };
  if (root.key !== 'jsdl:JobDefinition') {
    const namespace = root.prefix === null ? root.key.slice(1, root.key.indexOf('}')) || 'no namespace' : NAMESPACES[root.prefix];
    refuse(root, `the root element is ${root.name} (${namespace}), expected jsdl:JobDefinition (${NAMESPACES.jsdl})`);
  }
  checkAttributes(root, ['id']);
  const description = readChildren(reading, root, { 'jsdl:JobDescription': 'one' }).one('jsdl:JobDescription');
  checkAttributes(description, []);
  const children = readChildren(reading, description, DESCRIPTION);
  const identification = children.opt('jsdl:JobIdentification');
  // Resources first: the application's paths are relative to the file systems they define.
  const resources = readResources(reading, children.one('jsdl:Resources'));
  const application = readApplication(reading, children.one('jsdl:Application'), resources.fileSystems);
  const workingDirectory = application.kind === 'posix' ? application.workingDirectory : null;
  const stageIn: StageIn[] = [];
  const stageOut: StageOut[] = [];
  for (const element of children.all('jsdl:DataStaging')) {
    const staged = readDataStaging(reading, element, resources.fileSystems, workingDirectory);
    if (staged.in !== null) stageIn.push(staged.in);
    if (staged.out !== null) stageOut.push(staged.out);
  }
  return {
    name: identification === null ? null : readJobName(reading, identification),
    application,
    runtime: resources.runtime,
    cpuCount: resources.cpuCount,
    memoryBytes: resources.memoryBytes,
    instance: resources.instance,
    stageIn,
    stageOut,
    ticket: resources.ticket,
    ignored: [...reading.ignored].sort(),
  };
}

function readJobName(reading: Reading, element: XmlElement): string | null {
  checkAttributes(element, []);
  const children = readChildren(reading, element, {
    'jsdl:JobName': 'optional', 'jsdl:Description': 'informative', 'jsdl:JobAnnotation': 'informative', 'jsdl:JobProject': 'informative',
  });
  const name = children.opt('jsdl:JobName');
  const text = name === null ? '' : plainText(name);
  return text === '' ? null : text;
}

const DATA_STAGING: ChildSpec = {
  'jsdl:FileName': 'one',
  'jsdl:FilesystemName': 'optional',
  'jsdl:CreationFlag': 'one',
  'jsdl:DeleteOnTermination': 'optional',
  'jsdl:Source': 'optional',
  'jsdl:Target': 'optional',
};

const CREATION_FLAGS: readonly CreationFlag[] = ['overwrite', 'dontOverwrite', 'append'];

/**
 * One jsdl:DataStaging: with a Source, a file fetched into the guest before the job runs; with a
 * Target, one sent from the guest after it ends; with both, both (JSDL allows it).
 */
function readDataStaging(
  reading: Reading, element: XmlElement, fileSystems: FileSystems, workingDirectory: string | null,
): { in: StageIn | null; out: StageOut | null } {
  checkAttributes(element, ['name']);
  const children = readChildren(reading, element, DATA_STAGING);
  const source = children.opt('jsdl:Source');
  const target = children.opt('jsdl:Target');
  if (source === null && target === null) refuse(element, 'has neither jsdl:Source (to stage in) nor jsdl:Target (to stage out)');

  const flagElement = children.one('jsdl:CreationFlag');
  const flag = plainText(flagElement);
  if (!(CREATION_FLAGS as readonly string[]).includes(flag)) {
    refuse(flagElement, `${quoted(flag, 40)} is not one of ${CREATION_FLAGS.join(', ')}`);
  }
  const deleteElement = children.opt('jsdl:DeleteOnTermination');
  const common = {
    path: readStagedPath(children.one('jsdl:FileName'), children.opt('jsdl:FilesystemName'), fileSystems, workingDirectory),
    creationFlag: flag as CreationFlag,
    // JSDL's default: the file stays.
    deleteOnTermination: deleteElement === null ? false : readBoolean(deleteElement),
  };
  return {
    in: source === null ? null : { ...common, source: readSource(reading, source) },
    out: target === null ? null : { ...common, target: readTarget(reading, target) },
  };
}

/**
 * The guest path of a staged file: under its FilesystemName's mount point, else absolute as
 * written or (JSDL's rule) relative to the job's working directory.
 */
function readStagedPath(fileName: XmlElement, fileSystemName: XmlElement | null, fileSystems: FileSystems, workingDirectory: string | null): string {
  const name = plainText(fileName);
  const last = name.split('/').pop();
  // "data/" or "." would stage a directory: a staged file is one file, fetched or sent whole.
  if (last === undefined || last === '' || last === '.' || last === '..') refuse(fileName, `${quoted(name, 40)} names a directory, not a file`);
  const fileSystem = fileSystemName === null ? null : plainText(fileSystemName);
  if (fileSystem === '') refuse(fileSystemName!, 'the file system name is empty');
  const resolved = guestPath(name, fileSystem, fileSystems, workingDirectory);
  if ('why' in resolved) refuse(resolved.fileSystem === true ? fileSystemName! : fileName, resolved.why);
  return resolved.path;
}
