// Tickets signed by the real xmlsec1 and documents signed by the real openssl, checked against
// the authority's certificate: what verifies, and every way a forged or altered input is refused.
import { Buffer } from 'node:buffer';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import {
  CertificateError, describeCertificate, loadCertificate, SignatureError, TicketError, verifyDetachedSignature, verifyTicket,
  type TicketOptions, type VerifiedTicket,
} from '../../src/api/signatures.js';
import { makeAuthority, signDetached, signTicket, type Authority } from '../support/authority-keys.js';
import { ed25519KeyLine as key } from '../support/ssh-keys.js';

const run = promisify(execFile);
const NODE = 42;
const NOW = 1_800_000_000;

let dir = '';
let authority: Authority | null = null;
let wrongCertPem = '';

/** The signing tools that are not installed here ('' when both are), looked for once. */
async function missingToolsHere(): Promise<string> {
  let missing = '';
  for (const [tool, args] of [['openssl', ['version']], ['xmlsec1', ['--version']]] as const) {
    try {
      await run(tool, [...args]);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      missing += `${missing ? ' and ' : ''}${tool}`;
    }
  }
  return missing;
}
const missingTools = await missingToolsHere();
// Without the tools every test here is reported skipped, and why.
const withTools = missingTools ? test.skip : test;
if (missingTools) {
  test.skip(`signature tests: need ${missingTools}, not installed here (npm test installs them as root: test/host-setup.sh)`, () => undefined);
}

test.before(async () => {
  if (missingTools) return;
  dir = await mkdtemp(join(tmpdir(), 'nodemgr-signatures-'));
  authority = await makeAuthority(dir);
  wrongCertPem = await readFile(authority.wrongCertPath, 'utf8');
});

test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The authority made by test.before (the tests that use it run only where the tools are). */
function needAuthority(_t: ExecutionContext): Authority {
  if (authority === null) throw new Error('the test authority was not made');
  return authority;
}

const ALICE = key(1, 'alice@example.org');
// Text a shell script may well hold; in CDATA it must come through canonicalization unchanged.
const INITSCRIPT = '#!/bin/sh\ncat > index.html <<EOF\n<!DOCTYPE html><p>a & b</p>\nEOF\n';

interface SliceOptions {
  readonly id?: number;
  readonly name?: string;
  readonly node?: number;
  readonly expiry?: number | null;
  readonly cpuShare?: string;
  readonly body?: string;
}

function slice(o: SliceOptions = {}): string {
  const expiry = o.expiry === null ? '' : ` expiry="${o.expiry ?? 1_900_000_000}"`;
  return `  <slice id="${o.id ?? 17}" name="${o.name ?? 'princeton_sirius'}"${expiry}>
    <timestamp value="1799990000"/>
    <node id="${o.node ?? NODE}"/>
    <user person_id="7"/>
    <resource name="cpu_share"><value>${o.cpuShare ?? '32'}</value></resource>
    <resource name="initscript"><value><![CDATA[${INITSCRIPT}]]></value></resource>
    <key person_id="7" value="${ALICE}"/>
${o.body ?? ''}  </slice>
`;
}

function ticket(...slices: string[]): string {
  return `<?xml version="1.0" encoding="utf-8"?>\n<!-- issued by the test authority -->\n<slices>\n${(slices.length > 0 ? slices : [slice()]).join('')}</slices>\n`;
}

function options(certificatePem: string, extra: Partial<TicketOptions> = {}): TicketOptions {
  return { certificatePem, nodeId: NODE, maxBytes: 1 << 20, nowSeconds: NOW, ...extra };
}

function refused(t: ExecutionContext, xml: string, certificatePem: string, reason: RegExp, extra: Partial<TicketOptions> = {}): TicketError {
  const error = t.throws(() => verifyTicket(xml, options(certificatePem, extra)), { instanceOf: TicketError })!;
  t.regex(error.reason, reason);
  t.is(error.message, `ticket refused: ${error.reason}`);
  return error;
}

function assertSliver(t: ExecutionContext, verified: VerifiedTicket, certificateSubject = 'Test PLC authority'): void {
  t.like(verified.sliver, {
    name: 'princeton_sirius', sliceId: 17, timestamp: 1799990000, expiry: 1900000000,
    rspec: { cpu_share: 32 }, initscript: INITSCRIPT, keys: [ALICE],
  });
  t.is(verified.timestamp, 1799990000);
  t.is(verified.expiry, 1900000000);
  t.regex(verified.signedBy, new RegExp(`CN=${certificateSubject}`));
  t.deepEqual(verified.skipped, []);
}

