// Where a file comes from or goes to: xsdl:Location (kernel, initrd, image) and jsdl:Source or
// jsdl:Target (data staging, which XenBEE let carry the same xsdl Hash, Compression and Mode).
import { invalidImageName, parseImageUri } from '../images/index.js';
import { quoted } from '../util/text.js';
import { checkAttributes, plainText, readChildren, trimmedText, type ChildSpec, type Reading } from './xsdl-elements.js';
import { refuse, type XmlElement } from './xsdl-tree.js';
import { HASH_HEX_DIGITS, type Compression, type FileHash, type HashAlgorithm, type Location, type XsdlUri } from './xsdl-types.js';

const LOCATION: ChildSpec = { 'xsdl:URI': 'one', 'xsdl:Hash': 'optional', 'xsdl:Compression': 'optional', 'xsdl:Mode': 'optional' };
const SOURCE: ChildSpec = { 'jsdl:URI': 'one', 'xsdl:Hash': 'optional', 'xsdl:Compression': 'optional', 'xsdl:Mode': 'optional' };
// An upload has no digest to check beforehand and no mode to set; it may be compressed first.
const TARGET: ChildSpec = { 'jsdl:URI': 'one', 'xsdl:Compression': 'optional' };

/** An xsdl:Location: the file the node fetches for the instance. */
export function readLocation(reading: Reading, element: XmlElement): Location {
  return readPlace(reading, element, LOCATION, 'xsdl:URI', true);
}

/** A jsdl:Source of a DataStaging: fetched into the guest before the job runs. */
export function readSource(reading: Reading, element: XmlElement): Location {
  return readPlace(reading, element, SOURCE, 'jsdl:URI', true);
}

/** A jsdl:Target of a DataStaging: sent from the guest after the job ends; never the cache. */
export function readTarget(reading: Reading, element: XmlElement): Location {
  return readPlace(reading, element, TARGET, 'jsdl:URI', false);
}

function readPlace(reading: Reading, element: XmlElement, spec: ChildSpec, uriKey: string, cacheAllowed: boolean): Location {
  checkAttributes(element, []);
  const children = readChildren(reading, element, spec);
  const hash = children.opt('xsdl:Hash');
  const compression = children.opt('xsdl:Compression');
  const mode = children.opt('xsdl:Mode');
  return {
    uri: readUri(children.one(uriKey), cacheAllowed),
    hash: hash === null ? null : readHash(hash),
    compression: compression === null ? null : readCompression(reading, compression),
    mode: mode === null ? null : readMode(mode),
  };
}

const SCHEME = /^[a-z][a-z0-9+.-]*:/i;
// XenBEE's logical URI of a cache entry; the last part is the entry's name (XenBEE: a UUID).
const XENBEE_CACHE = /^cache:\/\/xbe-file-cache\/([^/?#]*)$/i;
const IMAGE_NAME_RULE = 'a letter or digit, then up to 127 of A-Z a-z 0-9 . _ + -';

/**
 * An http:, https: or file: URL, an image-cache entry's name, or XenBEE's
 * cache://xbe-file-cache/<name>; the image cache's own rules decide what a URL and a name may be.
 */
function readUri(element: XmlElement, cacheAllowed: boolean): XsdlUri {
  const text = plainText(element);
  if (text === '') refuse(element, 'the URI is empty');
  let uri: XsdlUri;
  if (/^cache:/i.test(text)) {
    const name = XENBEE_CACHE.exec(text)?.[1];
    if (name === undefined) refuse(element, `${quoted(text)}: a cache URI has the form cache://xbe-file-cache/<name>`);
    if (invalidImageName(name) !== null) refuse(element, `${quoted(text)}: ${quoted(name)} is not an image-cache name (${IMAGE_NAME_RULE})`);
    uri = { kind: 'cache', name };
  } else if (!SCHEME.test(text)) {
    if (invalidImageName(text) !== null) {
      refuse(element, `${quoted(text)} is neither an http:, https: or file: URL nor an image-cache name (${IMAGE_NAME_RULE})`);
    }
    uri = { kind: 'cache', name: text };
  } else {
    const url = parseImageUri(text);
    if (typeof url === 'string') refuse(element, `${quoted(text)}: ${url}`);
    uri = { kind: 'url', href: url.href };
  }
  if (uri.kind === 'cache' && !cacheAllowed) {
    refuse(element, `${quoted(text)}: a stage-out target must be an http:, https: or file: URL, not an image-cache entry`);
  }
  return uri;
}

const HASH_NAMES = Object.keys(HASH_HEX_DIGITS).join(', ');

function readHash(element: XmlElement): FileHash {
  checkAttributes(element, ['algorithm']);
  const written = element.attributes.get('algorithm');
  if (written === undefined) refuse(element, `has no algorithm attribute (one of ${HASH_NAMES})`);
  // XenBEE lower-cased the name; documents written for it may say "SHA1".
  const algorithm = written.toLowerCase();
  if (!Object.hasOwn(HASH_HEX_DIGITS, algorithm)) refuse(element, `algorithm ${quoted(written)} is not one of ${HASH_NAMES}`);
  const digits = HASH_HEX_DIGITS[algorithm as HashAlgorithm];
  const hex = trimmedText(element).toLowerCase();
  if (!/^[0-9a-f]*$/.test(hex)) refuse(element, `the ${algorithm} digest ${quoted(hex)} is not hexadecimal`);
  if (hex.length !== digits) refuse(element, `a ${algorithm} digest has ${digits} hex digits, this one has ${hex.length}`);
  return { algorithm: algorithm as HashAlgorithm, hex };
}

function readCompression(reading: Reading, element: XmlElement): Compression {
  checkAttributes(element, ['algorithm']);
  readChildren(reading, element, {});
  const written = element.attributes.get('algorithm');
  if (written === undefined) refuse(element, 'has no algorithm attribute (gzip or bzip2)');
  const algorithm = written.toLowerCase();
  if (algorithm === 'gzip' || algorithm === 'bzip2') return algorithm;
  if (algorithm === 'tbz' || algorithm === 'tgz') {
    refuse(element, `algorithm ${quoted(written)} (a tar archive) is not supported: a location names one file; use gzip or bzip2`);
  }
  return refuse(element, `algorithm ${quoted(written)} is not one of gzip, bzip2`);
}

function readMode(element: XmlElement): number {
  const text = plainText(element);
  if (!/^[0-7]{4}$/.test(text)) refuse(element, `mode ${quoted(text)} is not 4 octal digits (e.g. 0644)`);
  return Number.parseInt(text, 8);
}
