// A client certificate's subject in OpenSSL's one-line slash form, the form XenBEE's allowed-users
// file lists (`/C=DE/O=Example/OU=Persons/CN=test user 1`) and what `openssl x509 -noout -subject
// -nameopt compat` prints after "subject=". Node shows a subject only as multi-line text or an
// object (which loses the order of the attributes, and the bytes of BMP and T61 strings), so the
// subject is read from the certificate's DER, and written as OpenSSL's X509_NAME_oneline writes it:
// the RDNs in the certificate's order, "/" before each RDN and "+" between the attributes of a
// multi-valued one; the value's bytes as they are, but "\xHH" (upper-case hex) for a byte outside
// space to "~", and "\/", "\+" for "/" and "+".

/** OpenSSL's short names of the attribute types found in subjects; any other is shown by its OID. */
const SHORT_NAMES: ReadonlyMap<string, string> = new Map([
  ['2.5.4.3', 'CN'], ['2.5.4.4', 'SN'], ['2.5.4.5', 'serialNumber'], ['2.5.4.6', 'C'], ['2.5.4.7', 'L'],
  ['2.5.4.8', 'ST'], ['2.5.4.9', 'street'], ['2.5.4.10', 'O'], ['2.5.4.11', 'OU'], ['2.5.4.12', 'title'],
  ['2.5.4.13', 'description'], ['2.5.4.15', 'businessCategory'], ['2.5.4.16', 'postalAddress'],
  ['2.5.4.17', 'postalCode'], ['2.5.4.18', 'postOfficeBox'], ['2.5.4.20', 'telephoneNumber'], ['2.5.4.41', 'name'],
  ['2.5.4.42', 'GN'], ['2.5.4.43', 'initials'], ['2.5.4.44', 'generationQualifier'],
  ['2.5.4.45', 'x500UniqueIdentifier'], ['2.5.4.46', 'dnQualifier'], ['2.5.4.65', 'pseudonym'], ['2.5.4.72', 'role'],
  ['2.5.4.97', 'organizationIdentifier'], ['1.2.840.113549.1.9.1', 'emailAddress'],
  ['0.9.2342.19200300.100.1.1', 'UID'], ['0.9.2342.19200300.100.1.25', 'DC'],
  ['1.3.6.1.4.1.311.60.2.1.1', 'jurisdictionL'], ['1.3.6.1.4.1.311.60.2.1.2', 'jurisdictionST'],
  ['1.3.6.1.4.1.311.60.2.1.3', 'jurisdictionC'],
]);

/** The attribute types the table names, for the test that checks them against openssl. */
export const KNOWN_ATTRIBUTE_OIDS: readonly string[] = [...SHORT_NAMES.keys()];

/** A certificate whose DER is not what X.509 says; the message names the part. */
export class CertificateFormatError extends Error {
  override readonly name = 'CertificateFormatError';
}

interface Element {
  /** The identifier octet (class, constructed bit, tag number below 31). */
  readonly tag: number;
  /** Offsets into the DER: where the element starts, where its contents start, where it ends. */
  readonly start: number;
  readonly contents: number;
  readonly end: number;
}

const SEQUENCE = 0x30;
const SET = 0x31;
const OBJECT_IDENTIFIER = 0x06;
const GENERAL_STRING = 0x1b;
/** [0] EXPLICIT, the optional version at the head of a TBSCertificate. */
const VERSION = 0xa0;

function element(der: Uint8Array, at: number, limit: number, what: string): Element {
  const bad = (why: string) => new CertificateFormatError(`the certificate's ${what} at byte ${at}: ${why}`);
  if (at + 2 > limit) throw bad('truncated');
  const tag = der[at]!;
  if ((tag & 0x1f) === 0x1f) throw bad('a tag number above 30, which no certificate field has');
  let length = der[at + 1]!;
  let contents = at + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4) throw bad('not a definite DER length');
    if (contents + octets > limit) throw bad('truncated');
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + der[contents + i]!;
    contents += octets;
  }
  if (contents + length > limit) throw bad('longer than what holds it');
  return { tag, start: at, contents, end: contents + length };
}

