// A node's disk image, from the repository into the node's image cache, once. A raw or qcow2 file
// is added by its URL as it is. A compressed image (a ".gz" file, or pragma's <file type="gzip">
// in parts) is assembled once: its parts fetched, concatenated and streamed through zlib into a
// file, which the cache adds by its file: URI under a name of its own. The next boot finds that
// entry by name and never asks the repository again. pragma decompressed gzip parts in place, so
// its next boot asked for them again; and it had no checksum: the cache records the sha256.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createGunzip } from 'node:zlib';
import { describeFileError } from '../host/file-errors.js';
import { redactUrl } from '../host/url.js';
import type { ImageCache } from '../images/cache.js';
import { downloadTo, type DownloadWords } from '../images/download.js';
import { ImageError, invalidImageName, type ImageEntry } from '../images/index.js';
import type { Logger } from '../log.js';
import { describeError } from '../util/errors.js';
import { formatBytes } from '../util/text.js';
import type { LoadedDescription } from './repository.js';
import type { VcImageFile } from './vc-in-types.js';

export interface FetchImageOptions {
  /** Where parts are fetched and the image is assembled before the cache adds it; made when missing. */
  workDir: string;
  /** The largest image (and part) accepted, in bytes: image_cache_max_bytes, which bounds the cache anyway. */
  maxBytes: number;
  logger: Logger;
  signal?: AbortSignal;
  /** Retries of a failing part download, and how long one may receive nothing (the image cache's defaults). */
  retries?: number;
  timeoutMs?: number;
  retryInitialMs?: number;
}

const PART_WORDS: DownloadWords = {
  file: 'virtual cluster image part', limit: 'the most the image cache may hold (image_cache_max_bytes)', abandoned: 'abandoned',
};

/** What the repository's files are (missing, not gzip, too large): asking again gets the same answer. */
class PartsRefused extends Error {}

/** Assemblies in progress, per cache and entry name: two boots of one cluster share one. */
const assembling = new WeakMap<ImageCache, Map<string, Promise<ImageEntry>>>();

/**
 * The cache entry name of a node's image: the cluster's name, the image's file name (without ".gz"
 * for a compressed one) and a tag of the sha256 of the URLs it comes from, so that one cluster name
 * in two repositories, or a repository that moved, never shares an entry.
 */
export function cachedImageName(clusterName: string, file: VcImageFile, partUrls: readonly URL[]): string {
  const tag = createHash('sha256').update(partUrls.map((u) => u.href).join('\n')).digest('hex').slice(0, 12);
  let base = file.path.slice(file.path.lastIndexOf('/') + 1);
  if (file.format === 'gzip' && base.endsWith('.gz')) base = base.slice(0, -3);
  base = base.replace(/[^A-Za-z0-9._+-]/g, '_');
  // The tag goes before the first extension, so that "fe.qcow2" stays a ".qcow2".
  const dot = base.indexOf('.', 1);
  const [stem, extension] = dot < 0 ? [base, ''] : [base.slice(0, dot), base.slice(dot, dot + 16)];
  const room = 128 - clusterName.length - tag.length - extension.length - 2;
  const name = `${clusterName}-${stem.slice(0, Math.max(1, room))}-${tag}${extension}`;
  return invalidImageName(name) === null ? name : `${clusterName}-${tag}`;
}

/**
 * The image cache entry (type image) of the disk of `loaded`'s frontend or compute, fetched into
 * the cache the first time. The cache may evict an entry no one lists in its `inUse`: whoever
 * boots guests over it must list the entry's name there for as long as they exist.
 */
export async function fetchImage(
  cache: ImageCache, loaded: LoadedDescription, role: 'frontend' | 'compute', options: FetchImageOptions,
): Promise<ImageEntry> {
  const template = role === 'frontend' ? loaded.description.frontend : loaded.description.compute;
  if (template === null) throw new ImageError('invalid', `virtual cluster ${loaded.name}: its description has no compute`);
  const file = template.disk;
  const urls = file.parts.map((part) => new URL(part, loaded.url));
  const name = cachedImageName(loaded.name, file, urls);
  const from = `${redactUrl(urls[0]!)}${urls.length > 1 ? ` and ${urls.length - 1} more part(s)` : ''}`;
  const description = `virtual cluster ${loaded.name} ${role} disk ${file.path}, from ${from}`.slice(0, 1024);

  const cached = cache.list().find((e) => e.name === name);
  if (cached !== undefined) return cache.resolve(name, 'image');
  if (file.format !== 'gzip' && urls.length === 1) {
    // As it is: the cache's own add, which finds an entry of that URL too, whatever its name.
    const sameUri = cache.list().find((e) => e.uri === urls[0]!.href);
    if (sameUri !== undefined) return cache.resolve(sameUri.name, 'image');
    return cache.add({ uri: urls[0]!.href, type: 'image', name, description });
  }
  let running = assembling.get(cache);
  if (running === undefined) assembling.set(cache, (running = new Map()));
  const joined = running.get(name);
  if (joined !== undefined) return joined;
  const job = assembleAndAdd(cache, { name, description, file, urls, options }).finally(() => running!.delete(name));
  running.set(name, job);
  return job;
}

