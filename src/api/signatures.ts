// What the authority signs, checked against the authority's certificate and nothing else:
// - tickets (the API's Ticket): a one-slice slices document with an enveloped XML-DSig signature
//   over the whole document, as `xmlsec1 --sign` makes it from a template;
// - pushed documents (the API's DeliverSlices): a whole slices.xml with a detached RSA PKCS#1 v1.5
//   SHA-256 signature over its exact bytes, as `openssl dgst -sha256 -sign` makes it.
// Pure: no I/O and no clock; the caller passes the certificate and the time.
import { Buffer } from 'node:buffer';
import { constants, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { DocumentError, parseSlicesDocument } from '../slices/parse.js';
import type { SkippedEntry, SliverSpec } from '../slices/types.js';
import { describeError } from '../util/errors.js';
import { CertificateError, SignatureError, TicketError } from './signature-errors.js';
import { checkSignatureShape, checkWellFormed, lineAt, markupDeclarationAt, quoteShort, verifyEnveloped, xmldom } from './xml-dsig.js';

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

export { CertificateError, SignatureError, TicketError } from './signature-errors.js';
