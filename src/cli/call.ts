// `nodemgr call METHOD [ARG...]`: one call to the local API over its Unix socket, with the `xmlrpc`
// package's client, as the calling user (the daemon sees this process's uid). Each ARG is read as
// JSON when it parses as JSON (numbers, arrays, structs), else taken as a string.
import { createRequire } from 'node:module';
import type { Config } from '../config/config.js';

const xmlrpc = createRequire(import.meta.url)('xmlrpc') as typeof import('xmlrpc');

export function parseCallArgument(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

export async function runCall(config: Config, method: string, args: readonly string[], options: { timeoutMs?: number } = {}): Promise<number> {
  const client = xmlrpc.createClient({ socketPath: config.apiSocket, path: '/RPC2' } as Parameters<typeof xmlrpc.createClient>[0]);
  const params = args.map(parseCallArgument);
  try {
    const result = await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer from ${config.apiSocket} within ${(options.timeoutMs ?? 30_000) / 1000} s`)), options.timeoutMs ?? 30_000);
      client.methodCall(method, params, (error: unknown, value: unknown) => {
        clearTimeout(timer);
        if (error) reject(error);
        else resolve(value);
      });
    });
    process.stdout.write((typeof result === 'string' ? result : JSON.stringify(result, null, 2)) + '\n');
    return 0;
  } catch (error) {
    const fault = error as { faultCode?: number; faultString?: string; code?: string; message?: string };
    if (typeof fault.faultCode === 'number') {
      process.stderr.write(`nodemgr: fault ${fault.faultCode}: ${fault.faultString}\n`);
      return 1;
    }
    const why = fault.code === 'ENOENT' || fault.code === 'ECONNREFUSED' ? `the daemon's API socket ${config.apiSocket} is not answering (${fault.code}); is the daemon running?` : fault.message;
    process.stderr.write(`nodemgr: ${why}\n`);
    return 1;
  }
}
