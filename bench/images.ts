// Image cache add throughput: one large file over loopback http (MB/s) beside curl writing the
// same file and sha256sum reading it (the same work done by the usual tools), and the same file
// from a file: URI; then adds per second of many small entries, one at a time and 16 at once.
// The http server runs in its own process so that it does not share the cache's event loop.
// Prints figures only; no thresholds.
//
//   node --import tsx bench/images.ts [MiB, default 200] [small entries, default 500] [rounds, default 3]
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { openImageCache, type ImageCache } from '../src/images/cache.js';
import { createLogger } from '../src/log.js';

const mib = Number(process.argv[2] ?? 200);
const smallCount = Number(process.argv[3] ?? 500);
const rounds = Number(process.argv[4] ?? 3);
const SMALL_BYTES = 4096;

// A static file server with Range support, as an image mirror would be.
const SERVER = `
const { createServer } = require('node:http');
const { createReadStream, statSync } = require('node:fs');
const { join } = require('node:path');
const root = process.argv[1];
const server = createServer((req, res) => {
  const file = join(root, decodeURIComponent(req.url.split('?')[0]));
  let size;
  try { size = statSync(file).size; } catch { res.writeHead(404).end(); return; }
  const range = /^bytes=(\\d+)-$/.exec(req.headers.range || '');
  const start = range ? Number(range[1]) : 0;
  res.writeHead(range ? 206 : 200, {
    'content-length': size - start,
    ...(range ? { 'content-range': 'bytes ' + start + '-' + (size - 1) + '/' + size } : {}),
  });
  createReadStream(file, { start, highWaterMark: 1 << 20 }).pipe(res);
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

function startServer(root: string): Promise<{ base: string; stop(): void }> {
  const child = spawn(process.execPath, ['-e', SERVER, root], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the http server exited with ${code} before listening`)));
    createInterface({ input: child.stdout! }).once('line', (line) => {
      const port = Number(/^port (\d+)$/.exec(line)?.[1]);
      if (!port) return reject(new Error(`unexpected first line from the server: ${line}`));
      child.removeAllListeners('exit');
      resolve({ base: `http://127.0.0.1:${port}`, stop: () => child.stdin!.end() });
    });
  });
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;

/** Seconds of each round of `task`, after one warm-up round. */
async function timed(task: (round: number) => Promise<void>): Promise<number[]> {
  await task(-1);
  const times: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const start = process.hrtime.bigint();
    await task(round);
    times.push(seconds(start));
  }
  return times;
}

function tool(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const work = mkdtempSync(join(tmpdir(), 'nodemgr-bench-images-'));
const served = join(work, 'served');
execFileSync('mkdir', ['-p', served]);
const large = join(served, 'large.img');
// Random bytes, written in pieces: the figure must not profit from a file of zeros.
const piece = randomBytes(1 << 20);
writeFileSync(large, '');
for (let i = 0; i < mib; i++) writeFileSync(large, piece, { flag: 'a' });
for (let i = 0; i < smallCount; i++) writeFileSync(join(served, `small-${i}.img`), randomBytes(SMALL_BYTES));

const server = await startServer(served);
const logger = createLogger({ console: false });
let cache: ImageCache | null = null;
let cacheDir: string | null = null;
/** A new, empty cache; the previous one's files go, so that the disk holds one copy at a time. */
const freshCache = async (name: string) => {
  await cache?.close();
  if (cacheDir !== null) rmSync(cacheDir, { recursive: true, force: true });
  cacheDir = join(work, name);
  cache = await openImageCache({ dir: cacheDir, maxBytes: 64 * 1024 ** 3, inUse: () => new Set(), logger });
  return cache;
};

try {
  const bytes = mib * 1024 * 1024;
  const rate = (times: number[]) => `${(bytes / 1e6 / median(times)).toFixed(0)} MB/s`;
  const spread = (times: number[]) => `(rounds: ${times.map((s) => s.toFixed(2)).join(', ')} s)`;
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown cpu'}, ${availableParallelism()} cores, node ${process.version}; ${tmpdir()} for the files`);
  console.log(`one ${mib} MiB file of random bytes over http on 127.0.0.1, ${rounds} rounds after a warm-up, median:`);

  const http = await timed(async (round) => {
    const c = await freshCache(`http-${round}`);
    await c.add({ uri: `${server.base}/large.img`, type: 'image' });
  });
  console.log(`  nodemgr image add (http, sha256 while writing):  ${rate(http)}  ${spread(http)}`);

  if (tool('curl', ['--version']) && tool('sha256sum', ['--version'])) {
    const out = join(work, 'curl.img');
    const curl = await timed(async () => {
      execFileSync('curl', ['-sSf', '-o', out, `${server.base}/large.img`]);
      execFileSync('sha256sum', [out], { stdio: 'ignore' });
      rmSync(out);
    });
    console.log(`  curl -o FILE, then sha256sum FILE:               ${rate(curl)}  ${spread(curl)}`);
  } else {
    console.log('  curl + sha256sum: n/a (not installed)');
  }

  const file = await timed(async (round) => {
    const c = await freshCache(`file-${round}`);
    await c.add({ uri: pathToFileURL(large).href, type: 'image' });
  });
  console.log(`  nodemgr image add (file: URI, same file):        ${rate(file)}  ${spread(file)}`);

  console.log(`\n${smallCount} entries of ${SMALL_BYTES} bytes over http (each add writes the index durably), median of ${rounds} rounds:`);
  for (const concurrency of [1, 16]) {
    const times = await timed(async (round) => {
      const c = await freshCache(`small-${concurrency}-${round}`);
      let next = 0;
      const worker = async () => {
        while (next < smallCount) {
          const i = next++;
          await c.add({ uri: `${server.base}/small-${i}.img`, type: 'data' });
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
    });
    console.log(`  ${String(concurrency).padStart(2)} at once: ${(smallCount / median(times)).toFixed(0)} adds/s  ${spread(times)}`);
  }
} finally {
  await (cache as ImageCache | null)?.close();
  server.stop();
  rmSync(work, { recursive: true, force: true });
}
