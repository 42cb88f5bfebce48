// The TLS listener's files are checked at start: each problem names the key and the file.
import test from 'ava';
import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadTlsCredentials, TlsFileError } from '../../src/api/tls-credentials.js';
import { issue, makeCa, type KeyPair } from '../support/tls-keys.js';

let dir = '';
let ca: KeyPair;
let server: KeyPair;
let other: KeyPair;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nodemgr-tls-files-'));
  ca = await makeCa(dir);
  server = await issue(ca, dir, 'node', '/O=nodemgr tests/CN=node 1', 'server');
  other = await issue(ca, dir, 'other', '/O=nodemgr tests/CN=another node', 'server');
});

test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const files = (over: Partial<{ cert: string; key: string; ca: string }> = {}) =>
  ({ cert: server.certPath, key: server.keyPath, ca: ca.certPath, ...over });

async function problem(over: Partial<{ cert: string; key: string; ca: string }>): Promise<string> {
  const error = await loadTlsCredentials(files(over)).then(() => null, (e: unknown) => e);
  if (!(error instanceof TlsFileError)) throw new Error(`expected a TlsFileError, got ${String(error)}`);
  return error.message;
}

test('good files are read, with the subjects the log names', async (t) => {
  const credentials = await loadTlsCredentials(files());
  t.is(credentials.cert, await readFile(server.certPath, 'utf8'));
  t.is(credentials.key, await readFile(server.keyPath, 'utf8'));
  t.is(credentials.subject, '/O=nodemgr tests/CN=node 1');
  t.deepEqual(credentials.caSubjects, ['/O=nodemgr tests/CN=Test CA']);
  t.true(credentials.validTo.getTime() > Date.now());
});

test('a CA file may hold several certificates', async (t) => {
  const bundle = join(dir, 'bundle.pem');
  await writeFile(bundle, (await readFile(other.certPath, 'utf8')) + (await readFile(ca.certPath, 'utf8')));
  t.deepEqual((await loadTlsCredentials(files({ ca: bundle }))).caSubjects, ['/O=nodemgr tests/CN=another node', '/O=nodemgr tests/CN=Test CA']);
});

test('a missing or unreadable file is named with its key', async (t) => {
  t.is(await problem({ cert: join(dir, 'none.pem') }), `api_tls_cert ${join(dir, 'none.pem')}: cannot be read: no such file`);
  t.is(await problem({ ca: dir }), `api_tls_ca ${dir}: cannot be read: not a regular file`);
  if (process.getuid?.() !== 0) {
    const closed = join(dir, 'closed.key');
    await copyFile(server.keyPath, closed);
    await chmod(closed, 0o000);
    t.is(await problem({ key: closed }), `api_tls_key ${closed}: cannot be read: permission denied`);
  } else {
    t.log('as root every file is readable: the permission-denied case is not checked');
  }
});

test('a file of the wrong kind, or a broken one, is named with what it lacks', async (t) => {
  t.is(await problem({ cert: server.keyPath }), `api_tls_cert ${server.keyPath}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  t.is(await problem({ key: server.certPath }), `api_tls_key ${server.certPath}: holds no PEM private key (-----BEGIN PRIVATE KEY-----)`);
  const broken = join(dir, 'broken.pem');
  await writeFile(broken, '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n');
  t.regex(await problem({ ca: broken }), new RegExp(`^api_tls_ca ${broken}: certificate 1 of the file is not a valid certificate \\(`));
});

test('a key that is not the certificate\'s, or is encrypted, is refused', async (t) => {
  t.is(await problem({ key: other.keyPath }), `api_tls_key ${other.keyPath}: not the private key of the certificate api_tls_cert ${server.certPath}`);
  const encrypted = join(dir, 'encrypted.key');
  await promisify(execFile)('openssl', ['pkey', '-in', server.keyPath, '-aes256', '-passout', 'pass:secret', '-out', encrypted]);
  t.regex(await problem({ key: encrypted }), /^api_tls_key .*encrypted.key: the key is encrypted; .* without a passphrase$/);
});

test('an expired certificate is refused, with the date', async (t) => {
  const later = new Date(Date.now() + 30 * 86_400_000);
  const error = await t.throwsAsync(loadTlsCredentials(files(), later), { instanceOf: TlsFileError });
  t.regex(error?.message ?? '', new RegExp(`^api_tls_cert ${server.certPath}: the certificate expired on \\d{4}-`));
});
