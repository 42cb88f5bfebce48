// The local API as the commands reach it: one call over the daemon's Unix socket, with the
// `xmlrpc` package's client, as the calling user (the daemon sees this process's uid). A fault
// comes back as an Error with its code and message; a daemon that is not there is said so.
import { createRequire } from 'node:module';
import type { Config } from '../config/config.js';

const xmlrpc = createRequire(import.meta.url)('xmlrpc') as typeof import('xmlrpc');

/** A fault the daemon answered with. */
export class ApiCallFault extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** The method's answer; `timeoutMs` null waits as long as it takes. */
export async function callApi(config: Config, method: string, params: readonly unknown[], timeoutMs: number | null = 30_000): Promise<unknown> {
  const client = xmlrpc.createClient({ socketPath: config.apiSocket, path: '/RPC2' } as Parameters<typeof xmlrpc.createClient>[0]);
  try {
    return await new Promise<unknown>((resolve, reject) => {
      const timer = timeoutMs === null ? null
        : setTimeout(() => reject(new Error(`no answer from ${config.apiSocket} within ${timeoutMs / 1000} s`)), timeoutMs);
      client.methodCall(method, [...params], (error: unknown, value: unknown) => {
        if (timer) clearTimeout(timer);
        if (error) reject(error);
        else resolve(value);
      });
    });
  } catch (error) {
    const e = error as { faultCode?: number; faultString?: string; code?: string; message?: string };
    if (typeof e.faultCode === 'number') throw new ApiCallFault(e.faultCode, e.faultString ?? `fault ${e.faultCode}`);
    if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
      throw new Error(`the daemon's API socket ${config.apiSocket} is not answering (${e.code}); is the daemon running?`);
    }
    throw new Error(e.message ?? String(error));
  }
}
