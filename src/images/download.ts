// Fetching one file from a URI into a file of ours: http and https with retries, backoff and
// resumption (Range) where the server allows it, or a copy of a local file; the digest is taken
// from the bytes as they are written, so a file is read once however large it is. The image cache
// fetches its images with it, and a task's stage-in its files (DownloadWords says whose).
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { backoffDelayMs } from '../host/backoff.js';
import { httpGet, HttpGetError, type HttpResponse } from '../host/http-get.js';
import type { Logger } from '../log.js';
import { formatBytes } from '../util/text.js';
import { ImageError } from './index.js';
import { describeError } from '../util/errors.js';

export interface DownloadOptions {
  /** Largest file accepted; a larger one is refused before or while it arrives. */
  maxBytes: number;
  /** Further attempts after the first failure that may be retried (network, 408, 429, 5xx). */
  retries: number;
  /** An attempt that receives nothing for this long is abandoned. */
  timeoutMs: number;
  /** Wait before the first retry; it doubles with every further failure, up to 30 s. */
  retryInitialMs: number;
  logger: Logger;
  signal: AbortSignal;
  random?: () => number;
  /** The digest taken of the bytes (a name node:crypto knows); default sha256. */
  hashAlgorithm?: string;
  /** How messages name the file and its bounds; default the image cache's words. */
  words?: DownloadWords;
}

export interface DownloadWords {
  /** What the file is: "image". */
  readonly file: string;
  /** Why maxBytes bounds it: "the most the cache may hold (image_cache_max_bytes)". */
  readonly limit: string;
  /** What an abort means: "abandoned (the cache is closing)". */
  readonly abandoned: string;
}

const CACHE_WORDS: DownloadWords = {
  file: 'image', limit: 'the most the cache may hold (image_cache_max_bytes)', abandoned: 'abandoned (the cache is closing)',
};

export interface Downloaded {
  /** Lower-case hex digest of the bytes, by hashAlgorithm. */
  digest: string;
  bytes: number;
  /** How many attempts it took (1 without a retry). */
  attempts: number;
  /** Attempts that continued a partial file with a Range request. */
  resumed: number;
}

const RETRY_MAX_MS = 30_000;

/**
 * A failed attempt. `retry`: another attempt may succeed; `refused`: asking again gets the same
 * answer; `failed`: this node cannot go on (its disk, or the cache closing).
 */
class AttemptError extends Error {
  constructor(message: string, readonly outcome: 'retry' | 'refused' | 'failed') {
    super(message);
  }
}

/** What is written so far: the file's length always equals `bytes`, and `hash` has seen exactly those bytes. */
interface Progress {
  handle: FileHandle;
  bytes: number;
  hash: Hash;
  /** Length of the whole file, once a response said it. */
  total: number | null;
  /** ETag (strong) or Last-Modified of the first response: a resumed body must be the same one. */
  validator: string | null;
  /** The server answered a Range request with something unusable: no more Range requests. */
  noRanges: boolean;
  readonly hashAlgorithm: string;
  readonly words: DownloadWords;
}

async function append(progress: Progress, chunk: Buffer, maxBytes: number): Promise<void> {
  if (progress.bytes + chunk.length > maxBytes) {
    throw new AttemptError(`larger than ${formatBytes(maxBytes)}, ${progress.words.limit}`, 'refused');
  }
  let done = 0;
  try {
    while (done < chunk.length) {
      const { bytesWritten } = await progress.handle.write(chunk, done, chunk.length - done, progress.bytes + done);
      done += bytesWritten;
    }
  } catch (error) {
    throw new AttemptError(`writing the file failed: ${describeError(error)}`, 'failed');
  }
  progress.hash.update(chunk);
  progress.bytes += chunk.length;
}

const WRITE_BATCH = 1024 * 1024;

/**
 * Appends what `source` yields, gathered into writes of about 1 MiB (a write per network chunk
 * costs a fifth of the throughput). What arrived before the source failed is written too, so a
 * retry can continue from it.
 */