// ---------------------------------------------------------------------------------------------
// Tickets that verify

withTools('a ticket signed by the authority verifies and yields its sliver with keys, rspec, initscript and times', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  assertSliver(t, verifyTicket(signed, options(a.certPem)));
});

for (const variant of [
  { canonicalization: 'inclusive', signatureAlgorithm: 'rsa-sha256', digestAlgorithm: 'sha256' },
  { canonicalization: 'exclusive', signatureAlgorithm: 'rsa-sha512', digestAlgorithm: 'sha512' },
  { canonicalization: 'inclusive', signatureAlgorithm: 'rsa-sha512', digestAlgorithm: 'sha256', keyInfo: false },
] as const) {
  withTools(`a ticket signed with ${variant.canonicalization} C14N, ${variant.signatureAlgorithm} and ${variant.digestAlgorithm} verifies`, async (t) => {
    const a = needAuthority(t);
    const signed = await signTicket(ticket(), a.keyPath, a.certPath, variant);
    assertSliver(t, verifyTicket(signed, options(a.certPem)));
  });
}

withTools('a ticket without expiry verifies and says so', async (t) => {
  const a = needAuthority(t);
  const verified = verifyTicket(await signTicket(ticket(slice({ expiry: null })), a.keyPath, a.certPath), options(a.certPem));
  t.is(verified.expiry, null);
  t.is(verified.sliver.expiry, null);
});

withTools('comments are not signed content: adding one after signing changes nothing that is returned', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  const commented = signed.replace('<node id="42"/>', '<node id="42"/><!-- <node id="7"/> -->');
  t.not(commented, signed);
  assertSliver(t, verifyTicket(commented, options(a.certPem)));
});

// ---------------------------------------------------------------------------------------------
// Tickets that are altered, forged or not signed

withTools('a ticket changed by one character after signing is refused: rspec value, key, node and name', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  const changes: [string, string][] = [
    ['<value>32</value>', '<value>33</value>'],
    ['alice@example.org', 'alicf@example.org'],
    ['<node id="42"/>', '<node id="43"/>'],
    ['name="princeton_sirius"', 'name="princeton_siriux"'],
    ['a & b', 'a | b'],
  ];
  for (const [from, to] of changes) {
    t.true(signed.includes(from), from);
    refused(t, signed.replace(from, to), a.certPem, /^digest mismatch \(the ticket was changed after signing\)$/);
  }
});

withTools('a ticket signed by another key is refused, with or without that key\'s certificate in KeyInfo', async (t) => {
  const a = needAuthority(t);
  const bare = await signTicket(ticket(), a.wrongKeyPath, a.wrongCertPath, { keyInfo: false });
  t.false(bare.includes('X509Certificate'));
  refused(t, bare, a.certPem, /^signature does not verify against the authority certificate$/);

  // The forger embeds the certificate that matches the forging key: it must not be used.
  const embedded = await signTicket(ticket(), a.wrongKeyPath, a.wrongCertPath);
  const embeddedCert = /<X509Certificate>([^<]+)<\/X509Certificate>/.exec(embedded)?.[1]?.replace(/\s+/g, '');
  t.is(embeddedCert, wrongCertPem.replace(/-----[A-Z ]+-----|\s+/g, ''));
  refused(t, embedded, a.certPem, /^signature does not verify against the authority certificate$/);
  // ... and it does verify against that certificate, so the refusal is about the key alone.
  t.is(verifyTicket(embedded, options(wrongCertPem)).sliver.name, 'princeton_sirius');
});

withTools('an authority-signed ticket carrying a foreign certificate in KeyInfo still verifies with the configured one', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  const foreign = wrongCertPem.replace(/-----[A-Z ]+-----|\s+/g, '');
  const swapped = signed.replace(/<X509Certificate>[^<]+<\/X509Certificate>/, `<X509Certificate>${foreign}</X509Certificate>`);
  t.not(swapped, signed);
  assertSliver(t, verifyTicket(swapped, options(a.certPem)));
  refused(t, swapped, wrongCertPem, /^signature does not verify against the authority certificate$/);
});

withTools('an unsigned ticket is refused', (t) => {
  const a = needAuthority(t);
  refused(t, ticket(), a.certPem, /^not signed$/);
});

withTools('a signature in another namespace does not count as one', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  refused(t, signed.replace('xmlns="http://www.w3.org/2000/09/xmldsig#"', 'xmlns="urn:not-dsig"'), a.certPem, /^not signed$/);
});

