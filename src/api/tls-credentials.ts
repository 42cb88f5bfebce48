// The TLS listener's files: the node's certificate, its private key and the CA that signs the
// clients' certificates. They are read and checked once, at start, so that a daemon with a
// missing, unreadable or mismatched file refuses to start with the key and the file named, rather
// than failing every handshake later with OpenSSL's words.
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import { describeFileError } from '../host/file-errors.js';
import { describeError } from '../util/errors.js';
import { certificateSubject } from './certificate-subject.js';

export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

/** The files' PEM text, checked, with what the log says of them. */
export interface TlsCredentials {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  /** The node certificate's subject and end of validity; the CA's subjects. */
  readonly subject: string;
  readonly validTo: Date;
  readonly caSubjects: readonly string[];
}

/** A TLS file that cannot be used; the message names the configuration key and the file. */
export class TlsFileError extends Error {
  override readonly name = 'TlsFileError';
}

const KEYS = { cert: 'api_tls_cert', key: 'api_tls_key', ca: 'api_tls_ca' } as const;

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function fail(which: keyof TlsFiles, files: TlsFiles, problem: string): never {
  throw new TlsFileError(`${KEYS[which]} ${files[which]}: ${problem}`);
}

async function read(which: keyof TlsFiles, files: TlsFiles): Promise<string> {
  try {
    return await readFile(files[which], 'utf8');
  } catch (error) {
    return fail(which, files, `cannot be read: ${describeFileError(error)}`);
  }
}

/** Every PEM certificate of the file, parsed; at least one. */
function certificates(which: 'cert' | 'ca', files: TlsFiles, text: string): X509Certificate[] {
  const blocks = text.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) fail(which, files, 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)');
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      return fail(which, files, `certificate ${i + 1} of the file is not a valid certificate (${describeError(error)})`);
    }
  });
}

function privateKey(files: TlsFiles, text: string): KeyObject {
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) fail('key', files, 'holds no PEM private key (-----BEGIN PRIVATE KEY-----)');
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(text)) {
    fail('key', files, 'the key is encrypted; the daemon reads it unattended, so it must be stored without a passphrase');
  }
  try {
    return createPrivateKey(text);
  } catch (error) {
    return fail('key', files, `not a valid private key (${describeError(error)})`);
  }
}

/** Reads and checks the three files; throws a TlsFileError naming the key and the file. */
export async function loadTlsCredentials(files: TlsFiles, now = new Date()): Promise<TlsCredentials> {
  const [certText, keyText, caText] = [await read('cert', files), await read('key', files), await read('ca', files)];
  const [leaf] = certificates('cert', files, certText);
  const authorities = certificates('ca', files, caText);
  const key = privateKey(files, keyText);
  if (!leaf!.checkPrivateKey(key)) fail('key', files, `not the private key of the certificate ${KEYS.cert} ${files.cert}`);
  const validTo = new Date(leaf!.validTo);
  if (validTo.getTime() < now.getTime()) fail('cert', files, `the certificate expired on ${validTo.toISOString()}`);
  try {
    createSecureContext({ cert: certText, key: keyText, ca: caText });
  } catch (error) {
    throw new TlsFileError(`${KEYS.cert} ${files.cert}, ${KEYS.key} ${files.key} and ${KEYS.ca} ${files.ca} cannot be used together: ${describeError(error)}`);
  }
  return {
    cert: certText, key: keyText, ca: caText, subject: certificateSubject(leaf!.raw), validTo,
    caSubjects: authorities.map((c) => certificateSubject(c.raw)),
  };
}
