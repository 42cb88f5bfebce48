// The XML-DSig checks of a ticket: well-formed XML without declarations, a signature of exactly the
// shape `xmlsec1 --sign` makes (one enveloped reference to the whole document, with the
// algorithms accepted here and no SHA-1), verified with the authority's key alone. Pure.
import type { KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { SaxesParser } from 'saxes';
import { SignedXml } from 'xml-crypto';
import { describeError } from '../util/errors.js';
import { TicketError } from './signature-errors.js';

const DSIG = 'http://www.w3.org/2000/09/xmldsig#';
const EXC_C14N = 'http://www.w3.org/2001/10/xml-exc-c14n#';
const ENVELOPED = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature';
const CANONICALIZATIONS = new Set([
  'http://www.w3.org/TR/2001/REC-xml-c14n-20010315',
  'http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments',
  EXC_C14N,
  'http://www.w3.org/2001/10/xml-exc-c14n#WithComments',
]);
const SIGNATURE_METHODS = new Set(['http://www.w3.org/2001/04/xmldsig-more#rsa-sha256', 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha512']);
const DIGEST_METHODS = new Set(['http://www.w3.org/2001/04/xmlenc#sha256', 'http://www.w3.org/2001/04/xmlenc#sha512']);
// SHA-1 collisions can be computed (SHAttered 2017, chosen-prefix 2020): a SHA-1 digest or
// signature no longer binds the content, so whoever can get one document signed can present a
// different one with the same signature. xml-crypto still accepts SHA-1; this module does not.
const SHA1_METHODS = new Set(['http://www.w3.org/2000/09/xmldsig#rsa-sha1', 'http://www.w3.org/2000/09/xmldsig#sha1']);
const SHA1_WHY = 'SHA-1 collisions are practical, so a SHA-1 signature does not bind the content; sign with SHA-256 or SHA-512';

// The slice of the DOM (xmldom 0.8) that this module reads. xmldom is loaded without its type
// declarations because they pull the browser DOM's global types into the whole program.
interface DomNode {
  readonly nodeType: number;
  readonly localName: string | null;
  readonly namespaceURI: string | null | undefined;
  readonly tagName?: string;
  readonly parentNode: DomNode | null;
  readonly childNodes: ArrayLike<DomNode>;
  getAttribute(name: string): string | null;
  hasAttribute(name: string): boolean;
}
interface DomParser {
  parseFromString(text: string, mimeType: string): { readonly documentElement: DomNode | null };
}
export const xmldom = createRequire(import.meta.url)('@xmldom/xmldom') as {
  DOMParser: new (options: { errorHandler: (level: string, message: string) => void }) => DomParser;
};

const ELEMENT_NODE = 1;

function elementChildren(node: DomNode): DomNode[] {
  return Array.from(node.childNodes).filter((child) => child.nodeType === ELEMENT_NODE);
}

function isDsig(node: DomNode | undefined, localName: string): node is DomNode {
  return node !== undefined && node.localName === localName && node.namespaceURI === DSIG;
}

function nameOf(node: DomNode): string {
  return `<${node.tagName ?? node.localName ?? '?'}>`;
}

export function quoteShort(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
}

// What may hold "<!" without declaring anything: comments and CDATA sections (and processing
// instructions, which may hold any text), each skipped up to its end.
const OPAQUE = [['<!--', '-->'], ['<![CDATA[', ']]>'], ['<?', '?>']] as const;

/** Index of the first `<!` that opens neither a comment nor a CDATA section, or -1. */
export function markupDeclarationAt(text: string): number {
  let at = text.indexOf('<');
  while (at >= 0) {
    const opaque = OPAQUE.find(([open]) => text.startsWith(open, at));
    if (opaque !== undefined) {
      const end = text.indexOf(opaque[1], at + opaque[0].length);
      if (end < 0) return -1; // unterminated: the well-formedness check reports it
      at = text.indexOf('<', end + opaque[1].length);
    } else if (text.charCodeAt(at + 1) === 0x21 /* ! */) {
      return at;
    } else {
      at = text.indexOf('<', at + 1);
    }
  }
  return -1;
}

export function lineAt(text: string, index: number): number {
  let line = 1;
  for (let i = text.indexOf('\n'); i >= 0 && i < index; i = text.indexOf('\n', i + 1)) line++;
  return line;
}

/**
 * A strict XML 1.0 and namespaces pass over the whole ticket (xmldom, which xml-crypto uses,
 * accepts much that is not XML, such as text after the root). Nothing is taken from this pass
 * but where the root element starts. Throws TicketError.
 */
export function checkWellFormed(text: string): number {
  const parser = new SaxesParser({ xmlns: true, position: true });
  let rootStart = -1;
  parser.on('opentag', (tag) => {
    if (rootStart >= 0) return;
    rootStart = text.lastIndexOf('<', parser.position - 1);
    if (tag.name !== 'slices') throw new TicketError(`the root element is <${tag.name}>, expected <slices>`);
  });
  parser.on('doctype', () => {
    throw new TicketError('DOCTYPE is not allowed');
  });
  parser.on('error', (error) => {
    throw new TicketError(`not well-formed XML: ${error.message.replace(/^(\d+):(\d+): /, 'line $1 column $2: ')}`);
  });
  parser.write(text).close();
  return rootStart;
}

function refuseAlgorithm(kind: 'canonicalization' | 'signature' | 'digest', uri: string | null, accepted: string): never {
  const name = uri === null ? '(none given)' : uri;
  throw new TicketError(`${kind} algorithm ${name} refused (${uri !== null && SHA1_METHODS.has(uri) ? SHA1_WHY : `accepted: ${accepted}`})`);
}

function onlyChildren(node: DomNode, allowed: (child: DomNode) => boolean): void {
  for (const child of elementChildren(node)) {
    if (!allowed(child)) throw new TicketError(`malformed signature: ${nameOf(node)} holds ${nameOf(child)}`);
  }
}

const isInclusiveNamespaces = (child: DomNode): boolean => child.localName === 'InclusiveNamespaces' && child.namespaceURI === EXC_C14N;

/**
 * Refuses any signature but one enveloped signature over the whole document, in the form xmlsec1
 * makes from the authority's template, with accepted algorithms. xml-crypto would verify other
 * shapes (references to parts of the document by ID, several references), and a signature that
 * covers only part of a ticket lets unsigned content ride along with it.
 */
export function checkSignatureShape(root: DomNode): DomNode {
  const signatures: DomNode[] = [];
  const pending = [root];
  while (pending.length > 0) {
    for (const child of elementChildren(pending.pop()!)) {
      if (isDsig(child, 'Signature')) signatures.push(child);
      pending.push(child);
    }
  }
  if (signatures.length === 0) throw new TicketError('not signed');
  if (signatures.length > 1) throw new TicketError(`ticket holds ${signatures.length} signatures, expected one`);
  const signature = signatures[0]!;
  if (signature.parentNode !== root) {
    let depth = 0;
    for (let node = signature.parentNode; node !== null && node !== root; node = node.parentNode) depth++;
    throw new TicketError(`the signature is not a child of the root <slices> (it is inside ${nameOf(signature.parentNode!)}, ${depth} ${depth === 1 ? 'level' : 'levels'} down)`);
  }

  const [signedInfo, signatureValue, ...rest] = elementChildren(signature);
  if (!isDsig(signedInfo, 'SignedInfo') || !isDsig(signatureValue, 'SignatureValue')) {
    throw new TicketError('malformed signature: <Signature> must begin with <SignedInfo> and <SignatureValue>');
  }
  if (rest.length > 1 || (rest.length === 1 && !isDsig(rest[0], 'KeyInfo'))) {
    throw new TicketError(`malformed signature: <Signature> holds ${rest.map(nameOf).join(', ')} after <SignatureValue>; only <KeyInfo> may follow`);
  }
  onlyChildren(signatureValue, () => false);

  const [c14nMethod, signatureMethod, ...references] = elementChildren(signedInfo);
  if (!isDsig(c14nMethod, 'CanonicalizationMethod') || !isDsig(signatureMethod, 'SignatureMethod')) {
    throw new TicketError('malformed signature: <SignedInfo> must begin with <CanonicalizationMethod> and <SignatureMethod>');
  }
  const c14n = c14nMethod.getAttribute('Algorithm');
  if (c14n === null || !CANONICALIZATIONS.has(c14n)) refuseAlgorithm('canonicalization', c14n, 'C14N 1.0 and exclusive C14N');
  onlyChildren(c14nMethod, isInclusiveNamespaces);
  const method = signatureMethod.getAttribute('Algorithm');
  if (method === null || !SIGNATURE_METHODS.has(method)) refuseAlgorithm('signature', method, 'rsa-sha256, rsa-sha512');
  onlyChildren(signatureMethod, () => false);

  const stray = references.find((node) => !isDsig(node, 'Reference'));
  if (stray !== undefined) throw new TicketError(`malformed signature: <SignedInfo> holds ${nameOf(stray)}`);
  if (references.length !== 1) throw new TicketError(`the signature has ${references.length} references, expected one`);
  const reference = references[0]!;
  // URI="" is the whole document. xml-crypto reads a missing URI as "" too, but a signature
  // without one names no data of its own, so it is not taken to mean the document.
  if (reference.getAttribute('URI') !== '' || !reference.hasAttribute('URI')) {
    const uri = reference.hasAttribute('URI') ? `URI ${quoteShort(reference.getAttribute('URI') ?? '')}` : 'no URI';
    throw new TicketError(`signed reference does not cover the whole document (${uri}; expected URI="")`);
  }

  const parts = elementChildren(reference);
  const transformsNode = isDsig(parts[0], 'Transforms') ? parts.shift()! : null;
  const [digestMethod, digestValue, ...extra] = parts;
  if (!isDsig(digestMethod, 'DigestMethod') || !isDsig(digestValue, 'DigestValue') || extra.length > 0) {
    throw new TicketError('malformed signature: <Reference> must hold <Transforms>, <DigestMethod> and <DigestValue>');
  }
  const transforms = transformsNode === null ? [] : elementChildren(transformsNode);
  for (const transform of transforms) {
    if (!isDsig(transform, 'Transform')) throw new TicketError(`malformed signature: <Transforms> holds ${nameOf(transform)}`);
    onlyChildren(transform, isInclusiveNamespaces);
  }
  const algorithms = transforms.map((transform) => transform.getAttribute('Algorithm') ?? '(none)');
  if (algorithms[0] !== ENVELOPED || algorithms.length > 2 || (algorithms.length === 2 && !CANONICALIZATIONS.has(algorithms[1]!))) {
    throw new TicketError(`signed reference must have the enveloped-signature transform, then at most one canonicalization (it has: ${algorithms.join(', ') || 'none'})`);
  }
  const digest = digestMethod.getAttribute('Algorithm');
  if (digest === null || !DIGEST_METHODS.has(digest)) refuseAlgorithm('digest', digest, 'sha256, sha512');
  onlyChildren(digestMethod, () => false);
  return signature;
}

/** Runs xml-crypto with only the configured key; returns the canonical XML it verified. */
export function verifyEnveloped(text: string, signature: DomNode, publicKey: KeyObject): string {
  // getCertFromKeyInfo returning null keeps xml-crypto from ever taking a key from the ticket.
  const signed = new SignedXml({ publicCert: publicKey, getCertFromKeyInfo: () => null });
  // Only the accepted algorithms exist for this instance, whatever the checks above let by.
  signed.SignatureAlgorithms = Object.fromEntries(Object.entries(signed.SignatureAlgorithms).filter(([uri]) => SIGNATURE_METHODS.has(uri)));
  signed.HashAlgorithms = Object.fromEntries(Object.entries(signed.HashAlgorithms).filter(([uri]) => DIGEST_METHODS.has(uri)));
  let valid: boolean;
  try {
    signed.loadSignature(signature as never);
    valid = signed.checkSignature(text);
  } catch (error) {
    const message = describeError(error);
    if (message.startsWith('invalid signature: the signature value')) {
      throw new TicketError('signature does not verify against the authority certificate', { cause: error });
    }
    throw new TicketError(`signature unreadable: ${message.length > 200 ? `${message.slice(0, 200)}...` : message}`, { cause: error });
  }
  // xml-crypto compares the digests before it checks the signature and answers false (rather
  // than throwing) when a digest differs.
  if (!valid) throw new TicketError('digest mismatch (the ticket was changed after signing)');
  const references = signed.getSignedReferences();
  if (references.length !== 1) throw new TicketError(`the signature verified ${references.length} references, expected one`);
  return references[0]!;
}