interface Assembly {
  readonly name: string;
  readonly description: string;
  readonly file: VcImageFile;
  readonly urls: readonly URL[];
  readonly options: FetchImageOptions;
}

/** Parts fetched, concatenated (and decompressed) into workDir/<name>, added by its file: URI, then removed. */
async function assembleAndAdd(cache: ImageCache, job: Assembly): Promise<ImageEntry> {
  const { workDir, logger } = job.options;
  const output = join(workDir, job.name);
  const downloaded: string[] = [];
  const started = Date.now();
  try {
    await mkdir(workDir, { recursive: true, mode: 0o700 });
    const sources: string[] = [];
    for (const [i, url] of job.urls.entries()) {
      if (url.protocol === 'file:') {
        sources.push(fileURLToPath(url));
      } else {
        const path = join(workDir, `.${job.name}.part${i}`);
        downloaded.push(path);
        await downloadPart(url, path, job.options);
        sources.push(path);
      }
    }
    const bytes = await concatenate(sources, output, job.file.format === 'gzip', job.options.maxBytes, job.options.signal);
    logger.info('virtual cluster image assembled', {
      image: job.name, parts: sources.length, format: job.file.format, bytes, seconds: Number(((Date.now() - started) / 1000).toFixed(3)),
    });
    return await cache.add({ uri: pathToFileURL(output).href, type: 'image', name: job.name, description: job.description });
  } catch (error) {
    if (error instanceof ImageError) throw error;
    throw new ImageError(error instanceof PartsRefused ? 'refused' : 'failed', `virtual cluster image ${job.name}: ${describeError(error)}`);
  } finally {
    await Promise.all([output, ...downloaded].map((path) => rm(path, { force: true })));
  }
}

async function downloadPart(url: URL, path: string, options: FetchImageOptions): Promise<void> {
  const handle = await open(path, 'w', 0o600);
  try {
    await downloadTo(url, handle, {
      maxBytes: options.maxBytes, retries: options.retries ?? 4, timeoutMs: options.timeoutMs ?? 60_000,
      retryInitialMs: options.retryInitialMs ?? 1000, logger: options.logger, signal: options.signal ?? new AbortController().signal,
      words: PART_WORDS,
    });
  } finally {
    await handle.close();
  }
}

/** Writes the files at `sources`, one after the other (through gunzip when `gunzip`), to `output`; returns its size. */
async function concatenate(sources: readonly string[], output: string, gunzip: boolean, maxBytes: number, signal?: AbortSignal): Promise<number> {
  async function* chained(): AsyncGenerator<Buffer> {
    for (const source of sources) {
      try {
        for await (const chunk of createReadStream(source, { highWaterMark: 1024 * 1024 })) yield chunk as Buffer;
      } catch (error) {
        throw new PartsRefused(`part ${source.slice(source.lastIndexOf('/') + 1)}: ${describeFileError(error)}`);
      }
    }
  }
  let bytes = 0;
  // A gzip stream can say a thousand times more than it holds: the bound applies to what comes out.
  const bounded = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      if (bytes > maxBytes) done(new PartsRefused(`the image is larger than ${formatBytes(maxBytes)}, the most the image cache may hold (image_cache_max_bytes)`));
      else done(null, chunk);
    },
  });
  const written = createWriteStream(output, { mode: 0o600 });
  try {
    if (gunzip) await pipeline(chained(), createGunzip(), bounded, written, { signal });
    else await pipeline(chained(), bounded, written, { signal });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('Z_')) throw new PartsRefused(`the parts are not one valid gzip stream (${describeError(error)})`);
    throw error;
  }
  return bytes;
}