async function appendAll(progress: Progress, source: AsyncIterable<Buffer>, maxBytes: number): Promise<void> {
  let batch: Buffer[] = [];
  let size = 0;
  const flush = async () => {
    if (size === 0) return;
    const data = batch.length === 1 ? batch[0]! : Buffer.concat(batch, size);
    batch = [];
    size = 0;
    await append(progress, data, maxBytes);
  };
  try {
    for await (const chunk of source) {
      batch.push(chunk);
      size += chunk.length;
      if (size >= WRITE_BATCH || progress.bytes + size > maxBytes) await flush();
    }
  } finally {
    await flush();
  }
}

async function restart(progress: Progress): Promise<void> {
  await progress.handle.truncate(0);
  progress.bytes = 0;
  progress.hash = createHash(progress.hashAlgorithm);
  progress.total = null;
}

// ---- file: ------------------------------------------------------------------------------------

async function copyFile(url: URL, progress: Progress, opts: DownloadOptions): Promise<void> {
  const path = fileURLToPath(url);
  const stream = createReadStream(path, { highWaterMark: 1024 * 1024, signal: opts.signal });
  try {
    await appendAll(progress, stream, opts.maxBytes);
  } catch (error) {
    if (error instanceof AttemptError) throw error;
    if (opts.signal.aborted) throw new AttemptError(progress.words.abandoned, 'failed');
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file'
      : code === 'EISDIR' ? 'a directory, not a file'
        : code === 'EACCES' || code === 'EPERM' ? 'permission denied'
          : describeError(error);
    throw new AttemptError(reason, 'refused');
  }
}

// ---- http: and https: -------------------------------------------------------------------------

/**
 * The GET of one attempt, its failures sorted: a redirect that is not followed will be the same
 * next time; no answer, or nothing for timeoutMs, may be different.
 */
async function get(url: URL, headers: Record<string, string>, opts: DownloadOptions): Promise<HttpResponse> {
  try {
    return await httpGet(url, { headers, signal: opts.signal, idleTimeoutMs: opts.timeoutMs });
  } catch (error) {
    if (!(error instanceof HttpGetError)) throw error;
    if (error.kind === 'redirect' || error.kind === 'ca') throw new AttemptError(error.message, 'refused');
    // A network failure in the system's words (ECONNREFUSED ...), as image messages have always given it.
    throw new AttemptError(error.kind === 'network' ? networkReason(error.cause, opts.words ?? CACHE_WORDS) : error.message, 'retry');
  }
}

function networkReason(error: unknown, words: DownloadWords): string {
  const e = error as NodeJS.ErrnoException;
  if (e?.name === 'AbortError') return words.abandoned;
  const message = e instanceof Error ? e.message : String(error);
  return e?.code !== undefined && !message.includes(e.code) ? `${message} (${e.code})` : message;
}

function statusIsRetried(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** `bytes START-END/TOTAL` of a 206 response; null when absent or not of that shape. */
function contentRange(header: string | undefined): { start: number; total: number | null } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header?.trim() ?? '');
  if (!m) return null;
  return { start: Number(m[1]), total: m[3] === '*' ? null : Number(m[3]) };
}

