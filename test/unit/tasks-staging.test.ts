// A task's files on the host side: fetched into the spool (tasks/fetch.ts) with their hash checked
// and their compression undone, and outputs sent to their targets (tasks/send.ts), against real
// servers on loopback and real files.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { memoryLogger } from '../../src/log.js';
import { fetchLocation, FetchError, type FetchDeps } from '../../src/tasks/fetch.js';
import { sendFile } from '../../src/tasks/send.js';
import type { Location } from '../../src/tasks/xsdl-types.js';

const CONTENT = Buffer.from('the input of a job\n'.repeat(1000));
const hex = (algorithm: string, data: Buffer) => createHash(algorithm).update(data).digest('hex');

interface Served {
  server: Server;
  base: string;
  /** What PUTs delivered, by path. */
  received: Map<string, Buffer>;
}

async function serve(files: Record<string, Buffer>): Promise<Served> {
  const received = new Map<string, Buffer>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'PUT') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url === '/forbidden') return res.writeHead(403).end();
        if (req.headers['if-none-match'] === '*' && received.has(req.url!)) return res.writeHead(412).end();
        received.set(req.url!, Buffer.concat(chunks));
        res.writeHead(201).end();
      });
      return;
    }
    const body = files[req.url!];
    if (body === undefined) return res.writeHead(404).end();
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received };
}

function location(href: string, extra: Partial<Location> = {}): Location {
  return { uri: { kind: 'url', href }, hash: null, compression: null, mode: null, ...extra };
}

