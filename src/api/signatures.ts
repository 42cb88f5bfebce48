// What the authority signs, checked against the authority's certificate and nothing else:
// - tickets (the API's Ticket): a one-slice slices document with an enveloped XML-DSig signature
//   over the whole document, as `xmlsec1 --sign` makes it from a template;
// - pushed documents (the API's DeliverSlices): a whole slices.xml with a detached RSA PKCS#1 v1.5
//   SHA-256 signature over its exact bytes, as `openssl dgst -sha256 -sign` makes it.
// Pure: no I/O and no clock; the caller passes the certificate and the time.
import { Buffer } from 'node:buffer';
import { constants, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { SaxesParser } from 'saxes';
import { SignedXml } from 'xml-crypto';
import { DocumentError, parseSlicesDocument } from '../slices/parse.js';
import type { SkippedEntry, SliverSpec } from '../slices/types.js';
import { describeError } from '../util/errors.js';

/** A refusal whose `reason` is meant for the caller's fault message and the log. */
abstract class RefusalError extends Error {
  constructor(
    what: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${what}: ${reason}`, options);
    this.name = new.target.name;
  }
}

/** Why a ticket was refused. */
export class TicketError extends RefusalError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('ticket refused', reason, options);
  }
}

/** Why a pushed document's detached signature was refused. */
export class SignatureError extends RefusalError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('signed document refused', reason, options);
  }
}

/** The configured authority certificate cannot serve to check signatures. */
export class CertificateError extends RefusalError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('authority certificate unusable', reason, options);
  }
}

export interface AuthorityCertificate {
  /** The only key that signatures are verified with. */
  readonly publicKey: KeyObject;
  /** Subject on one line, e.g. "O=PlanetLab, CN=PLC". */
  readonly subject: string;
  readonly validFrom: string;
  readonly validTo: string;
  readonly fingerprint256: string;
}

// Weaker RSA keys are within reach of forgery; an authority still on one must re-key.
const MIN_RSA_BITS = 2048;

/**
 * Reads the authority's certificate (PEM) once, e.g. when the configuration is loaded, so that a
 * bad file is reported then. Throws CertificateError: not exactly one certificate, unreadable,
 * a private key alongside it, not RSA, or an RSA key under 2048 bits.
 */
export function loadCertificate(pem: string): AuthorityCertificate {
  const count = pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
  if (count !== 1) {
    // With several, which key is trusted would depend on the order in the file.
    throw new CertificateError(count === 0 ? 'no PEM certificate (-----BEGIN CERTIFICATE-----) found' : `${count} certificates found, expected only the authority's`);
  }
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new CertificateError('the file also holds a private key; the node needs only the authority\'s certificate');
  }
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(pem);
  } catch (error) {
    throw new CertificateError(`not a readable X.509 certificate (${describeError(error)})`, { cause: error });
  }
  const key = certificate.publicKey;
  if (key.asymmetricKeyType !== 'rsa') {
    throw new CertificateError(`its key is ${key.asymmetricKeyType ?? 'of unknown type'}; the authority signs with RSA`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS) throw new CertificateError(`its RSA key has ${bits} bits, fewer than ${MIN_RSA_BITS}`);
  return {
    publicKey: key,
    subject: certificate.subject.split('\n').join(', '),
    validFrom: certificate.validFrom,
    validTo: certificate.validTo,
    fingerprint256: certificate.fingerprint256,
  };
}

/** One line for logs and status: subject, validity and fingerprint. Throws CertificateError. */
export function describeCertificate(pem: string): string {
  const c = loadCertificate(pem);
  return `${c.subject} (valid ${c.validFrom} to ${c.validTo}; SHA-256 fingerprint ${c.fingerprint256})`;
}

// ---------------------------------------------------------------------------------------------
// Detached signatures (pushed documents)

/**
 * Checks that `signatureBase64` is the authority's RSA PKCS#1 v1.5 SHA-256 signature over exactly
 * these bytes. Returns nothing; throws SignatureError.
 */
export function verifyDetachedSignature(document: Buffer, signatureBase64: string, certificatePem: string): void {
  // Line breaks and spaces are what `base64` without -w0 and mail-safe transports add.
  const compact = signatureBase64.replace(/\s+/g, '');
  if (compact.length === 0 || compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(compact)) {
    throw new SignatureError('signature is not base64');
  }
  let certificate: AuthorityCertificate;
  try {
    certificate = loadCertificate(certificatePem);
  } catch (error) {
    throw new SignatureError(`certificate unreadable: ${(error as CertificateError).reason}`, { cause: error });
  }
  let valid: boolean;
  try {
    valid = verify('sha256', document, { key: certificate.publicKey, padding: constants.RSA_PKCS1_PADDING }, Buffer.from(compact, 'base64'));
  } catch {
    valid = false; // e.g. a signature longer than the modulus
  }
  if (!valid) throw new SignatureError('signature does not verify against the authority certificate');
}

// ---------------------------------------------------------------------------------------------
// Tickets (enveloped XML-DSig)

export interface TicketOptions {
  /** The authority's certificate (PEM): the only key a ticket may be signed with. */
  readonly certificatePem: string;
  /** This node's id: the ticket's slice must name it. */
  readonly nodeId: number;
  /** Tickets larger than this many bytes (UTF-8) are refused before parsing. */
  readonly maxBytes: number;
  /** The current time in seconds since the epoch; a ticket whose slice expired by then is refused. */
  readonly nowSeconds: number;
}

