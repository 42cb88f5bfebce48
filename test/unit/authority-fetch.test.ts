import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { DocumentTooLargeError, fetchDocument, FetchError, parseAuthorityUrl, redactUrl, type FetchRequest } from '../../src/authority/fetch.js';
import { loadLastGood, saveLastGood } from '../../src/authority/last-good.js';

const run = promisify(execFile);
// Whether the openssl command is here to make test certificates (the https test): looked for once,
// before any test is declared (ava takes no declaration after a top-level await).
const haveOpenssl = await run('openssl', ['version']).then(
  () => true,
  (error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? false : Promise.reject(error)),
);

const LAST_MODIFIED = 'Tue, 14 Nov 2023 22:13:20 GMT';
const DOCUMENT = '<slices><slice id="1" name="princeton_sirius"/></slices>\n';

// ---------------------------------------------------------------------------------------------
// A loopback authority

interface Seen {
  path: string;
  headers: IncomingMessage['headers'];
}

const seen: Seen[] = [];
let endlessClosed: Promise<void> = Promise.resolve();

function route(req: IncomingMessage, res: ServerResponse, base: string): void {
  const path = req.url ?? '/';
  seen.push({ path, headers: req.headers });
  if (path === '/etag') {
    if (req.headers['if-none-match'] === '"v1"') return void res.writeHead(304).end();
    return void res.writeHead(200, { etag: '"v1"', 'content-type': 'text/xml' }).end(DOCUMENT);
  }
  if (path === '/lastmod') {
    if (req.headers['if-modified-since'] === LAST_MODIFIED) return void res.writeHead(304).end();
    return void res.writeHead(200, { 'last-modified': LAST_MODIFIED }).end(DOCUMENT);
  }
  if (path === '/fail') return void res.writeHead(500).end('boom');
  if (path === '/always-304') return void res.writeHead(304).end();
  if (path === '/slow-head') return; // never answers
  if (path === '/slow-body') {
    res.writeHead(200, { 'content-length': '1000' });
    res.write('<slices>');
    return; // never finishes
  }
  if (path === '/big') return void res.writeHead(200).end('x'.repeat(2048));
  if (path === '/endless') {
    // Chunked, without a length, and never ending: only the size limit can stop it.
    res.writeHead(200, { 'content-type': 'text/xml' });
    endlessClosed = new Promise((resolve) => res.on('close', resolve));
    const chunk = Buffer.alloc(16 * 1024, 'x');
    const pump = () => {
      if (res.destroyed) return;
      res.write(chunk, () => setImmediate(pump));
    };
    pump();
    return;
  }
  if (path === '/gzip') {
    return void res.writeHead(200, { 'content-encoding': 'gzip', etag: '"z"' }).end(gzipSync(DOCUMENT));
  }
  if (path === '/gzip-bomb') {
    return void res.writeHead(200, { 'content-encoding': 'gzip' }).end(gzipSync(Buffer.alloc(4 * 1024 * 1024)));
  }
  if (path === '/bad-gzip') return void res.writeHead(200, { 'content-encoding': 'gzip' }).end('not gzip at all');
  if (path === '/brotli') return void res.writeHead(200, { 'content-encoding': 'br' }).end('??');
  if (path === '/redirect') return void res.writeHead(302, { location: '/etag' }).end();
  if (path === '/redirect-absolute') return void res.writeHead(301, { location: `${base}/lastmod` }).end();
  if (path.startsWith('/loop/')) {
    const n = Number(path.slice('/loop/'.length));
    return void res.writeHead(307, { location: `/loop/${n + 1}` }).end();
  }
  if (path === '/to-ftp') return void res.writeHead(302, { location: 'ftp://127.0.0.1/slices.xml' }).end();
  if (path === '/headers') return void res.writeHead(200).end(JSON.stringify(req.headers));
  res.writeHead(404).end();
}

function listen(server: Server | ReturnType<typeof createHttpsServer>): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

function close(server: Server | ReturnType<typeof createHttpsServer>): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

let server: Server;
let base = '';

test.before(async () => {
  server = createServer((req, res) => route(req, res, base));
  base = `http://127.0.0.1:${await listen(server)}`;
});

test.after.always(async () => {
  await close(server);
});

function request(url: string, more: Partial<FetchRequest> = {}): FetchRequest {
  return { url, caFile: null, timeoutMs: 5000, maxBytes: 1024 * 1024, etag: null, lastModified: null, ...more };
}

