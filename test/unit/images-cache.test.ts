// The image cache against a real HTTP server on loopback and real files in a temporary directory.
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { openImageCache, type ImageCacheOptions } from '../../src/images/cache.js';
import { ImageError } from '../../src/images/index.js';
import { memoryLogger } from '../../src/log.js';
import { waitFor } from '../support/wait.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

interface Served {
  body: Buffer;
  /** Answers 503 to this many requests first. */
  failFirst?: number;
  /** The first full response stops after this many bytes (the connection is cut). */
  cutAt?: number;
  /** Range requests are ignored (200 with the whole body). */
  noRanges?: boolean;
  /** Sent in chunks with a pause between them, so that concurrent requests overlap. */
  slow?: boolean;
  status?: number;
  /** With a redirect status: where it points. */
  location?: string;
  /** The first full response stops sending after this many bytes, with the connection left open. */
  stallAt?: number;
}

interface Origin {
  base: string;
  serve(path: string, served: Served): void;
  requests(path: string): IncomingMessage['headers'][];
}

async function origin(t: ExecutionContext): Promise<Origin> {
  const routes = new Map<string, Served>();
  const seen = new Map<string, IncomingMessage['headers'][]>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '/';
    const log = seen.get(path) ?? [];
    log.push(req.headers);
    seen.set(path, log);
    const served = routes.get(path);
    if (!served) return void res.writeHead(404).end('not here');
    if (served.status) return void res.writeHead(served.status, served.location === undefined ? {} : { location: served.location }).end();
    if ((served.failFirst ?? 0) > 0) {
      served.failFirst!--;
      return void res.writeHead(503).end('busy');
    }
    const { body } = served;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const headers = { etag: `"${sha(body).slice(0, 16)}"`, 'accept-ranges': 'bytes' };
    if (range && !served.noRanges) {
      const start = Number(range[1]);
      res.writeHead(206, { ...headers, 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
      return void res.end(body.subarray(start));
    }
    res.writeHead(200, { ...headers, 'content-length': body.length });
    if (served.cutAt !== undefined) {
      const cut = served.cutAt;
      served.cutAt = undefined;
      res.write(body.subarray(0, cut), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    if (served.stallAt !== undefined) {
      const stall = served.stallAt;
      served.stallAt = undefined;
      return void res.write(body.subarray(0, stall));
    }
    if (!served.slow) return void res.end(body);
    let at = 0;
    const step = () => {
      if (at >= body.length) return void res.end();
      res.write(body.subarray(at, at + 16 * 1024));
      at += 16 * 1024;
      setTimeout(step, 2);
    };
    step();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    serve: (path, served) => routes.set(path, served),
    requests: (path) => seen.get(path) ?? [],
  };
}

async function scratch(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-images-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A clock that moves one second per reading, so that every use is later than the one before. */
function ticking(): () => Date {
  let seconds = 0;
  return () => new Date(Date.UTC(2026, 0, 1) + 1000 * seconds++);
}

async function cacheIn(t: ExecutionContext, dir: string, options: Partial<ImageCacheOptions> = {}) {
  const logger = memoryLogger();
  const used = new Set<string>();
  const cache = await openImageCache({
    dir: join(dir, 'images'), maxBytes: 1 << 30, inUse: () => used, logger, retries: 3, timeoutMs: 5000, retryInitialMs: 10,
    now: ticking(), ...options,
  });
  t.teardown(() => cache.close());
  return { cache, logger, used, dir: join(dir, 'images') };
}

async function failure(promise: Promise<unknown>): Promise<ImageError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ImageError) return error;
    throw error;
  }
  throw new Error('expected a failure');
}

const files = async (dir: string) => (await readdir(dir)).sort();

test('concurrent adds of one URI download it once and all get the same entry', async (t) => {
  const server = await origin(t);
  const body = randomBytes(512 * 1024);
  server.serve('/debian.img', { body, slow: true });
  const { cache, dir } = await cacheIn(t, await scratch(t));
  const uri = `${server.base}/debian.img`;
  const entries = await Promise.all(Array.from({ length: 12 }, () => cache.add({ uri, type: 'image', description: 'Debian' })));
  t.is(server.requests('/debian.img').length, 1);
  t.true(entries.every((e) => e.name === 'debian.img' && e.sha256 === sha(body) && e.bytes === body.length));
  t.is(sha(await readFile(join(dir, 'debian.img'))), sha(body));
  t.is(entries[0]!.path, join(dir, 'debian.img'));
  t.is(entries[0]!.format, 'raw');
  // Cached now: another add is answered from the cache.
  await cache.add({ uri, type: 'image' });
  t.is(server.requests('/debian.img').length, 1);
  t.deepEqual(cache.list().map((e) => e.name), ['debian.img']);
});

test('files are readable by everyone and the index lists them across a restart', async (t) => {
  const server = await origin(t);
  server.serve('/k', { body: Buffer.from('kernel bytes') });
  const root = await scratch(t);
  const first = await cacheIn(t, root);
  const added = await first.cache.add({ uri: `${server.base}/k`, type: 'kernel', description: 'a kernel', name: 'vmlinuz-6.1' });
  t.is((await stat(first.dir)).mode & 0o777, 0o755);
  t.is((await stat(added.path)).mode & 0o777, 0o644);
  t.is((await stat(join(first.dir, 'index.json'))).mode & 0o777, 0o644);
  await first.cache.close();
  const again = await cacheIn(t, root);
  t.deepEqual(again.cache.list(), [added]);
  t.deepEqual(await files(again.dir), ['index.json', 'vmlinuz-6.1']);
});

test('the least recently used entries that no sliver uses are evicted to stay under the bound', async (t) => {
  const server = await origin(t);
  for (const name of ['a', 'b', 'c', 'd', 'e']) server.serve(`/${name}`, { body: Buffer.alloc(1000, name) });
  const { cache, dir, used, logger } = await cacheIn(t, await scratch(t), { maxBytes: 3500 });
  const add = (name: string) => cache.add({ uri: `${server.base}/${name}`, type: 'data' });
  await add('a');
  await add('b');
  await add('c');
  await cache.resolve('a', 'data'); // a is used again: b is now the least recently used
  await add('d');
  t.deepEqual(cache.list().map((e) => e.name), ['a', 'c', 'd']);
  t.deepEqual(await files(dir), ['a', 'c', 'd', 'index.json']);
  used.add(`${server.base}/c`); // c is the oldest now, but a sliver names it by URI
  await add('e');
  t.deepEqual(cache.list().map((e) => e.name), ['c', 'd', 'e']);
  t.deepEqual(await files(dir), ['c', 'd', 'e', 'index.json']);
  t.deepEqual(logger.lines.filter((l) => l.startsWith('info image evicted')).map((l) => /image=(\w)/.exec(l)![1]), ['b', 'a']);
});

test('an image that cannot fit is refused and nothing is evicted or kept', async (t) => {
  const server = await origin(t);
  server.serve('/small', { body: Buffer.alloc(600) });
  server.serve('/other', { body: Buffer.alloc(600) });
  server.serve('/big', { body: Buffer.alloc(1500) });
  const { cache, dir, used } = await cacheIn(t, await scratch(t), { maxBytes: 1000 });
  await cache.add({ uri: `${server.base}/small`, type: 'image' });
  const big = await failure(cache.add({ uri: `${server.base}/big`, type: 'image' }));
  t.is(big.kind, 'refused');
  t.regex(big.message, new RegExp(`^image ${server.base}/big: it is 1.46 KiB, more than 1000 B, the most the cache may hold`));
  used.add('small');
  const other = await failure(cache.add({ uri: `${server.base}/other`, type: 'image' }));
  t.regex(other.message, /not kept: it is 600 B and the images in use by slivers hold 600 B of the 1000 B/);
  t.deepEqual(cache.list().map((e) => e.name), ['small']);
  t.deepEqual(await files(dir), ['index.json', 'small']);
});

test('a checksum mismatch is rejected and nothing is left behind', async (t) => {
  const server = await origin(t);
  const body = randomBytes(100_000);
  server.serve('/img', { body });
  const { cache, dir } = await cacheIn(t, await scratch(t));
  const wrong = sha(Buffer.from('something else'));
  const error = await failure(cache.add({ uri: `${server.base}/img`, type: 'image', sha256: wrong }));
  t.is(error.kind, 'refused');
  t.is(error.message, `image ${server.base}/img: checksum mismatch: expected sha256 ${wrong}, got ${sha(body)}; nothing kept`);
  t.deepEqual(cache.list(), []);
  t.deepEqual(await files(dir), []);
  const right = await cache.add({ uri: `${server.base}/img`, type: 'image', sha256: sha(body).toUpperCase() });
  t.is(right.sha256, sha(body));
});

test('a connection cut in the middle of the body is resumed with a Range request', async (t) => {
  const server = await origin(t);
  const body = randomBytes(3 * 1024 * 1024);
  server.serve('/cut.img', { body, cutAt: 1024 * 1024 });
  const { cache, logger } = await cacheIn(t, await scratch(t));
  const entry = await cache.add({ uri: `${server.base}/cut.img`, type: 'image', sha256: sha(body) });
  t.is(sha(await readFile(entry.path)), sha(body));
  const requests = server.requests('/cut.img');
  t.is(requests.length, 2);
  t.is(requests[0]!.range, undefined);
  t.regex(requests[1]!.range ?? '', /^bytes=\d+-$/);
  t.true(Number(/\d+/.exec(requests[1]!.range!)![0]) > 0, 'the second request asks for the rest only');
  t.is(requests[1]!['if-range'], `"${sha(body).slice(0, 16)}"`);
  t.true(logger.lines.some((l) => /^warn image download failed, retrying .*reason="connection (broken|closed) after/.test(l)), logger.lines.join('\n'));
  t.true(logger.lines.some((l) => /^info image added .*attempts=2 resumed=1/.test(l)));
});

test('a body that stops arriving is abandoned after the timeout and resumed', async (t) => {
  const server = await origin(t);
  const body = randomBytes(1024 * 1024);
  server.serve('/stall.img', { body, stallAt: 300_000 });
  const { cache, logger } = await cacheIn(t, await scratch(t), { timeoutMs: 1000 });
  const entry = await cache.add({ uri: `${server.base}/stall.img`, type: 'image', sha256: sha(body) });
  t.is(sha(await readFile(entry.path)), sha(body));
  // Only the first response stalls; on a loaded machine a resumed one may still be slow enough to be retried.
  const requests = server.requests('/stall.img');
  t.true(requests.length >= 2);
  t.is(requests[0]!.range, undefined);
  t.regex(requests[1]!.range ?? '', /^bytes=[1-9]\d*-$/);
  t.true(logger.lines.some((l) => /^warn image download failed, retrying .*reason="connection broken after .*nothing received for 1 s/.test(l)), logger.lines.join('\n'));
});

test('a redirect is followed; a redirect loop is refused at once, not retried', async (t) => {
  const server = await origin(t);
  const body = randomBytes(100_000);
  server.serve('/current.img', { body });
  server.serve('/latest.img', { body, status: 302, location: '/current.img' });
  server.serve('/loop.img', { body, status: 307, location: '/loop.img' });
  const { cache } = await cacheIn(t, await scratch(t));
  const entry = await cache.add({ uri: `${server.base}/latest.img`, type: 'image' });
  t.is(entry.sha256, sha(body));
  t.is(server.requests('/current.img').length, 1);
  const loop = await failure(cache.add({ uri: `${server.base}/loop.img`, type: 'image' }));
  t.is(loop.kind, 'refused');
  t.is(loop.message, `image ${server.base}/loop.img: too many redirects (more than 5)`);
  t.is(server.requests('/loop.img').length, 6);
});

test('a server that ignores Range gets the whole file again, and the file is still right', async (t) => {
  const server = await origin(t);
  const body = randomBytes(2 * 1024 * 1024);
  server.serve('/norange.img', { body, cutAt: 700_000, noRanges: true });
  const { cache } = await cacheIn(t, await scratch(t));
  const entry = await cache.add({ uri: `${server.base}/norange.img`, type: 'image' });
  t.is(entry.sha256, sha(body));
  t.is(sha(await readFile(entry.path)), sha(body));
  t.is(server.requests('/norange.img').length, 2);
});

test('server errors are retried with backoff; a 404 is not, and names the URI', async (t) => {
  const server = await origin(t);
  server.serve('/flaky', { body: Buffer.from('finally'), failFirst: 2 });
  server.serve('/down', { body: Buffer.from('never'), failFirst: 100 });
  const { cache } = await cacheIn(t, await scratch(t), { retries: 3 });
  t.is((await cache.add({ uri: `${server.base}/flaky`, type: 'data' })).bytes, 7);
  t.is(server.requests('/flaky').length, 3);
  const missing = await failure(cache.add({ uri: `${server.base}/missing.img`, type: 'image' }));
  t.is(missing.message, `image ${server.base}/missing.img: HTTP 404 Not Found`);
  t.is(missing.kind, 'refused');
  t.is(server.requests('/missing.img').length, 1);
  const down = await failure(cache.add({ uri: `${server.base}/down`, type: 'data' }));
  t.is(down.kind, 'failed');
  t.is(down.message, `image ${server.base}/down: HTTP 503 Service Unavailable (gave up after 4 attempts)`);
  const refused = await failure(cache.add({ uri: 'http://127.0.0.1:1/nothing-listens', type: 'data' }));
  t.regex(refused.message, /^image http:\/\/127.0.0.1:1\/nothing-listens: .*ECONNREFUSED.*\(gave up after 4 attempts\)$/);
});

test('file: URIs are copied; a missing file is refused', async (t) => {
  const root = await scratch(t);
  const source = join(root, 'initrd.img');
  const body = randomBytes(300_000);
  await writeFile(source, body);
  const { cache } = await cacheIn(t, root);
  const entry = await cache.add({ uri: pathToFileURL(source).href, type: 'initrd', description: 'busybox' });
  t.like(entry, { name: 'initrd.img', type: 'initrd', bytes: body.length, sha256: sha(body), format: 'raw', description: 'busybox' });
  t.is(sha(await readFile(entry.path)), sha(body));
  const missing = await failure(cache.add({ uri: pathToFileURL(join(root, 'nope.img')).href, type: 'image' }));
  t.is(missing.message, `image ${pathToFileURL(join(root, 'nope.img')).href}: no such file`);
});

test('a qcow2 image is recognised; one with a backing file is refused', async (t) => {
  const root = await scratch(t);
  const header = Buffer.alloc(4096);
  header.write('QFI\xfb', 0, 'latin1');
  header.writeUInt32BE(3, 4);
  await writeFile(join(root, 'disk.qcow2'), header);
  header.writeBigUInt64BE(512n, 8);
  await writeFile(join(root, 'backed.qcow2'), header);
  const { cache, dir } = await cacheIn(t, root);
  t.is((await cache.add({ uri: pathToFileURL(join(root, 'disk.qcow2')).href, type: 'image' })).format, 'qcow2');
  t.is((await cache.add({ uri: pathToFileURL(join(root, 'backed.qcow2')).href, type: 'data' })).format, 'raw', 'only images are inspected');
  await cache.remove('backed.qcow2');
  const backed = await failure(cache.add({ uri: pathToFileURL(join(root, 'backed.qcow2')).href, type: 'image' }));
  t.regex(backed.message, /backing file is not accepted/);
  t.deepEqual(await files(dir), ['disk.qcow2', 'index.json']);
});

test('names: a clash with another URI is an error; an add that disagrees with the entry is refused', async (t) => {
  const server = await origin(t);
  server.serve('/one/disk.img', { body: Buffer.from('one') });
  server.serve('/two/disk.img', { body: Buffer.from('two') });
  const { cache } = await cacheIn(t, await scratch(t));
  await cache.add({ uri: `${server.base}/one/disk.img`, type: 'image' });
  const clash = await failure(cache.add({ uri: `${server.base}/two/disk.img`, type: 'image' }));
  t.is(clash.message, `image ${server.base}/two/disk.img: the name disk.img is taken by ${server.base}/one/disk.img; give another name`);
  t.is((await cache.add({ uri: `${server.base}/two/disk.img`, type: 'image', name: 'disk2.img' })).name, 'disk2.img');
  t.regex((await failure(cache.add({ uri: `${server.base}/one/disk.img`, type: 'kernel' }))).message, /cached already as type image \(name disk.img\), not kernel/);
  t.regex((await failure(cache.add({ uri: `${server.base}/one/disk.img`, type: 'image', name: 'x' }))).message, /cached already under the name disk.img, not x/);
  t.regex((await failure(cache.add({ uri: `${server.base}/one/disk.img`, type: 'image', sha256: '0'.repeat(64) }))).message, /with sha256 [0-9a-f]{64}, not 0{64}/);
});

test('remove by name or URI, refused while in use; resolve checks the type and fetches a URI not cached yet', async (t) => {
  const server = await origin(t);
  server.serve('/vmlinuz', { body: Buffer.from('kernel') });
  server.serve('/root.img', { body: Buffer.from('root') });
  const { cache, used, dir } = await cacheIn(t, await scratch(t));
  const kernel = await cache.resolve(`${server.base}/vmlinuz`, 'kernel');
  t.is(kernel.name, 'vmlinuz');
  t.is((await cache.resolve('vmlinuz', 'kernel')).uri, `${server.base}/vmlinuz`);
  t.true((await cache.resolve('vmlinuz', 'kernel')).lastUsed > kernel.lastUsed);
  t.regex((await failure(cache.resolve('vmlinuz', 'image'))).message, /^image "vmlinuz": it is cached as type kernel \(name vmlinuz\), not image$/);
  const unknown = await failure(cache.resolve('debian', 'image'));
  t.is(unknown.kind, 'not-found');
  await cache.add({ uri: `${server.base}/root.img`, type: 'image' });
  used.add('root.img');
  const busy = await failure(cache.remove(`${server.base}/root.img`));
  t.is(busy.kind, 'in-use');
  t.is(busy.message, `image root.img (${server.base}/root.img): in use by a sliver; not removed`);
  used.clear();
  t.is((await cache.remove(`${server.base}/root.img`)).name, 'root.img');
  t.is((await cache.remove('vmlinuz')).name, 'vmlinuz');
  t.is((await failure(cache.remove('vmlinuz'))).kind, 'not-found');
  t.deepEqual(await files(dir), ['index.json']);
});

test('at start, stray temporary files go, and entries whose file vanished or changed size are dropped', async (t) => {
  const server = await origin(t);
  for (const name of ['a', 'b', 'c']) server.serve(`/${name}`, { body: Buffer.alloc(100, name) });
  const root = await scratch(t);
  const first = await cacheIn(t, root);
  for (const name of ['a', 'b', 'c']) await first.cache.add({ uri: `${server.base}/${name}`, type: 'data' });
  await first.cache.close();
  await unlink(join(first.dir, 'a'));
  await writeFile(join(first.dir, 'b'), 'shorter');
  await writeFile(join(first.dir, '.x.123.4.part'), 'partial download');
  await writeFile(join(first.dir, '.index.json.123.5.tmp'), '{');
  const again = await cacheIn(t, root);
  t.deepEqual(again.cache.list().map((e) => e.name), ['c']);
  t.deepEqual(await files(again.dir), ['c', 'index.json']);
  t.true(again.logger.lines.some((l) => l.startsWith('warn image entry dropped: its file is gone image=a')));
  t.true(again.logger.lines.some((l) => l.startsWith('warn image entry dropped: its file is not the one fetched image=b')));
  const index = JSON.parse(await readFile(join(again.dir, 'index.json'), 'utf8')) as { entries: { name: string }[] };
  t.deepEqual(index.entries.map((e) => e.name), ['c']);
});

test('a damaged index is moved aside, not deleted, and the cache starts empty', async (t) => {
  const root = await scratch(t);
  const first = await cacheIn(t, root);
  await first.cache.close();
  await writeFile(join(first.dir, 'index.json'), 'not json');
  const again = await cacheIn(t, root);
  t.deepEqual(again.cache.list(), []);
  const names = await files(again.dir);
  t.true(names.some((n) => /^index\.json\.damaged-\d+$/.test(n)), names.join(' '));
  t.true(again.logger.lines.some((l) => l.startsWith('error image index damaged')));
});

test('close abandons a download in progress and leaves no temporary file', async (t) => {
  const server = await origin(t);
  server.serve('/slow.img', { body: randomBytes(8 * 1024 * 1024), slow: true });
  const { cache, dir } = await cacheIn(t, await scratch(t));
  const pending = cache.add({ uri: `${server.base}/slow.img`, type: 'image' });
  // In progress: the origin has the request, and the download's temporary file is there.
  await waitFor('the download to be under way', async () =>
    server.requests('/slow.img').length > 0 && (await files(dir)).some((name) => name.endsWith('.part')), { timeoutMs: 10_000, intervalMs: 5 });
  await cache.close();
  const error = await failure(pending);
  t.regex(error.message, /abandoned \(the cache is closing\)/);
  t.deepEqual(await files(dir), []);
});

test('many adds at once all reach the index on disk', async (t) => {
  const server = await origin(t);
  const names = Array.from({ length: 40 }, (_, i) => `part-${i}`);
  for (const name of names) server.serve(`/${name}`, { body: Buffer.from(name) });
  const root = await scratch(t);
  const first = await cacheIn(t, root);
  await Promise.all(names.map((name) => first.cache.add({ uri: `${server.base}/${name}`, type: 'data' })));
  await first.cache.close();
  const again = await cacheIn(t, root);
  t.deepEqual(again.cache.list().map((e) => e.name), [...names].sort());
});

test('a URI a sliver names whose last part another URI has is cached under a tagged name', async (t) => {
  const server = await origin(t);
  server.serve('/v1/rootfs.img', { body: Buffer.from('one') });
  server.serve('/v2/rootfs.img', { body: Buffer.from('two') });
  const { cache } = await cacheIn(t, await scratch(t));
  await cache.resolve(`${server.base}/v1/rootfs.img`, 'image');
  const second = await cache.resolve(`${server.base}/v2/rootfs.img`, 'image');
  t.regex(second.name, /^rootfs-[0-9a-f]{8}\.img$/);
  t.is((await cache.resolve(`${server.base}/v2/rootfs.img`, 'image')).name, second.name);
  t.is(server.requests('/v2/rootfs.img').length, 1);
});