withTools('rsa-sha1 and sha1 digests are refused even when the signature is the authority\'s', async (t) => {
  const a = needAuthority(t);
  const sha1 = await signTicket(ticket(), a.keyPath, a.certPath, { signatureAlgorithm: 'rsa-sha1' });
  refused(t, sha1, a.certPem, /^signature algorithm http:\/\/www\.w3\.org\/2000\/09\/xmldsig#rsa-sha1 refused \(SHA-1 collisions are practical/);
  const sha1Digest = await signTicket(ticket(), a.keyPath, a.certPath, { digestAlgorithm: 'sha1' });
  refused(t, sha1Digest, a.certPem, /^digest algorithm http:\/\/www\.w3\.org\/2000\/09\/xmldsig#sha1 refused \(SHA-1/);
});

// ---------------------------------------------------------------------------------------------
// Signature wrapping

withTools('an unsigned <slice> inserted into a signed ticket is refused', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(slice({ node: 7 })), a.keyPath, a.certPath);
  const extra = slice({ id: 99, name: 'evil_slice' });
  refused(t, signed.replace('<Signature', `${extra}<Signature`), a.certPem, /^digest mismatch/);
  refused(t, signed.replace('<slices>', `<slices>\n${extra}`), a.certPem, /^digest mismatch/);
});

withTools('a signed ticket moved inside another element is refused', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  const body = signed.slice(signed.indexOf('<slices>'));
  const evil = slice({ id: 99, name: 'evil_slice' });
  refused(t, `<wrapper>${body}</wrapper>`, a.certPem, /^the root element is <wrapper>, expected <slices>$/);
  refused(t, `<slices>\n${evil}<extra>${body}</extra></slices>`, a.certPem, /^the signature is not a child of the root <slices> \(it is inside <slices>, 2 levels down\)$/);
  refused(t, `<slices>\n${evil}${body}</slices>`, a.certPem, /^the signature is not a child of the root <slices> \(it is inside <slices>, 1 level down\)$/);
});

withTools('a signature over one <slice> by ID (not the whole document) is refused', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(slice({ node: 7 })), a.keyPath, a.certPath, { referenceUri: '#17' });
  // xmlsec1 accepts it: the signature is genuine, it just does not cover the document.
  const evil = slice({ id: 99, name: 'evil_slice' });
  refused(t, signed.replace('<slices>', `<slices>\n${evil}`), a.certPem, /^signed reference does not cover the whole document \(URI "#17"; expected URI=""\)$/);
});

withTools('a second copy of the signature is refused', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  const signature = signed.slice(signed.indexOf('<Signature'), signed.indexOf('</Signature>') + '</Signature>'.length);
  refused(t, signed.replace('</slices>', `${signature}\n</slices>`), a.certPem, /^ticket holds 2 signatures, expected one$/);
  refused(t, signed.replace('<node id="42"/>', `<node id="42"/>${signature}`), a.certPem, /^ticket holds 2 signatures, expected one$/);
});

withTools('a signature with a second reference or without the enveloped transform is refused', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  const reference = signed.slice(signed.indexOf('<Reference'), signed.indexOf('</Reference>') + '</Reference>'.length);
  refused(t, signed.replace(reference, reference + reference), a.certPem, /^the signature has 2 references, expected one$/);
  refused(t, signed.replace(/<Transform Algorithm="http:\/\/www\.w3\.org\/2000\/09\/xmldsig#enveloped-signature"\/>\n?/, ''), a.certPem,
    /^signed reference must have the enveloped-signature transform/);
  refused(t, signed.replace('<Reference URI="">', '<Reference>'), a.certPem, /^signed reference does not cover the whole document \(no URI/);
});

// ---------------------------------------------------------------------------------------------
// What the signed content says

withTools('an expired ticket is refused, at its expiry second already', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(slice({ expiry: NOW })), a.keyPath, a.certPath);
  refused(t, signed, a.certPem, new RegExp(`^ticket expired at ${new Date(NOW * 1000).toISOString()}$`));
  t.is(verifyTicket(signed, options(a.certPem, { nowSeconds: NOW - 1 })).expiry, NOW);
});

withTools('a ticket for another node is refused', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(slice({ node: 7 })), a.keyPath, a.certPath);
  refused(t, signed, a.certPem, /^ticket is for no slice on node 42$/);
  t.is(verifyTicket(signed, options(a.certPem, { nodeId: 7 })).sliver.name, 'princeton_sirius');
});