async function fetchError(t: { fail(message?: string): void }, req: FetchRequest): Promise<string> {
  try {
    const result = await fetchDocument(req);
    t.fail(`expected a FetchError, got ${result.kind}`);
    return '';
  } catch (error) {
    if (!(error instanceof FetchError)) throw error;
    return error.message;
  }
}

// ---------------------------------------------------------------------------------------------
// http:

test('200 gives the document and its ETag; the ETag sent back gives not-modified', async (t) => {
  const first = await fetchDocument(request(`${base}/etag`));
  if (first.kind !== 'document') return t.fail('expected a document');
  t.is(first.body.toString(), DOCUMENT);
  t.is(first.etag, '"v1"');
  t.is(first.lastModified, null);

  const second = await fetchDocument(request(`${base}/etag`, { etag: first.etag }));
  t.deepEqual(second, { kind: 'not-modified' });
  t.is(seen.filter((s) => s.path === '/etag' && s.headers['if-none-match'] === '"v1"').length >= 1, true);
});

test('Last-Modified is returned and sent back as If-Modified-Since', async (t) => {
  const first = await fetchDocument(request(`${base}/lastmod`));
  if (first.kind !== 'document') return t.fail('expected a document');
  t.is(first.lastModified, LAST_MODIFIED);
  t.is(first.etag, null);
  t.deepEqual(await fetchDocument(request(`${base}/lastmod`, { lastModified: LAST_MODIFIED })), { kind: 'not-modified' });
});

test('a request names the daemon and accepts gzip; no validators are sent when none are known', async (t) => {
  const result = await fetchDocument(request(`${base}/headers`));
  if (result.kind !== 'document') return t.fail('expected a document');
  const headers = JSON.parse(result.body.toString()) as Record<string, string>;
  t.is(headers['user-agent'], 'nodemgr');
  t.is(headers['accept-encoding'], 'gzip');
  t.is(headers['if-none-match'], undefined);
  t.is(headers['if-modified-since'], undefined);

  const custom = await fetchDocument(request(`${base}/headers`, { userAgent: 'nodemgr/9 node=42' }));
  if (custom.kind !== 'document') return t.fail('expected a document');
  t.is((JSON.parse(custom.body.toString()) as Record<string, string>)['user-agent'], 'nodemgr/9 node=42');
});

test('an error status is a FetchError naming the URL and the status', async (t) => {
  t.is(await fetchError(t, request(`${base}/fail`)), `GET ${base}/fail: HTTP 500 Internal Server Error`);
  t.is(await fetchError(t, request(`${base}/nowhere`)), `GET ${base}/nowhere: HTTP 404 Not Found`);
});

test('304 to a request without validators is an error, not "not modified"', async (t) => {
  t.regex(await fetchError(t, request(`${base}/always-304`)), /HTTP 304 .*no validators/);
});

test('a server that does not answer, or stops mid-body, times out', async (t) => {
  t.is(await fetchError(t, request(`${base}/slow-head`, { timeoutMs: 200 })), `GET ${base}/slow-head: timed out after 0.2 s`);
  t.is(await fetchError(t, request(`${base}/slow-body`, { timeoutMs: 200 })), `GET ${base}/slow-body: timed out after 0.2 s`);
});

test('a document larger than maxBytes is refused, also when it is streamed without end', async (t) => {
  t.is(await fetchError(t, request(`${base}/big`, { maxBytes: 1024 })), `GET ${base}/big: document larger than 1024 bytes`);
  t.is(await fetchDocument(request(`${base}/big`, { maxBytes: 2048 })).then((r) => r.kind), 'document');

  t.is(
    await fetchError(t, request(`${base}/endless`, { maxBytes: 256 * 1024, timeoutMs: 30_000 })),
    `GET ${base}/endless: document larger than 262144 bytes`,
  );
  // The connection is dropped rather than drained: the server sees its stream closed.
  await endlessClosed;
  // The authority answered: a document refused for its size, not an authority out of reach.
  await t.throwsAsync(fetchDocument(request(`${base}/big`, { maxBytes: 1024 })), { instanceOf: DocumentTooLargeError });
});

test('a connection refused is a FetchError', async (t) => {
  const spare = createServer();
  const port = await listen(spare);
  await close(spare);
  t.is(await fetchError(t, request(`http://127.0.0.1:${port}/slices.xml`)), `GET http://127.0.0.1:${port}/slices.xml: connection refused`);
});

