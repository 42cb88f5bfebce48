// Fetching the authority document: one GET (conditional when validators are known) over http: or
// https:, or one read of a local file: URL. Every failure becomes a FetchError whose message names
// the URL (without credentials) and the reason, so the caller can log it as is and keep the
// records in force.
import { constants as fsConstants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { fileURLToPath } from 'node:url';
import { createGunzip, type Gunzip } from 'node:zlib';
import { describeFileError } from '../host/file-errors.js';
import { describeNetworkError, httpGet, HttpGetError } from '../host/http-get.js';
import { parseAuthorityUrl, redactUrl } from '../host/url.js';
import { describeError } from '../util/errors.js';

export class FetchError extends Error {
  override name = 'FetchError';
}

/** The authority answered, with a document over the size limit: a rejected document, not an unreachable authority. */
export class DocumentTooLargeError extends FetchError {
  override name = 'DocumentTooLargeError';
}

export interface FetchRequest {
  /** An http:, https: or absolute file: URL (the href of parseAuthorityUrl's result). */
  url: string;
  /** PEM bundle of the only CAs an https authority is checked against; null: the system's roots. */
  caFile: string | null;
  /** http and https: for the whole fetch, connecting, redirects and the body included. */
  timeoutMs: number;
  /** Largest body accepted (after decompression). */
  maxBytes: number;
  /** Validators of the document the caller already has. */
  etag: string | null;
  lastModified: string | null;
  userAgent?: string;
}

export type FetchResult =
  | { kind: 'document'; body: Buffer; etag: string | null; lastModified: string | null }
  | { kind: 'not-modified' };

/** A reason without the URL; fetchDocument prefixes the URL it concerns. */
class Reason extends Error {}
class TooLarge extends Reason {}

// The URL parser is shared with the configuration; re-exported for the callers of the fetch.
export { parseAuthorityUrl, redactUrl };

// ---------------------------------------------------------------------------------------------
// Messages

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

function tooLarge(maxBytes: number): Reason {
  return new TooLarge(`document larger than ${maxBytes} bytes`);
}

/** What a failure says after the URL: its own reason, or the network failure in words. */
function reasonOf(error: unknown): Reason {
  return error instanceof Reason ? error : new Reason(describeNetworkError(error));
}

// ---------------------------------------------------------------------------------------------
// file:

async function fetchFile(url: URL, req: FetchRequest): Promise<FetchResult> {
  const fail = (reason: string | Reason): never => {
    if (reason instanceof TooLarge) throw new DocumentTooLargeError(`${redactUrl(url)}: ${reason.message}`);
    throw new FetchError(`${redactUrl(url)}: ${typeof reason === 'string' ? reason : reason.message}`);
  };
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a FIFO at the path must not hang the fetch waiting for a writer.
    handle = await open(fileURLToPath(url), fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (error) {
    return fail(describeFileError(error));
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) return fail('not a regular file');
    if (stat.size > req.maxBytes) return fail(tooLarge(req.maxBytes));
    // Taken before reading: should the file change while it is read, the next fetch sees a
    // different etag and reads it again, never the other way round.
    const etag = `${stat.size}-${stat.mtimeMs}`;
    if (req.etag !== null && req.etag === etag) return { kind: 'not-modified' };
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > req.maxBytes) return fail(tooLarge(req.maxBytes));
      chunks.push(chunk.subarray(0, bytesRead));
    }
    return { kind: 'document', body: Buffer.concat(chunks, total), etag, lastModified: stat.mtime.toUTCString() };
  } catch (error) {
    if (error instanceof FetchError) throw error;
    return fail(describeFileError(error));
  } finally {
    await handle.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// http: and https:

/** The body of a 200: identity or gzip, at most maxBytes after decoding. Destroys it when done. */
function readDocumentBody(response: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    let settled = false;
    let decoder: Gunzip | undefined;
    const finish = (error: Reason | null, body?: Buffer) => {
      if (settled) return;
      settled = true;
      // Closing the connection is also what stops a body that is too large from arriving.
      response.destroy();
      decoder?.destroy();
      if (error) reject(error);
      else resolve(body as Buffer);
    };
    const encoding = (response.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
    if (encoding !== 'identity' && encoding !== 'gzip' && encoding !== 'x-gzip') {
      return finish(new Reason(`unsupported Content-Encoding "${encoding}"`));
    }
    const declared = Number(response.headers['content-length']);
    if (encoding === 'identity' && Number.isFinite(declared) && declared > maxBytes) return finish(tooLarge(maxBytes));
    const chunks: Buffer[] = [];
    let decoded = 0;
    let raw = 0;
    const collect = (chunk: Buffer) => {
      decoded += chunk.length;
      if (decoded > maxBytes) finish(tooLarge(maxBytes));
      else chunks.push(chunk);
    };
    const done = () => finish(null, Buffer.concat(chunks, decoded));
    // An abort (the fetch's timeout) arrives here as the error the body is destroyed with.
    response.on('error', (error) => finish(reasonOf(error)));
    response.on('close', () => {
      if (!response.complete) finish(new Reason('connection closed before the document was complete'));
    });
    if (encoding === 'identity') {
      response.on('data', collect);
      response.on('end', done);
      return;
    }
    const gunzip = createGunzip();
    decoder = gunzip;
    gunzip.on('data', collect);
    gunzip.on('end', done);
    gunzip.on('error', (error) => finish(new Reason(`corrupt gzip body (${error.message})`)));
    response.on('data', (chunk: Buffer) => {
      // The compressed size is bounded too, so that a stream of empty blocks cannot go on forever.
      raw += chunk.length;
      if (raw > maxBytes) finish(tooLarge(maxBytes));
      else if (!gunzip.write(chunk)) {
        response.pause();
        gunzip.once('drain', () => response.resume());
      }
    });
    response.on('end', () => gunzip.end());
  });
}

