// A certificate's subject as the TLS listener names its caller: the very text that `openssl x509
// -noout -subject -nameopt compat` prints (and that XenBEE's allowed-users files list), for
// certificates made here by openssl with several RDNs, multi-valued ones and awkward values.
import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificateSubject, CertificateFormatError, KNOWN_ATTRIBUTE_OIDS } from '../../src/api/certificate-subject.js';
import { opensslSubject, selfSigned } from '../support/tls-keys.js';

let dir = '';
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nodemgr-subject-'));
});
test.after.always(() => rm(dir, { recursive: true, force: true }));

let serial = 0;
/** Our subject and openssl's for a certificate made with `subject`. */
async function both(subject: string, reqConfig?: string): Promise<{ ours: string; openssl: string }> {
  const { certPath } = await selfSigned(dir, `c${serial++}`, subject, reqConfig);
  const ours = certificateSubject(new X509Certificate(await readFile(certPath)).raw);
  return { ours, openssl: await opensslSubject(certPath) };
}

const sameAsOpenssl = test.macro(async (t, subject: string, expected: string, reqConfig?: string) => {
  const { ours, openssl } = await both(subject, reqConfig);
  t.is(openssl, expected, 'openssl prints what the test expects');
  t.is(ours, openssl);
});

test('the common attributes, in the order of the certificate', sameAsOpenssl,
  '/C=DE/ST=Berlin/L=Mitte/O=Example Org/OU=Persons/CN=test user 1/emailAddress=t1@example.org',
  '/C=DE/ST=Berlin/L=Mitte/O=Example Org/OU=Persons/CN=test user 1/emailAddress=t1@example.org');

test('the order is the certificate\'s, not a canonical one', sameAsOpenssl,
  '/CN=test user 1/OU=Persons/O=Example Org/C=DE', '/CN=test user 1/OU=Persons/O=Example Org/C=DE');

test('XenBEE\'s short form', sameAsOpenssl, '/OU=Persons/CN=test user 1', '/OU=Persons/CN=test user 1');

// A SET is sorted in DER (by the encoded bytes, so a shorter pair first), and openssl keeps the
// attributes of a multi-valued RDN in that order, not in the order they were given.
test('a multi-valued RDN is joined with "+"', sameAsOpenssl,
  '/O=Example Org/OU=Persons+CN=multi user+UID=m1/C=DE', '/O=Example Org/OU=Persons+UID=m1+CN=multi user/C=DE');

test('"/" and "+" inside a value are escaped; a backslash, a comma and a quote are not', sameAsOpenssl,
  '/O=a\\/b/CN=c\\+d, "e" \\\\ f', '/O=a\\/b/CN=c\\+d, "e" \\ f');

test('control characters and every byte past "~" are \\xHH, upper case (UTF-8 by its bytes)', sameAsOpenssl,
  '/O=Zoë Ünïcode/CN=tab\there', '/O=Zo\\xC3\\xAB \\xC3\\x9Cn\\xC3\\xAFcode/CN=tab\\x09here');

const stringMask = (mask: string) => `[ req ]\ndistinguished_name = dn\nstring_mask = ${mask}\nutf8 = yes\n[ dn ]\n`;

test('a BMPString is shown by its raw bytes, as openssl shows it', sameAsOpenssl,
  '/O=Zoë/CN=plain', '/O=\\x00Z\\x00o\\x00\\xEB/CN=plain', stringMask('pkix'));

test('a T61String is shown by its raw (Latin-1) bytes', sameAsOpenssl,
  '/O=Zoë/CN=plain', '/O=Zo\\xEB/CN=plain', stringMask('nombstr'));

test('an attribute type openssl has no name for is shown by its OID', sameAsOpenssl,
  '/testAttribute=foo/CN=x', '/1.3.6.1.4.1.99999.7=foo/CN=x',
  `oid_section = oids\n[ oids ]\ntestAttribute = 1.3.6.1.4.1.99999.7\n${stringMask('utf8only')}`);

test('every attribute type of the table has the short name openssl gives it', async (t) => {
  const { ours, openssl } = await both(KNOWN_ATTRIBUTE_OIDS.map((oid) => `/${oid}=AB`).join(''));
  t.is(ours, openssl);
  t.notRegex(openssl, /\/\d/, 'openssl knows a name for each of them');
  t.is(ours.split('/').length, KNOWN_ATTRIBUTE_OIDS.length + 1);
});

test('bytes that are not a certificate are an error naming the part', (t) => {
  t.throws(() => certificateSubject(Buffer.from([0x30, 0x82, 0xff])), { instanceOf: CertificateFormatError, message: /outer sequence at byte 0: truncated/ });
  t.throws(() => certificateSubject(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00])), { instanceOf: CertificateFormatError, message: /TBSCertificate is missing or of the wrong type/ });
  t.throws(() => certificateSubject(Buffer.from([0x30, 0x02, 0x30, 0x00])), { instanceOf: CertificateFormatError, message: /subject is missing/ });
});