function children(der: Uint8Array, parent: Element, what: string): Element[] {
  const found: Element[] = [];
  for (let at = parent.contents; at < parent.end; at = found[found.length - 1]!.end) {
    found.push(element(der, at, parent.end, what));
  }
  return found;
}

function expect(e: Element | undefined, tag: number, what: string): Element {
  if (e?.tag !== tag) throw new CertificateFormatError(`the certificate's ${what} is missing or of the wrong type`);
  return e;
}

/** Dotted text of an OBJECT IDENTIFIER's contents; arcs may exceed 2^53 (UUID OIDs under 2.25). */
function oidText(bytes: Uint8Array): string {
  const arcs: bigint[] = [];
  let value = 0n;
  for (const byte of bytes) {
    value = (value << 7n) | BigInt(byte & 0x7f);
    if (byte & 0x80) continue;
    if (arcs.length === 0) {
      const first = value < 40n ? 0n : value < 80n ? 1n : 2n;
      arcs.push(first, value - first * 40n);
    } else {
      arcs.push(value);
    }
    value = 0n;
  }
  return arcs.join('.');
}

/**
 * The bytes OpenSSL prints of a value. A GeneralString whose length is a multiple of four and that
 * has zeros in every position but each fourth is shown by those bytes alone (OpenSSL takes it for
 * UCS-4); every other string by all of its bytes.
 */
function printedBytes(der: Uint8Array, value: Element): Uint8Array {
  // A value that is not a primitive string is, in OpenSSL's entry, its whole encoding.
  const bytes = value.tag & 0x20 ? der.subarray(value.start, value.end) : der.subarray(value.contents, value.end);
  if (value.tag !== GENERAL_STRING || bytes.length % 4 !== 0) return bytes;
  const ucs4 = bytes.every((b, i) => i % 4 === 3 || b === 0);
  return ucs4 ? bytes.filter((_, i) => i % 4 === 3) : bytes;
}

function escaped(bytes: Uint8Array): string {
  let text = '';
  for (const b of bytes) {
    if (b < 0x20 || b > 0x7e) text += `\\x${b.toString(16).toUpperCase().padStart(2, '0')}`;
    else text += b === 0x2f || b === 0x2b ? `\\${String.fromCharCode(b)}` : String.fromCharCode(b);
  }
  return text;
}

/** The subject of a DER certificate in OpenSSL's one-line form; "" for an empty subject. */
export function certificateSubject(der: Uint8Array): string {
  const certificate = expect(element(der, 0, der.length, 'outer sequence'), SEQUENCE, 'outer sequence');
  const tbs = expect(children(der, certificate, 'body')[0], SEQUENCE, 'TBSCertificate');
  const fields = children(der, tbs, 'TBSCertificate field');
  // version (optional), serialNumber, signature, issuer, validity, subject
  const subject = expect(fields[(fields[0]?.tag === VERSION ? 1 : 0) + 4], SEQUENCE, 'subject');
  let text = '';
  for (const rdn of children(der, subject, 'subject')) {
    expect(rdn, SET, 'subject RDN');
    children(der, rdn, 'subject attribute').forEach((pair, i) => {
      const [type, value] = children(der, expect(pair, SEQUENCE, 'subject attribute'), 'subject attribute');
      const oidElement = expect(type, OBJECT_IDENTIFIER, 'attribute type');
      const oid = oidText(der.subarray(oidElement.contents, oidElement.end));
      if (value === undefined) throw new CertificateFormatError(`the certificate's subject attribute ${oid} has no value`);
      text += `${i === 0 ? '/' : '+'}${SHORT_NAMES.get(oid) ?? oid}=${escaped(printedBytes(der, value))}`;
    });
  }
  return text;
}