test('redirects are followed, relative and absolute, with the validators of the final URL', async (t) => {
  const relative = await fetchDocument(request(`${base}/redirect`));
  if (relative.kind !== 'document') return t.fail('expected a document');
  t.is(relative.body.toString(), DOCUMENT);
  t.is(relative.etag, '"v1"');
  t.deepEqual(await fetchDocument(request(`${base}/redirect`, { etag: '"v1"' })), { kind: 'not-modified' });

  const absolute = await fetchDocument(request(`${base}/redirect-absolute`));
  t.is(absolute.kind === 'document' ? absolute.lastModified : null, LAST_MODIFIED);
});

test('more than 5 redirects, or one to another scheme, is refused', async (t) => {
  const loop = await fetchError(t, request(`${base}/loop/0`));
  t.is(loop, `GET ${base}/loop/5 (redirected from ${base}/loop/0): too many redirects (more than 5)`);
  t.regex(await fetchError(t, request(`${base}/to-ftp`)), /^GET .*\/to-ftp: redirect to ftp:\/\/127\.0\.0\.1\/slices\.xml refused/);
});

test('a gzip body is decoded; the limit applies to the decoded size; a corrupt one is an error', async (t) => {
  const result = await fetchDocument(request(`${base}/gzip`));
  if (result.kind !== 'document') return t.fail('expected a document');
  t.is(result.body.toString(), DOCUMENT);
  t.is(result.etag, '"z"');

  t.is(await fetchError(t, request(`${base}/gzip-bomb`, { maxBytes: 64 * 1024 })), `GET ${base}/gzip-bomb: document larger than 65536 bytes`);
  t.regex(await fetchError(t, request(`${base}/bad-gzip`)), /: corrupt gzip body/);
  t.regex(await fetchError(t, request(`${base}/brotli`)), /: unsupported Content-Encoding "br"/);
});

test('credentials in the URL are sent as basic authentication and never appear in an error', async (t) => {
  const withCredentials = base.replace('http://', 'http://plc:s3cret@');
  const result = await fetchDocument(request(`${withCredentials}/headers`));
  if (result.kind !== 'document') return t.fail('expected a document');
  const headers = JSON.parse(result.body.toString()) as Record<string, string>;
  t.is(headers['authorization'], `Basic ${Buffer.from('plc:s3cret').toString('base64')}`);

  const message = await fetchError(t, request(`${withCredentials}/fail`));
  t.is(message, `GET ${base}/fail: HTTP 500 Internal Server Error`);
  t.false(message.includes('s3cret'));
});

// ---------------------------------------------------------------------------------------------
// https: with a throwaway CA

interface Pki {
  dir: string;
  caPem: string;
  otherCaPem: string;
  serverKey: string;
  serverCert: string;
}

