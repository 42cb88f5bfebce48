// Fetching the authority document: one GET (conditional when validators are known) over http: or
// https:, or one read of a local file: URL. Every failure becomes a FetchError whose message names
// the URL (without credentials) and the reason, so the caller can log it as is and keep the
// records in force.
import { constants as fsConstants } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { request as httpRequest, STATUS_CODES, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { fileURLToPath } from 'node:url';
import { createGunzip, type Gunzip } from 'node:zlib';
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

const MAX_REDIRECTS = 5;
const DEFAULT_USER_AGENT = 'nodemgr';

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

// OpenSSL's verification results and Node's host name check: all mean "this is not the
// authority we were told to trust", which an operator fixes with the CA file or the URL.
const CERTIFICATE_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_CRL', 'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE', 'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE', 'CERT_NOT_YET_VALID', 'CERT_HAS_EXPIRED', 'CRL_NOT_YET_VALID', 'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD', 'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED', 'INVALID_CA', 'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE', 'CERT_UNTRUSTED', 'CERT_REJECTED',
  'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID', 'ERR_TLS_CERT_ALTNAME_FORMAT',
]);

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset by the server',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed (temporary)',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  EPIPE: 'connection closed by the server',
};

function networkReason(error: unknown): Reason {
  if (error instanceof Reason) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const message = describeError(error);
  if (code !== undefined && CERTIFICATE_CODES.has(code)) return new Reason(`certificate verification failed (${code})`);
  if (code !== undefined && NETWORK_REASONS[code] !== undefined) return new Reason(NETWORK_REASONS[code]);
  if (code !== undefined && !message.includes(code)) return new Reason(`${message} (${code})`);
  return new Reason(message);
}

