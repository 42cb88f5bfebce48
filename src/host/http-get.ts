// One http: or https: GET, following redirects, shared by the authority fetch and the image
// download. It owns what both need the same way: the connection (a fresh one per request), the
// CA bundle, abort and idle timeout, basic authentication from the URL, and the redirect safety
// rules. It returns the first answer that is not a redirect with its body unread: what a status
// means, how the body is decoded, bounded or stored, and whether to try again is the caller's.
import { readFile } from 'node:fs/promises';
import {
  request as httpRequest, STATUS_CODES, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type RequestOptions,
} from 'node:http';
import { request as httpsRequest } from 'node:https';
import { describeError } from '../util/errors.js';
import { describeFileError } from './file-errors.js';
import { redactUrl } from './url.js';

export const MAX_REDIRECTS = 5;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const DEFAULT_USER_AGENT = 'nodemgr';

export interface HttpGetOptions {
  /** Request headers; the user-agent is "nodemgr" unless given. */
  headers?: Record<string, string>;
  /**
   * PEM bundle of the only CAs an https server is checked against; null: the system's roots. It is
   * read at the first https hop of every call, so that a rotated bundle applies without a restart.
   */
  caFile?: string | null;
  /** Ends the GET at once, the body included; the failure's message is the signal's reason. */
  signal?: AbortSignal;
  /** Abandons the GET when nothing arrives for this long, while the body streams too. */
  idleTimeoutMs?: number;
}

export interface HttpResponse {
  /** The URL that answered, after redirects. */
  url: URL;
  status: number;
  /** The reason phrase sent, or the standard one for the status. */
  statusText: string;
  headers: IncomingHttpHeaders;
  /**
   * The body, to read to its end or to destroy (which closes the connection). A later abort or
   * idle timeout destroys it with an HttpGetError.
   */
  body: IncomingMessage;
}

/**
 * network: no answer (refused, reset, a certificate not trusted); redirect: a redirect that is not
 * followed; timeout: the idle timeout; aborted: the caller's signal; ca: the CA bundle is unusable.
 */
export type HttpGetFailure = 'network' | 'redirect' | 'timeout' | 'aborted' | 'ca';

/** A GET that failed; `url` is the hop it failed at, and the message never shows credentials. */
export class HttpGetError extends Error {
  override name = 'HttpGetError';

  constructor(message: string, readonly kind: HttpGetFailure, readonly url: URL, options?: { cause?: unknown }) {
    super(message, options);
  }
}

// OpenSSL's verification results and Node's host name check: all mean "this is not the server we
// were told to trust", which an operator fixes with the CA file or the URL.
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

/** A network or TLS failure in words ("connection refused"); an HttpGetError's message as it is. */
export function describeNetworkError(error: unknown): string {
  if (error instanceof HttpGetError) return error.message;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const message = describeError(error);
  if (code !== undefined && CERTIFICATE_CODES.has(code)) return `certificate verification failed (${code})`;
  if (code !== undefined && NETWORK_REASONS[code] !== undefined) return NETWORK_REASONS[code];
  if (code !== undefined && !message.includes(code)) return `${message} (${code})`;
  return message;
}

async function readCa(file: string, url: URL): Promise<Buffer> {
  let ca: Buffer;
  try {
    ca = await readFile(file);
  } catch (error) {
    throw new HttpGetError(`cannot read the CA file ${file}: ${describeFileError(error)}`, 'ca', url, { cause: error });
  }
  if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new HttpGetError(`the CA file ${file} holds no PEM certificate`, 'ca', url);
  return ca;
}

function requestOptions(url: URL, options: HttpGetOptions, ca: Buffer | null): RequestOptions {
  return {
    method: 'GET',
    protocol: url.protocol,
    hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? undefined : Number(url.port),
    path: `${url.pathname}${url.search}`,
    headers: { 'user-agent': DEFAULT_USER_AGENT, ...options.headers },
    auth: url.username !== '' || url.password !== ''
      ? `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`
      : undefined,
    // A fresh connection each time: a rotated CA file takes effect at once, and no pooled socket
    // outlives the GET.
    agent: false,
    ...(url.protocol === 'https:' && ca !== null ? { ca } : {}),
  };
}