/** One attempt: a fresh GET, or a Range request continuing what `progress` holds. */
async function httpAttempt(url: URL, progress: Progress, opts: DownloadOptions): Promise<{ resumed: boolean }> {
  const headers: Record<string, string> = {};
  const ranged = progress.bytes > 0 && !progress.noRanges;
  if (ranged) {
    headers['range'] = `bytes=${progress.bytes}-`;
    if (progress.validator !== null) headers['if-range'] = progress.validator;
  } else if (progress.bytes > 0) {
    await restart(progress);
  }
  const answer = await get(url, headers, opts);
  const { status, body: response } = answer;
  const declared = Number(response.headers['content-length']);
  const length = response.headers['content-length'] !== undefined && Number.isSafeInteger(declared) ? declared : null;
  let resumed = false;
  if (status === 206 && ranged) {
    const range = contentRange(response.headers['content-range']);
    if (range === null || range.start !== progress.bytes || (range.total !== null && progress.total !== null && range.total !== progress.total)) {
      response.resume();
      progress.noRanges = true;
      throw new AttemptError(`the server answered the Range request with ${JSON.stringify(response.headers['content-range'] ?? '')}; starting again`, 'retry');
    }
    if (range.total !== null) progress.total = range.total;
    resumed = true;
  } else if (status === 416 && ranged && progress.total !== null && progress.bytes === progress.total) {
    // The connection broke after the last byte: the file is whole.
    response.resume();
    return { resumed: true };
  } else if (status === 200) {
    if (progress.bytes > 0) await restart(progress);
    progress.total = length;
    const etag = response.headers.etag;
    const lastModified = response.headers['last-modified'];
    progress.validator = etag !== undefined && !etag.startsWith('W/') ? etag : (lastModified ?? null);
  } else {
    response.resume();
    const text = `HTTP ${status} ${answer.statusText}`.trim();
    if (status === 416) progress.noRanges = true;
    throw new AttemptError(text, statusIsRetried(status) || status === 416 ? 'retry' : 'refused');
  }
  if (progress.total !== null && progress.total > opts.maxBytes) {
    response.destroy();
    throw new AttemptError(`it is ${formatBytes(progress.total)}, more than ${formatBytes(opts.maxBytes)}, ${progress.words.limit}`, 'refused');
  }
  try {
    await appendAll(progress, response, opts.maxBytes);
  } catch (error) {
    response.destroy();
    if (error instanceof AttemptError) throw error;
    throw new AttemptError(`connection broken after ${formatBytes(progress.bytes)} (${networkReason(error, progress.words)})`, 'retry');
  }
  if (!response.complete || (progress.total !== null && progress.bytes < progress.total)) {
    throw new AttemptError(`connection closed after ${formatBytes(progress.bytes)}${progress.total === null ? '' : ` of ${formatBytes(progress.total)}`}`, 'retry');
  }
  return { resumed };
}

function sleep(ms: number, signal: AbortSignal, words: DownloadWords): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new AttemptError(words.abandoned, 'failed'));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new AttemptError(words.abandoned, 'failed'));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Fetches `url` into the open, empty file `handle`. Throws ImageError naming the URI and the
 * reason: 'refused' when what the server answers will not change by asking again (4xx, too
 * large, a local file that is missing), 'failed' when the retries ran out.
 */
export async function downloadTo(url: URL, handle: FileHandle, opts: DownloadOptions): Promise<Downloaded> {
  const hashAlgorithm = opts.hashAlgorithm ?? 'sha256';
  const words = opts.words ?? CACHE_WORDS;
  const progress: Progress = { handle, bytes: 0, hash: createHash(hashAlgorithm), total: null, validator: null, noRanges: false, hashAlgorithm, words };
  const random = opts.random ?? Math.random;
  let attempts = 0;
  let resumed = 0;
  let failures = 0;
  let furthest = 0;
  for (;;) {
    attempts++;
    try {
      if (url.protocol === 'file:') await copyFile(url, progress, opts);
      else if ((await httpAttempt(url, progress, opts)).resumed) resumed++;
      return { digest: progress.hash.digest('hex'), bytes: progress.bytes, attempts, resumed };
    } catch (caught) {
      const error = caught instanceof AttemptError ? caught : new AttemptError(networkReason(caught, words), 'retry');
      if (opts.signal.aborted) throw new ImageError('failed', `${words.file} ${url.href}: ${words.abandoned}`);
      if (error.outcome !== 'retry') throw new ImageError(error.outcome, `${words.file} ${url.href}: ${error.message}`);
      // A failure after progress (a broken connection resumed later) does not use up the retries.
      if (progress.bytes > furthest) {
        furthest = progress.bytes;
        failures = 0;
      }
      failures++;
      if (failures > opts.retries) {
        throw new ImageError('failed', `${words.file} ${url.href}: ${error.message} (gave up after ${attempts} attempts)`);
      }
      const waitMs = backoffDelayMs(failures, { initialMs: opts.retryInitialMs, maxMs: RETRY_MAX_MS, random });
      opts.logger.warn(`${words.file} download failed, retrying`, {
        uri: url.href, attempt: attempts, reason: error.message, have_bytes: progress.bytes, wait_ms: waitMs,
      });
      try {
        await sleep(waitMs, opts.signal, words);
      } catch {
        throw new ImageError('failed', `${words.file} ${url.href}: ${words.abandoned}`);
      }
    }
  }
}
