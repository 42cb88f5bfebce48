// The repository of virtual clusters against real files in a temporary directory, a real image
// cache and a real HTTP server on loopback: vcdb.txt, descriptions found by directory or URL, and a
// node's image decompressed into the cache once.
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { parseConfig } from '../../src/config/config.js';
import {
  cachedImageName, configuredRepository, fetchImage, imagePartUrls, listRepository, loadDescription, VcRepositoryError, type FetchImageOptions,
} from '../../src/clusters/repository.js';
import { VcInError } from '../../src/clusters/vc-in.js';
import { parseVcdb, VcdbError } from '../../src/clusters/vcdb.js';
import { openImageCache, type ImageCache } from '../../src/images/cache.js';
import { ImageError } from '../../src/images/index.js';
import { memoryLogger } from '../../src/log.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A description in pragma's style: the frontend's image given as a .gz, the compute's as raw in a sub-directory. */
function description(frontend: string, compute: string, frontendFile = ''): string {
  const devices = (nics: number, file: string) =>
    `<devices>${'<interface type="bridge"/>'.repeat(nics)}<disk type="file" device="disk"><driver name="qemu" type="raw"/><source file="${file}"/></disk></devices>`;
  return `<vc version="0.1">
  <virtualization engine="kvm" type="hvm" arch="x86_64"/>
  <frontend>${frontendFile}<domain type="kvm"><memory unit="MiB">1024</memory><vcpu>2</vcpu>${devices(2, frontend)}</domain></frontend>
  <compute>
    <boot_dependency parent="frontend"><wait type="clock" value="60"/></boot_dependency>
    <domain type="kvm"><memory unit="MiB">512</memory>${devices(1, compute)}</domain>
  </compute>
</vc>
`;
}