withTools('a ticket with two slices is refused, whichever nodes they name', async (t) => {
  const a = needAuthority(t);
  const both = await signTicket(ticket(slice(), slice({ id: 18, name: 'princeton_other' })), a.keyPath, a.certPath);
  refused(t, both, a.certPem, /^ticket holds 2 slices, expected one$/);
  const other = await signTicket(ticket(slice(), slice({ id: 18, name: 'princeton_other', node: 7 })), a.keyPath, a.certPath);
  refused(t, other, a.certPem, /^ticket holds 2 slices, expected one$/);
  const none = await signTicket('<slices>\n</slices>\n', a.keyPath, a.certPath);
  refused(t, none, a.certPem, /^ticket holds 0 slices, expected one$/);
});

withTools('a ticket with a delegate is refused', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(slice(), `  <delegate name="del_x"><key value="${key(2)}"/></delegate>\n`), a.keyPath, a.certPath);
  refused(t, signed, a.certPem, /^ticket holds a <delegate>/);
});

withTools('an invalid slice is refused with the parser\'s reason, and a malformed document with its located DocumentError', async (t) => {
  const a = needAuthority(t);
  const badName = await signTicket(ticket(slice({ name: 'root' })), a.keyPath, a.certPath);
  refused(t, badName, a.certPem, /^slice "root" \(id 17\) is not valid: .*root/);
  // Line 3 of the ticket as sent (after the declaration and a comment), although the signed
  // canonical form starts at <slices>.
  const badTimestamp = await signTicket(ticket().replace('<slices>\n', '<slices>\n<timestamp value="soon"/>\n'), a.keyPath, a.certPath);
  refused(t, badTimestamp, a.certPem, /^ticket line 4 column 1: document timestamp "soon" is not/);
});

// ---------------------------------------------------------------------------------------------
// Refused before any XML parsing

withTools('DOCTYPE and entity declarations are refused before parsing, even in a signed ticket', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  const laughs = '<!DOCTYPE slices [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n';
  refused(t, signed.replace('<slices>', `${laughs}<slices>`), a.certPem, /^DOCTYPE and entity declarations are not allowed \("<!DOCTYPE slices \[<!" at line 3\)$/);
  refused(t, signed.replace('<slices>', '<!doctype slices>\n<slices>'), a.certPem, /^DOCTYPE and entity declarations are not allowed/);
  refused(t, signed.replace('<node id="42"/>', '<node id="42"/><!ENTITY x "y">'), a.certPem, /^DOCTYPE and entity declarations are not allowed .* at line 6\)$/);
  refused(t, signed.replace('<slices>', '<!DOCTYPE slices SYSTEM "file:///etc/passwd">\n<slices>'), a.certPem, /^DOCTYPE/);
});

withTools('an oversize ticket is refused before parsing, counting UTF-8 bytes', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(slice({ body: '    <!-- ünïcödé -->\n' })), a.keyPath, a.certPath);
  const bytes = Buffer.byteLength(signed);
  t.true(bytes > signed.length);
  t.is(verifyTicket(signed, options(a.certPem, { maxBytes: bytes })).sliver.name, 'princeton_sirius');
  refused(t, signed, a.certPem, new RegExp(`^ticket is ${bytes} bytes, more than the limit of ${bytes - 1} bytes$`), { maxBytes: bytes - 1 });
  // Even something that is not XML at all is measured first.
  refused(t, 'x'.repeat(100), a.certPem, /^ticket is 100 bytes, more than the limit of 99 bytes$/, { maxBytes: 99 });
});

withTools('a ticket that is not well-formed XML is refused with where it went wrong', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  // xmldom alone would ignore text after the root; the strict pass does not.
  refused(t, `${signed}trailing junk\n`, a.certPem, /^not well-formed XML: line \d+ column \d+: text data outside of root node/);
  refused(t, signed.replace('<user person_id="7"/>', '<user person_id="7">'), a.certPem, /^not well-formed XML: line \d+ column \d+: /);
  refused(t, '', a.certPem, /^not well-formed XML: /);
});

withTools('a bad configured certificate is reported as such, not as a bad ticket', async (t) => {
  const a = needAuthority(t);
  const signed = await signTicket(ticket(), a.keyPath, a.certPath);
  refused(t, signed, 'not a certificate', /^certificate unreadable: no PEM certificate/);
});

// ---------------------------------------------------------------------------------------------
// Certificates