/** One request and its answer, whatever the status; redirects are httpGet's business. */
function exchange(url: URL, options: HttpGetOptions, ca: Buffer | null): Promise<HttpResponse> {
  const { signal } = options;
  const aborted = () => new HttpGetError(describeError(signal?.reason), 'aborted', url, { cause: signal?.reason });
  if (signal?.aborted) return Promise.reject(aborted());
  return new Promise<HttpResponse>((resolve, reject) => {
    let request: ClientRequest;
    let response: IncomingMessage | null = null;
    const onAbort = () => stop(aborted());
    const detach = () => signal?.removeEventListener('abort', onAbort);
    const stop = (error: HttpGetError) => {
      detach();
      // Before the answer the promise carries the failure; after it, the body does, to its reader.
      if (response === null) reject(error);
      else response.destroy(error);
      request.destroy();
    };
    try {
      request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(requestOptions(url, options, ca));
    } catch (error) {
      return reject(new HttpGetError(describeNetworkError(error), 'network', url, { cause: error }));
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    const idleMs = options.idleTimeoutMs;
    if (idleMs !== undefined) {
      request.setTimeout(idleMs, () => stop(new HttpGetError(`nothing received for ${idleMs / 1000} s`, 'timeout', url)));
    }
    request.on('error', (error) => {
      if (response !== null) return; // the body reports what happens to it
      detach();
      reject(new HttpGetError(describeNetworkError(error), 'network', url, { cause: error }));
    });
    request.on('response', (answer: IncomingMessage) => {
      response = answer;
      answer.once('close', detach);
      const status = answer.statusCode ?? 0;
      resolve({ url, status, statusText: answer.statusMessage || STATUS_CODES[status] || '', headers: answer.headers, body: answer });
    });
    request.end();
  });
}

/** Where a redirect from `from` leads, or why it is not followed. */
function redirectTarget(from: URL, answer: HttpResponse, redirects: number): URL {
  const refuse = (why: string): never => {
    throw new HttpGetError(why, 'redirect', from);
  };
  if (redirects >= MAX_REDIRECTS) return refuse(`too many redirects (more than ${MAX_REDIRECTS})`);
  const location = answer.headers.location;
  if (location === undefined || location === '') return refuse(`HTTP ${answer.status} redirect without a Location`);
  let next: URL;
  try {
    next = new URL(location, from);
  } catch {
    return refuse(`HTTP ${answer.status} redirect to an invalid location ${JSON.stringify(redactUrl(location).slice(0, 200))}`);
  }
  if (next.protocol !== 'http:' && next.protocol !== 'https:') {
    return refuse(`redirect to ${redactUrl(next)} refused: only http: and https: redirects are followed`);
  }
  if (from.protocol === 'https:' && next.protocol === 'http:') return refuse(`redirect to ${redactUrl(next)} refused: it would leave https`);
  // Credentials are for the origin they were configured for, not wherever it points us.
  if (next.username === '' && next.password === '' && next.origin === from.origin) {
    next.username = from.username;
    next.password = from.password;
  }
  return next;
}

/**
 * GETs `url`, following up to MAX_REDIRECTS redirects to http: or https: (never from https to
 * http), and resolves with the first answer that is not a redirect. Rejects with HttpGetError.
 */
export async function httpGet(url: URL, options: HttpGetOptions = {}): Promise<HttpResponse> {
  let current = url;
  const caFile = options.caFile ?? null;
  let ca: Buffer | null = null;
  for (let redirects = 0; ; redirects++) {
    if (current.protocol === 'https:' && caFile !== null && ca === null) ca = await readCa(caFile, current);
    const answer = await exchange(current, options, ca);
    if (!REDIRECTS.has(answer.status)) return answer;
    // A redirect's body is not wanted; destroying it closes its connection.
    answer.body.destroy();
    current = redirectTarget(current, answer, redirects);
  }
}
