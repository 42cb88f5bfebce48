// An authority (PLC) for tests: throwaway RSA keys and self-signed certificates made with openssl,
// tickets signed by the real xmlsec1 (as the authority signs them), and detached signatures made
// by `openssl dgst` (as the authority signs a pushed slices.xml). Unit and system tests share it.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Authority {
  /** The authority's private key (PEM, unencrypted) and its self-signed certificate. */
  readonly keyPath: string;
  readonly certPath: string;
  readonly certPem: string;
  /** Another key and certificate, for signatures the node must refuse. */
  readonly wrongKeyPath: string;
  readonly wrongCertPath: string;
}

async function makeKeyAndCertificate(keyPath: string, certPath: string, commonName: string): Promise<void> {
  await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '3650',
    '-subj', `/O=nodemgr tests/CN=${commonName}`,
    '-keyout', keyPath, '-out', certPath,
  ]);
}

/** Makes the authority's key pair and a wrong one in `dir` (which must exist). */
export async function makeAuthority(dir: string): Promise<Authority> {
  const keyPath = join(dir, 'authority.key');
  const certPath = join(dir, 'authority.pem');
  const wrongKeyPath = join(dir, 'wrong.key');
  const wrongCertPath = join(dir, 'wrong.pem');
  await Promise.all([
    makeKeyAndCertificate(keyPath, certPath, 'Test PLC authority'),
    makeKeyAndCertificate(wrongKeyPath, wrongCertPath, 'Somebody else'),
  ]);
  return { keyPath, certPath, certPem: await readFile(certPath, 'utf8'), wrongKeyPath, wrongCertPath };
}

export type SignatureAlgorithmName = 'rsa-sha1' | 'rsa-sha256' | 'rsa-sha512';
export type DigestAlgorithmName = 'sha1' | 'sha256' | 'sha512';

export interface SignTicketOptions {
  /** SignatureMethod; rsa-sha256 by default. */
  readonly signatureAlgorithm?: SignatureAlgorithmName;
  /** DigestMethod of the reference; sha256 by default. */
  readonly digestAlgorithm?: DigestAlgorithmName;
  /** CanonicalizationMethod and the reference's c14n transform; exclusive by default. */
  readonly canonicalization?: 'exclusive' | 'inclusive';
  /** Whether the Signature carries KeyInfo/X509Data with the signing certificate; true by default. */
  readonly keyInfo?: boolean;
  /**
   * The Reference's URI; "" (the whole document) by default. "#x" signs only the <slice> whose
   * id attribute is x (what a node must refuse).
   */
  readonly referenceUri?: string;
}

const SIGNATURE_METHODS: Record<SignatureAlgorithmName, string> = {
  'rsa-sha1': 'http://www.w3.org/2000/09/xmldsig#rsa-sha1',
  'rsa-sha256': 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  'rsa-sha512': 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha512',
};

const DIGEST_METHODS: Record<DigestAlgorithmName, string> = {
  sha1: 'http://www.w3.org/2000/09/xmldsig#sha1',
  sha256: 'http://www.w3.org/2001/04/xmlenc#sha256',
  sha512: 'http://www.w3.org/2001/04/xmlenc#sha512',
};

const C14N_METHODS = {
  exclusive: 'http://www.w3.org/2001/10/xml-exc-c14n#',
  inclusive: 'http://www.w3.org/TR/2001/REC-xml-c14n-20010315',
} as const;

/** The empty Signature that xmlsec1 fills in: enveloped, over the whole document. */
export function signatureSkeleton(options: SignTicketOptions = {}): string {
  const c14n = C14N_METHODS[options.canonicalization ?? 'exclusive'];
  const keyInfo = (options.keyInfo ?? true) ? '<KeyInfo><X509Data/></KeyInfo>' : '';
  return `<Signature xmlns="http://www.w3.org/2000/09/xmldsig#">
<SignedInfo>
<CanonicalizationMethod Algorithm="${c14n}"/>
<SignatureMethod Algorithm="${SIGNATURE_METHODS[options.signatureAlgorithm ?? 'rsa-sha256']}"/>
<Reference URI="${options.referenceUri ?? ''}">
<Transforms>
<Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
<Transform Algorithm="${c14n}"/>
</Transforms>
<DigestMethod Algorithm="${DIGEST_METHODS[options.digestAlgorithm ?? 'sha256']}"/>
<DigestValue></DigestValue>
</Reference>
</SignedInfo>
<SignatureValue></SignatureValue>
${keyInfo}</Signature>
`;
}

/**
 * Signs a slices document the way the authority does: the Signature skeleton goes in as the last
 * child of <slices> and `xmlsec1 --sign` fills in digest, signature and (by default) the
 * certificate. Returns the signed document.
 */
export async function signTicket(xml: string, keyPath: string, certPath: string, options: SignTicketOptions = {}): Promise<string> {
  const end = xml.lastIndexOf('</slices>');
  if (end < 0) throw new Error('signTicket: the document has no </slices>');
  const template = `${xml.slice(0, end)}${signatureSkeleton(options)}${xml.slice(end)}`;
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-sign-'));
  try {
    const templatePath = join(dir, 'template.xml');
    const outputPath = join(dir, 'signed.xml');
    await writeFile(templatePath, template);
    const ids = options.referenceUri?.startsWith('#') ? ['--id-attr:id', 'slice'] : [];
    await run('xmlsec1', ['--sign', ...ids, '--privkey-pem', `${keyPath},${certPath}`, '--output', outputPath, templatePath]);
    return await readFile(outputPath, 'utf8');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Base64 of the RSA (PKCS#1 v1.5, SHA-256) signature over `document`, made by openssl. */
export async function signDetached(document: Buffer, keyPath: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-sign-'));
  try {
    const documentPath = join(dir, 'slices.xml');
    const signaturePath = join(dir, 'signature.bin');
    await writeFile(documentPath, document);
    await run('openssl', ['dgst', '-sha256', '-sign', keyPath, '-out', signaturePath, documentPath]);
    return (await readFile(signaturePath)).toString('base64');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