async function scratch(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-vc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function put(root: string, files: Record<string, string | Buffer>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
}

async function cacheIn(t: ExecutionContext, dir: string): Promise<ImageCache> {
  const cache = await openImageCache({
    dir: join(dir, 'images'), maxBytes: 64 << 20, inUse: () => new Set(), logger: memoryLogger(), retries: 0, retryInitialMs: 1,
  });
  t.teardown(() => cache.close());
  return cache;
}

function fetchOptions(dir: string, maxBytes = 64 << 20): FetchImageOptions {
  return { workDir: join(dir, 'work'), maxBytes, logger: memoryLogger(), retries: 0, retryInitialMs: 1 };
}

/** A loopback server of `files` (path -> body) that counts the requests of each path. */
async function serve(t: ExecutionContext, files: Record<string, Buffer | string>): Promise<{ base: string; hits: (path: string) => number; total: () => number }> {
  const hits = new Map<string, number>();
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const body = files[path];
    if (body === undefined) return void res.writeHead(404).end('not here');
    res.writeHead(200, { 'content-length': Buffer.byteLength(body) }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits: (path) => hits.get(path) ?? 0,
    total: () => [...hits.values()].reduce((a, b) => a + b, 0),
  };
}

test('vcdb.txt: comments and blank lines allowed, bad lines and names listed twice refused by line', (t) => {
  const entries = parseVcdb('# clusters of this site\n\nrocks7, rocks7/rocks7.xml\r\nbio.v2,./bio//bio.xml\n', 'vcdb.txt');
  t.deepEqual(entries, [
    { name: 'rocks7', path: 'rocks7/rocks7.xml', line: 3 },
    { name: 'bio.v2', path: 'bio/bio.xml', line: 4 },
  ]);
  const refusal = (text: string) => t.throws(() => parseVcdb(text, 'vcdb.txt'), { instanceOf: VcdbError })?.message;
  t.is(refusal('a,a.xml\n\na,b.xml\n'), 'vcdb.txt line 3: a is listed already on line 1');
  t.is(refusal('# x\nrocks7 rocks7.xml'), 'vcdb.txt line 2: expected "name,path/to/name.xml" (one comma), got "rocks7 rocks7.xml"');
  t.is(refusal('evil,../../etc/x.xml'), 'vcdb.txt line 1: evil: the path leads out of the repository ("..")');
  t.regex(refusal('-x,x.xml') ?? '', /^vcdb\.txt line 1: "-x" is not a cluster name/);
});

test('a directory repository: listed, loaded, with its files next to the description', async (t) => {
  const dir = await scratch(t);
  const repo = join(dir, 'repo');
  await put(repo, {
    'vcdb.txt': '# name,description\nrocks7,rocks7/rocks7.xml\nbroken,broken/broken.xml\n',
    'rocks7/rocks7.xml': description('fe.img.gz', 'images/compute.img'),
    'broken/broken.xml': '<vc><frontend/></vc>',
  });
  t.deepEqual((await listRepository(repo)).map((e) => e.name), ['rocks7', 'broken']);
  const loaded = await loadDescription(repo, 'rocks7');
  t.is(loaded.dir, join(repo, 'rocks7') + '/');
  t.is(loaded.description.frontend.vcpus, 2);
  t.deepEqual(imagePartUrls(loaded, loaded.description.compute!.disk).map((u) => u.pathname), [join(repo, 'rocks7/images/compute.img')]);

  const missing = await t.throwsAsync(loadDescription(repo, 'centos'), { instanceOf: VcRepositoryError });
  t.is(missing?.kind, 'not-found');
  t.regex(missing?.message ?? '', /virtual cluster centos: not in file:.*\/repo\/vcdb\.txt \(it lists rocks7, broken\)$/);
  const broken = await t.throwsAsync(loadDescription(repo, 'broken'), { instanceOf: VcInError });
  t.regex(broken?.message ?? '', /^virtual cluster broken \(file:.*\/broken\.xml\) line 1 column 1: vc: has no <virtualization>$/);
  const empty = await t.throwsAsync(listRepository(join(dir, 'nothing')), { instanceOf: VcRepositoryError });
  t.regex(empty?.message ?? '', /nothing\/vcdb\.txt: no such file$/);
});

test('the configured repository: vc_repository_url, a file: URL relative to the configuration, wins over the directory', async (t) => {
  const dir = await scratch(t);
  await put(join(dir, 'served'), { 'vcdb.txt': 'c1,c1/c1.xml\n', 'c1/c1.xml': description('fe.qcow2', 'c.img') });
  const config = parseConfig('vc_repository_dir = unused\nvc_repository_url = file:served', join(dir, 'nodemgr.conf'));
  const loaded = await loadDescription(configuredRepository(config), 'c1');
  t.is(loaded.dir, join(dir, 'served', 'c1') + '/');
  t.is(configuredRepository(parseConfig('vc_repository_dir = repo', join(dir, 'nodemgr.conf'))), join(dir, 'repo'));
});

test('over HTTP: a gzip image is decompressed into the cache once; the next boot never asks again', async (t) => {
  const dir = await scratch(t);
  const frontendImage = randomBytes(300 * 1024);
  const computeImage = randomBytes(100 * 1024);
  const origin = await serve(t, {
    '/vc/vcdb.txt': 'rocks7,rocks7/rocks7.xml\n',
    '/vc/rocks7/rocks7.xml': description('fe.img.gz', 'images/compute.img'),
    '/vc/rocks7/fe.img.gz': gzipSync(frontendImage),
    '/vc/rocks7/images/compute.img': computeImage,
  });
  const cache = await cacheIn(t, dir);
  const loaded = await loadDescription(new URL(`${origin.base}/vc`), 'rocks7');
  t.is(loaded.url.href, `${origin.base}/vc/rocks7/rocks7.xml`);
  t.is(loaded.dir, null);

  const frontend = await fetchImage(cache, loaded, 'frontend', fetchOptions(dir));
  t.is(origin.hits('/vc/rocks7/fe.img.gz'), 1);
  t.regex(frontend.name, /^rocks7-fe-[0-9a-f]{12}\.img$/);
  t.is(frontend.type, 'image');
  t.is(frontend.format, 'raw');
  t.is(frontend.bytes, frontendImage.length);
  t.is(frontend.sha256, sha(frontendImage));
  t.true((await readFile(frontend.path)).equals(frontendImage));
  t.deepEqual(await readdir(join(dir, 'work')), [], 'the assembled file and the parts are removed');

  // The compute's relative path is resolved against the description's URL, not the repository's.
  const compute = await fetchImage(cache, loaded, 'compute', fetchOptions(dir));
  t.is(origin.hits('/vc/rocks7/images/compute.img'), 1);
  t.is(compute.uri, `${origin.base}/vc/rocks7/images/compute.img`);
  t.true((await readFile(compute.path)).equals(computeImage));

  const before = origin.total();
  const again = await fetchImage(cache, loaded, 'frontend', fetchOptions(dir));
  const computeAgain = await fetchImage(cache, loaded, 'compute', fetchOptions(dir));
  t.is(origin.total(), before, 'the second fetch asks the server for nothing');
  t.is(again.name, frontend.name);
  t.is(again.sha256, frontend.sha256);
  t.is(computeAgain.name, compute.name);
});

test('after a restart the cache still has the image: a new cache over the same directory asks nothing', async (t) => {
  const dir = await scratch(t);
  const image = randomBytes(64 * 1024);
  const origin = await serve(t, {
    '/vcdb.txt': 'c1,c1.xml\n', '/c1.xml': description('fe.img.gz', 'c.img'), '/fe.img.gz': gzipSync(image),
  });
  const loaded = await loadDescription(new URL(origin.base), 'c1');
  const first = await openImageCache({ dir: join(dir, 'images'), maxBytes: 64 << 20, inUse: () => new Set(), logger: memoryLogger() });
  const entry = await fetchImage(first, loaded, 'frontend', fetchOptions(dir));
  await first.close();
  const second = await cacheIn(t, dir);
  const again = await fetchImage(second, loaded, 'frontend', fetchOptions(dir));
  t.is(origin.hits('/fe.img.gz'), 1);
  t.is(again.name, entry.name);
  t.true((await readFile(again.path)).equals(image));
});

test('two boots at once share one download and one decompression', async (t) => {
  const dir = await scratch(t);
  const image = randomBytes(512 * 1024);
  const origin = await serve(t, { '/vcdb.txt': 'c1,c1.xml\n', '/c1.xml': description('fe.img.gz', 'c.img'), '/fe.img.gz': gzipSync(image) });
  const cache = await cacheIn(t, dir);
  const loaded = await loadDescription(new URL(origin.base), 'c1');
  const [a, b] = await Promise.all([fetchImage(cache, loaded, 'frontend', fetchOptions(dir)), fetchImage(cache, loaded, 'frontend', fetchOptions(dir))]);
  t.is(a.name, b.name);
  t.is(origin.hits('/fe.img.gz'), 1);
  t.is(cache.list().length, 1);
});

test("pragma's gzip <file> in parts, from a directory: concatenated, then decompressed", async (t) => {
  const dir = await scratch(t);
  const image = randomBytes(200 * 1024);
  const compressed = gzipSync(image);
  const cut = Math.floor(compressed.length / 3);
  const repo = join(dir, 'repo');
  const file = '<file type="gzip"><part>parts/fe.img.gz.aa</part><part>parts/fe.img.gz.ab</part></file>';
  await put(repo, {
    'vcdb.txt': 'split,split/split.xml\n',
    'split/split.xml': description('fe.img', 'c.img', file),
    'split/parts/fe.img.gz.aa': compressed.subarray(0, cut),
    'split/parts/fe.img.gz.ab': compressed.subarray(cut),
  });
  const cache = await cacheIn(t, dir);
  const loaded = await loadDescription(repo, 'split');
  const entry = await fetchImage(cache, loaded, 'frontend', fetchOptions(dir));
  t.is(entry.name, cachedImageName('split', loaded.description.frontend.disk, imagePartUrls(loaded, loaded.description.frontend.disk)));
  t.regex(entry.name, /^split-fe-[0-9a-f]{12}\.img$/);
  t.true((await readFile(entry.path)).equals(image));
  t.regex(entry.description, /^virtual cluster split frontend disk fe\.img, from file:.*\/fe\.img\.gz\.aa and 1 more part\(s\)$/);
});

test('a decompressed image over the bound, parts that are not gzip or a missing part are refused and leave nothing', async (t) => {
  const dir = await scratch(t);
  const repo = join(dir, 'repo');
  await put(repo, {
    'vcdb.txt': 'bomb,bomb.xml\nbad,bad.xml\ngone,gone.xml\n',
    'bomb.xml': description('zeros.img.gz', 'c.img'),
    'zeros.img.gz': gzipSync(Buffer.alloc(4 << 20)),
    'bad.xml': description('bad.img.gz', 'c.img'),
    'bad.img.gz': 'this is not gzip',
    'gone.xml': description('gone.img.gz', 'c.img'),
  });
  const cache = await cacheIn(t, dir);
  const bomb = await t.throwsAsync(fetchImage(cache, await loadDescription(repo, 'bomb'), 'frontend', fetchOptions(dir, 1 << 20)), { instanceOf: ImageError });
  t.regex(bomb?.message ?? '', /^virtual cluster image bomb-zeros-[0-9a-f]{12}\.img: the image is larger than 1 MiB/);
  const bad = await t.throwsAsync(fetchImage(cache, await loadDescription(repo, 'bad'), 'frontend', fetchOptions(dir)), { instanceOf: ImageError });
  t.regex(bad?.message ?? '', /the parts are not one valid gzip stream/);
  const gone = await t.throwsAsync(fetchImage(cache, await loadDescription(repo, 'gone'), 'frontend', fetchOptions(dir)), { instanceOf: ImageError });
  t.regex(gone?.message ?? '', /^virtual cluster image gone-gone-[0-9a-f]{12}\.img: part gone\.img\.gz: no such file$/);
  t.deepEqual([bomb?.kind, bad?.kind, gone?.kind], ['refused', 'refused', 'refused']);
  t.deepEqual(cache.list(), []);
  t.deepEqual(await readdir(join(dir, 'work')), []);
});