withTools('loadCertificate reads the authority certificate and refuses what cannot serve', async (t) => {
  const a = needAuthority(t);
  const loaded = loadCertificate(a.certPem);
  t.is(loaded.subject, 'O=nodemgr tests, CN=Test PLC authority');
  t.is(loaded.publicKey.asymmetricKeyType, 'rsa');
  t.regex(describeCertificate(a.certPem), /^O=nodemgr tests, CN=Test PLC authority \(valid .+ to .+; SHA-256 fingerprint ([0-9A-F]{2}:){31}[0-9A-F]{2}\)$/);

  const reason = (pem: string): string => t.throws(() => loadCertificate(pem), { instanceOf: CertificateError })!.reason;
  t.regex(reason(''), /^no PEM certificate/);
  t.regex(reason(a.certPem + wrongCertPem), /^2 certificates found, expected only the authority's$/);
  t.regex(reason(a.certPem + await readFile(a.keyPath, 'utf8')), /also holds a private key/);
  t.regex(reason(a.certPem.replace(/\n[A-Za-z0-9+/]{10}/, '\nAAAAAAAAAA')), /^not a readable X\.509 certificate/);

  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=ec',
    '-keyout', join(dir, 'ec.key'), '-out', join(dir, 'ec.pem'), '-days', '2']);
  t.regex(reason(await readFile(join(dir, 'ec.pem'), 'utf8')), /^its key is ec; the authority signs with RSA$/);
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:1024', '-nodes', '-subj', '/CN=small',
    '-keyout', join(dir, 'small.key'), '-out', join(dir, 'small.pem'), '-days', '2']);
  t.regex(reason(await readFile(join(dir, 'small.pem'), 'utf8')), /^its RSA key has 1024 bits, fewer than 2048$/);
});

// ---------------------------------------------------------------------------------------------
// Detached signatures (pushed slices.xml)

const DOCUMENT = Buffer.from(ticket(slice(), slice({ id: 18, name: 'princeton_other', node: 7 })));

function refusedDetached(t: ExecutionContext, document: Buffer, signature: string, certificatePem: string, reason: RegExp): void {
  const error = t.throws(() => verifyDetachedSignature(document, signature, certificatePem), { instanceOf: SignatureError })!;
  t.regex(error.reason, reason);
}

withTools('a detached signature made by openssl with the authority key verifies, also when wrapped in lines', async (t) => {
  const a = needAuthority(t);
  const signature = await signDetached(DOCUMENT, a.keyPath);
  t.notThrows(() => verifyDetachedSignature(DOCUMENT, signature, a.certPem));
  const wrapped = signature.replace(/.{64}/g, '$&\n');
  t.true(wrapped.includes('\n'));
  t.notThrows(() => verifyDetachedSignature(DOCUMENT, wrapped, a.certPem));
});

withTools('a document changed in one byte after signing is refused', async (t) => {
  const a = needAuthority(t);
  const signature = await signDetached(DOCUMENT, a.keyPath);
  for (const at of [0, DOCUMENT.indexOf('32'), DOCUMENT.length - 1]) {
    const changed = Buffer.from(DOCUMENT);
    changed[at] = changed[at]! ^ 0x01;
    refusedDetached(t, changed, signature, a.certPem, /^signature does not verify against the authority certificate$/);
  }
  refusedDetached(t, Buffer.concat([DOCUMENT, Buffer.from('\n')]), signature, a.certPem, /^signature does not verify/);
});

withTools('a detached signature by another key is refused', async (t) => {
  const a = needAuthority(t);
  const signature = await signDetached(DOCUMENT, a.wrongKeyPath);
  refusedDetached(t, DOCUMENT, signature, a.certPem, /^signature does not verify against the authority certificate$/);
  t.notThrows(() => verifyDetachedSignature(DOCUMENT, signature, wrongCertPem));
});

withTools('a detached signature that is not base64, or is cut short, is refused', async (t) => {
  const a = needAuthority(t);
  const signature = await signDetached(DOCUMENT, a.keyPath);
  for (const garbage of ['', 'not base64!', 'abc', `${signature}*`, '====']) {
    refusedDetached(t, DOCUMENT, garbage, a.certPem, /^signature is not base64$/);
  }
  refusedDetached(t, DOCUMENT, signature.slice(0, -8), a.certPem, /^signature does not verify/);
  refusedDetached(t, DOCUMENT, Buffer.alloc(256, 7).toString('base64'), a.certPem, /^signature does not verify/);
  refusedDetached(t, DOCUMENT, signature, 'garbage', /^certificate unreadable: no PEM certificate/);
});
