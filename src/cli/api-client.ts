// The local API as the commands reach it: one call over the daemon's Unix socket, with the
// `xmlrpc` package's client, as the calling user (the daemon sees this process's uid). A fault
// comes back as an Error with its code and message; a daemon that is not there is said so.
import { createRequire } from 'node:module';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, type Config } from '../config/config.js';
import { describeError } from '../util/errors.js';

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

/** A command line that cannot be run as written: its message, then the command's usage. */
export class CommandUsageError extends Error {}

/**
 * What a subcommand (image, task, instance) says of its failure, and its exit status: 2 with the
 * usage for a usage error or a configuration error, 1 with the fault's code for anything else.
 */
export function reportCommandFailure(error: unknown, usage: string, what: string): number {
  if (error instanceof CommandUsageError) {
    process.stderr.write(`nodemgr: ${error.message}\n\n${usage}`);
    return 2;
  }
  if (error instanceof ConfigError) {
    process.stderr.write(`nodemgr: configuration error: ${error.message}\n`);
    return 2;
  }
  const fault = error instanceof ApiCallFault ? ` (fault ${error.code})` : '';
  process.stderr.write(`nodemgr: ${what}: ${describeError(error)}${fault}\n`);
  return 1;
}

/** The command of a command line: its first argument that is not an option (or --config's value). */
export function commandOf(argv: readonly string[]): string | null {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--config') i++;
    else if (!arg.startsWith('-')) return arg;
  }
  return null;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** A subcommand's command line, parsed by node's parseArgs; what it cannot parse is a usage error. */
export function parseCommandLine<O extends Options>(argv: string[], options: O) {
  try {
    return parseArgs({ args: argv, allowPositionals: true, options });
  } catch (error) {
    throw new CommandUsageError(describeError(error));
  }
}