export interface VerifiedTicket {
  readonly sliver: SliverSpec;
  /** The slice's timestamp (else the document's); the caller refuses one not newer than its record. */
  readonly timestamp: number;
  readonly expiry: number | null;
  /** Subject of the certificate that the signature verified against. */
  readonly signedBy: string;
  /** Parts of the slice left out as invalid (e.g. a bad key), as parseSlicesDocument reports them. */
  readonly skipped: readonly SkippedEntry[];
}

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
const xmldom = createRequire(import.meta.url)('@xmldom/xmldom') as {
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

function quoteShort(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
}

// What may hold "<!" without declaring anything: comments and CDATA sections (and processing
// instructions, which may hold any text), each skipped up to its end.
const OPAQUE = [['<!--', '-->'], ['<![CDATA[', ']]>'], ['<?', '?>']] as const;

/** Index of the first `<!` that opens neither a comment nor a CDATA section, or -1. */
function markupDeclarationAt(text: string): number {
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

function lineAt(text: string, index: number): number {
  let line = 1;
  for (let i = text.indexOf('\n'); i >= 0 && i < index; i = text.indexOf('\n', i + 1)) line++;
  return line;
}

/**
 * A strict XML 1.0 and namespaces pass over the whole ticket (xmldom, which xml-crypto uses,
 * accepts much that is not XML, such as text after the root). Nothing is taken from this pass
 * but where the root element starts. Throws TicketError.
 */
function checkWellFormed(text: string): number {
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
function checkSignatureShape(root: DomNode): DomNode {
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
function verifyEnveloped(text: string, signature: DomNode, publicKey: KeyObject): string {
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

/**
 * Verifies a ticket against the authority's certificate and returns its one sliver for node
 * `options.nodeId`. Only the content the signature covers is read: xml-crypto's canonical form
 * of the signed document, without the signature. Throws TicketError.
 */
export function verifyTicket(xml: string, options: TicketOptions): VerifiedTicket {
  // Before anything reads the ticket as XML: its size, then declarations (a DOCTYPE can define
  // entities that expand without bound, and xmldom would take it in anywhere in the text).
  const size = Buffer.byteLength(xml, 'utf8');
  if (size > options.maxBytes) throw new TicketError(`ticket is ${size} bytes, more than the limit of ${options.maxBytes} bytes`);
  const declaration = markupDeclarationAt(xml);
  if (declaration >= 0) {
    throw new TicketError(`DOCTYPE and entity declarations are not allowed (${quoteShort(xml.slice(declaration, declaration + 20))} at line ${lineAt(xml, declaration)})`);
  }

  let certificate: AuthorityCertificate;
  try {
    certificate = loadCertificate(options.certificatePem);
  } catch (error) {
    throw new TicketError(`certificate unreadable: ${(error as CertificateError).reason}`, { cause: error });
  }

  const rootStart = checkWellFormed(xml);
  const problems: string[] = [];
  const dom = new xmldom.DOMParser({ errorHandler: (level, message) => problems.push(`${level}: ${message}`) }).parseFromString(xml, 'text/xml');
  if (problems.length > 0 || dom.documentElement === null) {
    throw new TicketError(`not well-formed XML: ${problems[0]?.replace(/\s+/g, ' ') ?? 'no root element'}`);
  }
  const signature = checkSignatureShape(dom.documentElement);
  const signedXml = verifyEnveloped(xml, signature, certificate.publicKey);

  // The canonical form starts at <slices>; blank lines in place of what came before keep the
  // parser's line numbers those of the ticket as sent (c14n keeps line breaks in content).
  // The size limit was applied to the ticket; its canonical form, already in memory, may be
  // somewhat larger (CDATA becomes escaped text), so it is not limited again.
  const padding = '\n'.repeat(lineAt(xml, rootStart) - 1);
  let parsed;
  try {
    parsed = parseSlicesDocument(padding + signedXml, { nodeId: options.nodeId, maxBytes: Number.MAX_SAFE_INTEGER, source: 'ticket' });
  } catch (error) {
    if (error instanceof DocumentError) throw new TicketError(error.message, { cause: error });
    throw error;
  }

  if (parsed.slicesSeen !== 1) throw new TicketError(`ticket holds ${parsed.slicesSeen} slices, expected one`);
  // c14n writes every element as a start tag and escapes "<" everywhere else, so this finds
  // exactly the <delegate> elements (at any depth; the parser reads only those under <slices>).
  if (/<delegate[\s>]/.test(signedXml)) throw new TicketError('ticket holds a <delegate>; a ticket carries one slice and nothing else');
  const sliver = parsed.slivers[0];
  if (sliver === undefined) {
    const invalid = parsed.skipped.find((entry) => entry.what.startsWith('slice'));
    if (invalid !== undefined) throw new TicketError(`${invalid.what} is not valid: ${invalid.reason}`);
    throw new TicketError(`ticket is for no slice on node ${options.nodeId}`);
  }
  if (sliver.expiry !== null && sliver.expiry <= options.nowSeconds) {
    throw new TicketError(`ticket expired at ${new Date(sliver.expiry * 1000).toISOString()}`);
  }
  return { sliver, timestamp: sliver.timestamp, expiry: sliver.expiry, signedBy: certificate.subject, skipped: parsed.skipped };
}