function fileReason(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT': return 'no such file';
    case 'ENOTDIR': return 'no such file (a component of the path is not a directory)';
    case 'EACCES':
    case 'EPERM': return 'permission denied';
    case 'EISDIR': return 'not a regular file';
    case 'ELOOP': return 'too many levels of symbolic links';
    default: return describeError(error);
  }
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
    return fail(fileReason(error));
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
    return fail(fileReason(error));
  } finally {
    await handle.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// http: and https:

interface Exchange {
  status: number;
  statusText: string;
  headers: IncomingHttpHeaders;
  /** Only for 200. */
  body: Buffer | null;
}

interface ExchangeOptions {
  headers: Record<string, string>;
  ca: Buffer | null;
  maxBytes: number;
  signal: AbortSignal;
  timeoutReason: string;
}

/** One request and its response; redirects are the caller's business. */
function exchange(url: URL, options: ExchangeOptions): Promise<Exchange> {
  return new Promise<Exchange>((resolve, reject) => {
    let settled = false;
    let request: ClientRequest | undefined;
    let decoder: Gunzip | undefined;
    const finish = (error: Reason | null, value?: Exchange) => {
      if (settled) return;
      settled = true;
      options.signal.removeEventListener('abort', onAbort);
      // Closing the connection is also what stops a body that is too large from arriving.
      request?.destroy();
      decoder?.destroy();
      if (error) reject(error);
      else resolve(value as Exchange);
    };
    const onAbort = () => finish(new Reason(options.timeoutReason));
    if (options.signal.aborted) return onAbort();
    options.signal.addEventListener('abort', onAbort, { once: true });

    const auth = url.username !== '' || url.password !== ''
      ? `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`
      : undefined;
    const common = {
      method: 'GET',
      protocol: url.protocol,
      hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: url.port === '' ? undefined : Number(url.port),
      path: `${url.pathname}${url.search}`,
      headers: options.headers,
      auth,
      // A fresh connection each time: a rotated CA file takes effect at once, and no pooled
      // socket outlives the fetch.
      agent: false as const,
    };
    try {
      request = url.protocol === 'https:'
        ? httpsRequest({ ...common, ...(options.ca ? { ca: options.ca } : {}) })
        : httpRequest(common);
    } catch (error) {
      return finish(networkReason(error));
    }
    request.on('error', (error) => finish(networkReason(error)));
    request.on('response', (response: IncomingMessage) => {
      const status = response.statusCode ?? 0;
      const head = { status, statusText: response.statusMessage || STATUS_CODES[status] || '', headers: response.headers };
      if (status !== 200) {
        finish(null, { ...head, body: null });
        return;
      }
      const encoding = (response.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
      if (encoding !== 'identity' && encoding !== 'gzip' && encoding !== 'x-gzip') {
        finish(new Reason(`unsupported Content-Encoding "${encoding}"`));
        return;
      }
      const declared = Number(response.headers['content-length']);
      if (encoding === 'identity' && Number.isFinite(declared) && declared > options.maxBytes) {
        finish(tooLarge(options.maxBytes));
        return;
      }
      const chunks: Buffer[] = [];
      let decoded = 0;
      let raw = 0;
      const collect = (chunk: Buffer) => {
        decoded += chunk.length;
        if (decoded > options.maxBytes) finish(tooLarge(options.maxBytes));
        else chunks.push(chunk);
      };
      const done = () => finish(null, { ...head, body: Buffer.concat(chunks, decoded) });
      response.on('error', (error) => finish(networkReason(error)));
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
        if (raw > options.maxBytes) finish(tooLarge(options.maxBytes));
        else if (!gunzip.write(chunk)) {
          response.pause();
          gunzip.once('drain', () => response.resume());
        }
      });
      response.on('end', () => gunzip.end());
    });
    request.end();
  });
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

async function fetchHttp(original: URL, req: FetchRequest): Promise<FetchResult> {
  const conditional = req.etag !== null || req.lastModified !== null;
  const headers: Record<string, string> = {
    'user-agent': req.userAgent ?? DEFAULT_USER_AGENT,
    'accept-encoding': 'gzip',
  };
  if (req.etag !== null) headers['if-none-match'] = req.etag;
  if (req.lastModified !== null) headers['if-modified-since'] = req.lastModified;

  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), req.timeoutMs);
  let current = original;
  let ca: Buffer | null = null;
  const label = () =>
    `GET ${redactUrl(current)}` + (current.href === original.href ? '' : ` (redirected from ${redactUrl(original)})`);
  try {
    for (let redirects = 0; ; redirects++) {
      if (current.protocol === 'https:' && req.caFile !== null && ca === null) {
        // Read on every fetch so that a rotated CA bundle applies without a restart.
        try {
          ca = await readFile(req.caFile);
        } catch (error) {
          throw new Reason(`cannot read the CA file ${req.caFile}: ${fileReason(error)}`);
        }
        if (!ca.includes('-----BEGIN CERTIFICATE-----')) {
          throw new Reason(`the CA file ${req.caFile} holds no PEM certificate`);
        }
      }
      const answer = await exchange(current, {
        headers,
        ca,
        maxBytes: req.maxBytes,
        signal: controller.signal,
        timeoutReason: `timed out after ${seconds(req.timeoutMs)}`,
      });
      if (answer.status === 200) {
        return {
          kind: 'document',
          body: answer.body ?? Buffer.alloc(0),
          etag: answer.headers.etag ?? null,
          lastModified: answer.headers['last-modified'] ?? null,
        };
      }
      if (answer.status === 304) {
        if (!conditional) throw new Reason('HTTP 304 Not Modified to a request that had no validators');
        return { kind: 'not-modified' };
      }
      if (!REDIRECTS.has(answer.status)) throw new Reason(`HTTP ${answer.status} ${answer.statusText}`.trimEnd());
      if (redirects >= MAX_REDIRECTS) throw new Reason(`too many redirects (more than ${MAX_REDIRECTS})`);
      const location = answer.headers.location;
      if (location === undefined || location === '') throw new Reason(`HTTP ${answer.status} redirect without a Location`);
      let next: URL;
      try {
        next = new URL(location, current);
      } catch {
        throw new Reason(`HTTP ${answer.status} redirect to an invalid location ${JSON.stringify(redactUrl(location))}`);
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new Reason(`redirect to ${redactUrl(next)} refused: only http: and https: redirects are followed`);
      }
      if (current.protocol === 'https:' && next.protocol === 'http:') {
        throw new Reason(`redirect to ${redactUrl(next)} refused: it would leave https`);
      }
      // Credentials are for the origin they were configured for, not wherever it points us.
      if (next.username === '' && next.password === '' && next.origin === current.origin) {
        next.username = current.username;
        next.password = current.password;
      }
      current = next;
    }
  } catch (error) {
    const reason = networkReason(error);
    const Kind = reason instanceof TooLarge ? DocumentTooLargeError : FetchError;
    throw new Kind(`${label()}: ${reason.message}`, { cause: error });
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