async function fetchHttp(original: URL, req: FetchRequest): Promise<FetchResult> {
  const conditional = req.etag !== null || req.lastModified !== null;
  const headers: Record<string, string> = { 'accept-encoding': 'gzip' };
  if (req.userAgent !== undefined) headers['user-agent'] = req.userAgent;
  if (req.etag !== null) headers['if-none-match'] = req.etag;
  if (req.lastModified !== null) headers['if-modified-since'] = req.lastModified;

  const controller = new AbortController();
  // One deadline for the whole fetch: connecting, every redirect and the body.
  const timer = setTimeout(() => controller.abort(new Reason(`timed out after ${seconds(req.timeoutMs)}`)), req.timeoutMs);
  // The URL a failure is reported at: where the redirects had got to.
  let at = original;
  try {
    const answer = await httpGet(original, { headers, caFile: req.caFile, signal: controller.signal });
    at = answer.url;
    if (answer.status === 200) {
      return {
        kind: 'document',
        body: await readDocumentBody(answer.body, req.maxBytes),
        etag: answer.headers.etag ?? null,
        lastModified: answer.headers['last-modified'] ?? null,
      };
    }
    answer.body.destroy();
    if (answer.status === 304) {
      if (!conditional) throw new Reason('HTTP 304 Not Modified to a request that had no validators');
      return { kind: 'not-modified' };
    }
    throw new Reason(`HTTP ${answer.status} ${answer.statusText}`.trimEnd());
  } catch (error) {
    if (error instanceof HttpGetError) at = error.url;
    const reason = reasonOf(error);
    const Kind = reason instanceof TooLarge ? DocumentTooLargeError : FetchError;
    const label = `GET ${redactUrl(at)}` + (at.href === original.href ? '' : ` (redirected from ${redactUrl(original)})`);
    throw new Kind(`${label}: ${reason.message}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------

export async function fetchDocument(req: FetchRequest): Promise<FetchResult> {
  let url: URL;
  try {
    url = parseAuthorityUrl(req.url, process.cwd());
  } catch (error) {
    throw new FetchError(describeError(error));
  }
  return url.protocol === 'file:' ? fetchFile(url, req) : fetchHttp(url, req);
}