async function makePki(): Promise<Pki | null> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-pki-'));
  const openssl = (...args: string[]) => run('openssl', args, { cwd: dir });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string) =>
    openssl('req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2',
      '-subj', `/CN=nodemgr test ${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  try {
    await ca('ca');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      await rm(dir, { recursive: true, force: true });
      return null;
    }
    throw error;
  }
  await ca('other-ca');
  await openssl('req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  await openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', '2', '-days', '2',
    '-extfile', 'server.ext', '-out', 'server.pem');
  const read = (name: string) => readFile(join(dir, name), 'utf8');
  return { dir, caPem: await read('ca.pem'), otherCaPem: await read('other-ca.pem'), serverKey: await read('server.key'), serverCert: await read('server.pem') };
}

const httpsTitle = 'https: trusted with the configured CA file, refused without it, and a rotated CA file applies at once';
(haveOpenssl ? test : test.skip)(haveOpenssl ? httpsTitle : `${httpsTitle} (skipped: the openssl command is not installed, so no test certificates can be made)`, async (t) => {
  const pki = await makePki();
  if (pki === null) throw new Error('openssl went missing: no test certificates were made');
  const secure = createHttpsServer({ key: pki.serverKey, cert: pki.serverCert }, (req, res) => {
    if (req.url === '/downgrade') return void res.writeHead(302, { location: `${base}/etag` }).end();
    res.writeHead(200, { etag: '"tls"' }).end(DOCUMENT);
  });
  const url = `https://127.0.0.1:${await listen(secure)}/slices.xml`;
  const caFile = join(pki.dir, 'authority-ca.pem');
  try {
    await writeFile(caFile, pki.caPem);
    const trusted = await fetchDocument(request(url, { caFile }));
    if (trusted.kind !== 'document') return t.fail('expected a document');
    t.is(trusted.body.toString(), DOCUMENT);
    t.is(trusted.etag, '"tls"');

    t.is(await fetchError(t, request(url)), `GET ${url}: certificate verification failed (UNABLE_TO_VERIFY_LEAF_SIGNATURE)`);

    await writeFile(caFile, pki.otherCaPem);
    t.regex(await fetchError(t, request(url, { caFile })), /^GET https:\/\/127\.0\.0\.1:\d+\/slices\.xml: certificate verification failed \(/);
    await writeFile(caFile, pki.caPem);
    t.is((await fetchDocument(request(url, { caFile }))).kind, 'document');

    t.regex(await fetchError(t, request(url, { caFile: join(pki.dir, 'absent.pem') })), /: cannot read the CA file .*absent\.pem: no such file$/);
    await writeFile(join(pki.dir, 'empty.pem'), 'not a certificate\n');
    t.regex(await fetchError(t, request(url, { caFile: join(pki.dir, 'empty.pem') })), /holds no PEM certificate/);

    const downgrade = url.replace('/slices.xml', '/downgrade');
    t.regex(await fetchError(t, request(downgrade, { caFile })), /: redirect to http:\/\/127\.0\.0\.1:\d+\/etag refused: it would leave https$/);
  } finally {
    await close(secure);
    await rm(pki.dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// file:

async function scratch(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'nodemgr-fetch-'));
}

test('file: absolute and relative URLs read the file; an unchanged file is not modified', async (t) => {
  const dir = await scratch();
  try {
    const path = join(dir, 'slices.xml');
    await writeFile(path, DOCUMENT);
    const relative = parseAuthorityUrl('file:slices.xml', dir);
    t.is(relative.href, `file://${path}`);

    const first = await fetchDocument(request(relative.href));
    if (first.kind !== 'document') return t.fail('expected a document');
    t.is(first.body.toString(), DOCUMENT);
    const st = await stat(path);
    t.is(first.etag, `${st.size}-${st.mtimeMs}`);
    t.is(first.lastModified, st.mtime.toUTCString());

    t.deepEqual(await fetchDocument(request(`file:${path}`, { etag: first.etag })), { kind: 'not-modified' });

    // Same size, new contents and time: read again.
    await writeFile(path, DOCUMENT.replace('sirius', 'arctur'));
    await utimes(path, st.atime, new Date(st.mtimeMs + 5000));
    const changed = await fetchDocument(request(`file://${path}`, { etag: first.etag }));
    if (changed.kind !== 'document') return t.fail('expected a document after a change');
    t.not(changed.etag, first.etag);
    t.regex(changed.body.toString(), /princeton_arctur/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('file: a missing file, a directory and an oversize file are FetchErrors naming the file', async (t) => {
  const dir = await scratch();
  try {
    const missing = join(dir, 'missing.xml');
    t.is(await fetchError(t, request(`file:${missing}`)), `file:${missing}: no such file`);
    await writeFile(join(dir, 'big.xml'), 'x'.repeat(2000));
    t.is(await fetchError(t, request(`file:${dir}/big.xml`, { maxBytes: 1000 })), `file:${dir}/big.xml: document larger than 1000 bytes`);
    t.is(await fetchError(t, request(`file:${dir}`)), `file:${dir}: not a regular file`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// URLs

test('parseAuthorityUrl accepts http, https (credentials kept but redacted) and file URLs', (t) => {
  t.is(parseAuthorityUrl('http://plc.example/slices.xml', '/etc/nodemgr').href, 'http://plc.example/slices.xml');
  const secret = parseAuthorityUrl('  https://plc:s3cret@plc.example:8443/xml/slices.xml?node=42  ', '/etc/nodemgr');
  t.is(secret.password, 's3cret');
  t.is(redactUrl(secret), 'https://plc.example:8443/xml/slices.xml?node=42');
  t.is(redactUrl(secret.href), 'https://plc.example:8443/xml/slices.xml?node=42');
  t.is(parseAuthorityUrl('file:/etc/nodemgr/slices.xml', '/anywhere').href, 'file:///etc/nodemgr/slices.xml');
  t.is(parseAuthorityUrl('file:///etc/nodemgr/slices.xml', '/anywhere').href, 'file:///etc/nodemgr/slices.xml');
  t.is(parseAuthorityUrl('file:slices.xml', '/etc/nodemgr').href, 'file:///etc/nodemgr/slices.xml');
  t.is(parseAuthorityUrl('file:../plc/slices.xml', '/etc/nodemgr/').href, 'file:///etc/plc/slices.xml');
  t.is(redactUrl(parseAuthorityUrl('file:slices.xml', '/etc/nodemgr')), 'file:/etc/nodemgr/slices.xml');
});

test('parseAuthorityUrl refuses other schemes and malformed values, naming the value and why', (t) => {
  const refused = (text: string) => t.throws(() => parseAuthorityUrl(text, '/etc/nodemgr'))?.message ?? '';
  t.regex(refused('ftp://plc.example/slices.xml'), /^authority URL "ftp:\/\/plc\.example\/slices\.xml": scheme "ftp:" is not supported/);
  t.regex(refused('plc.example/slices.xml'), /"plc\.example\/slices\.xml": not a URL/);
  t.regex(refused('garbage'), /"garbage": not a URL/);
  t.regex(refused(''), /authority URL is empty/);
  t.regex(refused('http://'), /"http:\/\/": not a valid URL/);
  t.regex(refused('file://otherhost/slices.xml'), /not one on host "otherhost"/);
  t.regex(refused('file:/etc/nodemgr/'), /names a directory/);
  t.regex(refused('file:/etc/slices.xml?x=1'), /no query or fragment/);
  for (const text of ['ftp://plc:s3cret@plc.example/slices.xml', 'plc:s3cret@plc.example/slices.xml', 'file://plc:s3cret@/x']) {
    const message = refused(text);
    t.false(message.includes('s3cret'), message);
  }
});

test('fetchDocument turns an unusable URL into a FetchError', async (t) => {
  t.regex(await fetchError(t, request('ftp://plc.example/slices.xml')), /scheme "ftp:" is not supported/);
});

// ---------------------------------------------------------------------------------------------
// The last good document

test('the last good document survives a round trip, replaces the previous one, and is private', async (t) => {
  const dir = join(await scratch(), 'authority');
  try {
    t.is(await loadLastGood(dir), null);
    await saveLastGood(dir, { body: Buffer.from('first'), etag: '"1"', lastModified: null, url: 'https://plc.example/slices.xml', timestamp: 1 });
    await saveLastGood(dir, { body: Buffer.from(DOCUMENT), etag: '"2"', lastModified: LAST_MODIFIED, url: 'https://plc.example/slices.xml', timestamp: 2 });
    const loaded = await loadLastGood(dir);
    if (loaded === null) return t.fail('expected the saved document');
    t.is(loaded.body.toString(), DOCUMENT);
    t.is(loaded.etag, '"2"');
    t.is(loaded.lastModified, LAST_MODIFIED);
    t.is(loaded.url, 'https://plc.example/slices.xml');
    t.is(loaded.timestamp, 2);
    t.false(Number.isNaN(Date.parse(loaded.savedAt)));

    const files = await readdir(dir);
    t.is(files.length, 2, `one body and one meta, no leftovers: ${files.join(' ')}`);
    for (const name of files) t.is((await stat(join(dir, name))).mode & 0o777, 0o600);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a corrupted body or meta makes the last good document absent, and says why', async (t) => {
  const dir = await scratch();
  try {
    await saveLastGood(dir, { body: Buffer.from(DOCUMENT), etag: null, lastModified: null, url: 'file:/etc/nodemgr/slices.xml', timestamp: 7 });
    const body = (await readdir(dir)).find((name) => name.startsWith('body-'));
    if (body === undefined) return t.fail('no body file');
    await writeFile(join(dir, body), DOCUMENT.replace('princeton', 'harvard__'));
    const reasons: string[] = [];
    t.is(await loadLastGood(dir, (r) => reasons.push(r)), null);
    t.regex(reasons[0] ?? '', /does not match its checksum/);

    await writeFile(join(dir, 'last-good.json'), '{"version": 1, "bodyFi');
    t.is(await loadLastGood(dir, (r) => reasons.push(r)), null);
    t.regex(reasons[1] ?? '', /last-good\.json: not JSON/);

    await writeFile(join(dir, 'last-good.json'), JSON.stringify({ version: 1, bodyFile: '../../etc/passwd' }));
    t.is(await loadLastGood(dir, (r) => reasons.push(r)), null);
    t.regex(reasons[2] ?? '', /bodyFile missing or invalid/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
