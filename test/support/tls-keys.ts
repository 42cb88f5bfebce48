// Throwaway X.509 for the TLS listener's tests, made by openssl: a CA, a server certificate for
// 127.0.0.1, client certificates with the subjects a test asks for, and what openssl itself prints
// as a certificate's subject (the form the allowed-users file lists). EC P-256 keys: quick to make.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface KeyPair {
  readonly keyPath: string;
  readonly certPath: string;
}

const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/**
 * A self-signed certificate with subject `subject` (openssl's -subj syntax: "/O=x/OU=a+CN=b");
 * `reqConfig` replaces openssl's configuration file (a string mask, OIDs of its own).
 */
export async function selfSigned(dir: string, name: string, subject: string, reqConfig?: string): Promise<KeyPair> {
  const pair = { keyPath: join(dir, `${name}.key`), certPath: join(dir, `${name}.pem`) };
  const config = reqConfig === undefined ? [] : ['-config', join(dir, `${name}.cnf`)];
  if (reqConfig !== undefined) await writeFile(join(dir, `${name}.cnf`), reqConfig);
  await run('openssl', ['req', ...config, '-x509', ...NEW_KEY, '-days', '2', '-utf8', '-subj', subject, '-keyout', pair.keyPath, '-out', pair.certPath]);
  return pair;
}

/** A CA that signs the server's and the clients' certificates. */
export function makeCa(dir: string, name = 'ca', subject = '/O=nodemgr tests/CN=Test CA'): Promise<KeyPair> {
  return selfSigned(dir, name, subject);
}

/** A certificate signed by `ca`: for a client (clientAuth) or for the server at 127.0.0.1. */
export async function issue(ca: KeyPair, dir: string, name: string, subject: string, use: 'client' | 'server' = 'client'): Promise<KeyPair> {
  const pair = { keyPath: join(dir, `${name}.key`), certPath: join(dir, `${name}.pem`) };
  const csr = join(dir, `${name}.csr`);
  const extensions = join(dir, `${name}.ext`);
  await writeFile(extensions, [
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature',
    use === 'client' ? 'extendedKeyUsage = clientAuth' : 'extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1',
  ].join('\n') + '\n');
  await run('openssl', ['req', '-new', ...NEW_KEY, '-utf8', '-subj', subject, '-keyout', pair.keyPath, '-out', csr]);
  await run('openssl', [
    'x509', '-req', '-in', csr, '-CA', ca.certPath, '-CAkey', ca.keyPath, '-set_serial', String(Date.now()),
    '-days', '2', '-extfile', extensions, '-out', pair.certPath,
  ]);
  return pair;
}

/** What `openssl x509 -noout -subject -nameopt compat` prints, without "subject=" and the newline. */
export async function opensslSubject(certPath: string): Promise<string> {
  const { stdout } = await run('openssl', ['x509', '-noout', '-subject', '-nameopt', 'compat', '-in', certPath]);
  const line = stdout.replace(/\n$/, '');
  if (!line.startsWith('subject=')) throw new Error(`openssl printed ${JSON.stringify(stdout)} for the subject of ${certPath}`);
  return line.slice('subject='.length);
}
