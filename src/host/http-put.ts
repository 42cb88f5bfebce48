// One http: or https: PUT of a file, for a task's stage-out (XenBEE sent its outputs with curl's
// upload, which PUTs). No redirect is followed: a PUT's body is not sent twice to a place the
// target did not name. Any 2xx answer is success; anything else fails with the status.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { request as httpRequest, STATUS_CODES } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { pipeline } from 'node:stream/promises';
import { describeError } from '../util/errors.js';
import { describeNetworkError } from './http-get.js';

export interface HttpPutOptions {
  readonly signal?: AbortSignal;
  /** Abandons the PUT when nothing moves either way for this long. */
  readonly idleTimeoutMs?: number;
  readonly headers?: Readonly<Record<string, string>>;
}

/** Sends the file at `path` to `url`; throws an Error whose message says what went wrong. */
export async function httpPut(url: URL, path: string, options: HttpPutOptions = {}): Promise<void> {
  const { size } = await stat(path);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const request = send(url, {
    method: 'PUT',
    headers: { 'content-length': String(size), 'content-type': 'application/octet-stream', 'user-agent': 'nodemgr', ...options.headers },
    agent: false,
    signal: options.signal,
  });
  if (options.idleTimeoutMs !== undefined) {
    const ms = options.idleTimeoutMs;
    request.setTimeout(ms, () => request.destroy(new Error(`nothing moved for ${ms / 1000} s`)));
  }
  let early: { status: number; text: string } | null = null;
  const answered = new Promise<{ status: number; text: string }>((resolve, reject) => {
    request.on('response', (response) => {
      const status = response.statusCode ?? 0;
      early = { status, text: response.statusMessage || STATUS_CODES[status] || '' };
      response.resume(); // the body says nothing we use; read it so the connection ends
      response.on('end', () => resolve({ status, text: response.statusMessage || STATUS_CODES[status] || '' }));
      response.on('error', reject);
    });
    request.on('error', reject);
  });
  let answer: { status: number; text: string };
  try {
    [, answer] = await Promise.all([pipeline(createReadStream(path), request), answered]);
  } catch (error) {
    if (options.signal?.aborted) throw new Error(`abandoned: ${describeError(options.signal.reason)}`);
    // A server that refuses early closes the connection while the body is still going out: its
    // answer says more than the broken pipe.
    if (early === null) throw new Error(describeNetworkError(error));
    answer = early;
  }
  const { status, text } = answer;
  if (status < 200 || status > 299) throw new Error(`HTTP ${status} ${text}`.trim());
}