async function workspace(t: { teardown(fn: () => Promise<void>): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-staging-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function deps(extra: Partial<FetchDeps> = {}): FetchDeps {
  return {
    cachedFile: () => null, maxBytes: 1024 * 1024 * 1024, retries: 0, timeoutMs: 5_000,
    signal: new AbortController().signal, logger: memoryLogger(), ...extra,
  };
}

const bzip2 = (data: Buffer) => execFileSync('bzip2', ['-c'], { input: data });

let files: Served;
test.before(async () => {
  files = await serve({
    '/plain': CONTENT,
    '/packed.gz': gzipSync(CONTENT),
    '/packed.bz2': bzip2(CONTENT),
    '/not-gzip.gz': Buffer.from('plain text, no gzip'),
  });
});
test.after.always(() => new Promise<void>((resolve) => {
  files.server.closeAllConnections();
  files.server.close(() => resolve());
}));

test('a file is fetched over http with its sha1 checked, and given its mode', async (t) => {
  const dir = await workspace(t);
  const dest = join(dir, 'input');
  const got = await fetchLocation(location(`${files.base}/plain`, { hash: { algorithm: 'sha1', hex: hex('sha1', CONTENT) }, mode: 0o755 }), dest, deps());
  t.is(got.bytes, CONTENT.length);
  t.deepEqual(await readFile(dest), CONTENT);
  t.is((await stat(dest)).mode & 0o777, 0o755);
});

for (const [name, algorithm] of [['packed.gz', 'gzip'], ['packed.bz2', 'bzip2']] as const) {
  test(`a ${algorithm} file is checked as fetched, then unpacked`, async (t) => {
    const dir = await workspace(t);
    const packed = algorithm === 'gzip' ? gzipSync(CONTENT) : bzip2(CONTENT);
    const dest = join(dir, 'input');
    await fetchLocation(location(`${files.base}/${name}`, { compression: algorithm, hash: { algorithm: 'md5', hex: hex('md5', packed) } }), dest, deps());
    t.deepEqual(await readFile(dest), CONTENT);
  });
}

test('a wrong checksum is refused with both digests, and nothing is left', async (t) => {
  const dir = await workspace(t);
  const dest = join(dir, 'input');
  const error = await t.throwsAsync(fetchLocation(location(`${files.base}/plain`, { hash: { algorithm: 'sha256', hex: '0'.repeat(64) } }), dest, deps()), { instanceOf: FetchError });
  t.is(error?.message, `${files.base}/plain: checksum mismatch: expected sha256 ${'0'.repeat(64)}, got ${hex('sha256', CONTENT)}`);
  t.deepEqual(await import('node:fs/promises').then((fs) => fs.readdir(dir)), []);
});

test('data that is not what its compression says is refused with the reason', async (t) => {
  const dir = await workspace(t);
  const error = await t.throwsAsync(fetchLocation(location(`${files.base}/not-gzip.gz`, { compression: 'gzip' }), join(dir, 'x'), deps()));
  t.regex(error?.message ?? '', /not-gzip\.gz: not gzip data, or damaged: /);
});

test('a missing file says so, as does a missing cache entry; a cache entry is copied', async (t) => {
  const dir = await workspace(t);
  const missing = await t.throwsAsync(fetchLocation(location(`${files.base}/nothing`), join(dir, 'a'), deps()));
  t.is(missing?.message, `file ${files.base}/nothing: HTTP 404 Not Found`);
  const cached = join(dir, 'cached-entry');
  await writeFile(cached, CONTENT);
  const fromCache = { cachedFile: (name: string) => (name === 'dataset' ? cached : null) };
  const noEntry = await t.throwsAsync(fetchLocation({ ...location(''), uri: { kind: 'cache', name: 'other' } }, join(dir, 'b'), deps(fromCache)));
  t.is(noEntry?.message, 'cache:other: no entry of that name in the image cache');
  await fetchLocation({ ...location(''), uri: { kind: 'cache', name: 'dataset' } }, join(dir, 'c'), deps(fromCache));
  t.deepEqual(await readFile(join(dir, 'c')), CONTENT);
});

test('a fetch larger than the bound is refused, naming the setting', async (t) => {
  const dir = await workspace(t);
  const error = await t.throwsAsync(fetchLocation(location(`${files.base}/plain`), join(dir, 'x'), deps({ maxBytes: 100 })));
  t.regex(error?.message ?? '', /the most a task may stage in \(task_stage_max_bytes\)/);
});

const SEND = { signal: new AbortController().signal, timeoutMs: 5_000 };

test('an output goes to a file: target as its CreationFlag says', async (t) => {
  const dir = await workspace(t);
  const output = join(dir, 'output');
  await writeFile(output, 'result\n');
  const target = join(dir, 'target');
  await sendFile(output, location(pathToFileURL(target).href), 'overwrite', SEND);
  await sendFile(output, location(pathToFileURL(target).href), 'append', SEND);
  t.is(await readFile(target, 'utf8'), 'result\nresult\n');
  const refused = await t.throwsAsync(sendFile(output, location(pathToFileURL(target).href), 'dontOverwrite', SEND));
  t.is(refused?.message, `${pathToFileURL(target).href}: the file exists and the CreationFlag is dontOverwrite`);
  await sendFile(output, location(pathToFileURL(target).href, { compression: 'gzip' }), 'overwrite', SEND);
  t.is((await import('node:zlib')).gunzipSync(await readFile(target)).toString(), 'result\n');
});

test('an output goes to an http target with PUT; a refusal gives the status', async (t) => {
  const dir = await workspace(t);
  const output = join(dir, 'output');
  await writeFile(output, CONTENT);
  await sendFile(output, location(`${files.base}/results/out.txt`), 'overwrite', SEND);
  t.deepEqual(files.received.get('/results/out.txt'), CONTENT);
  const again = await t.throwsAsync(sendFile(output, location(`${files.base}/results/out.txt`), 'dontOverwrite', SEND));
  t.is(again?.message, `${files.base}/results/out.txt: HTTP 412 Precondition Failed`);
  const forbidden = await t.throwsAsync(sendFile(output, location(`${files.base}/forbidden`), 'overwrite', SEND));
  t.is(forbidden?.message, `${files.base}/forbidden: HTTP 403 Forbidden`);
  const append = await t.throwsAsync(sendFile(output, location(`${files.base}/x`), 'append', SEND));
  t.is(append?.message, `${files.base}/x: CreationFlag append is possible only for a file: target`);
});

test('a target nobody listens on says so', async (t) => {
  const dir = await workspace(t);
  const output = join(dir, 'output');
  await writeFile(output, 'x');
  const error = await t.throwsAsync(sendFile(output, location('http://127.0.0.1:9/x'), 'overwrite', SEND));
  t.is(error?.message, 'http://127.0.0.1:9/x: connection refused');
});
