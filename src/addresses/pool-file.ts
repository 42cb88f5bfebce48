// The pool file on disk: read when first asked for and again only when it changed (inode, size,
// modification or change time), so an edited file is in force for the next allocation without a
// restart, and an unchanged one costs one stat. Its problems are logged once per version.
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { parseAddressPool, type ParsedAddressPool } from './pool.js';
import { describeError } from '../util/errors.js';

export interface AddressPoolFile {
  readonly path: string;
  /** The pool as the file says now; rejects with a reason naming the file when it cannot be read. */
  entries(): Promise<ParsedAddressPool>;
}

const errorCode = (e: unknown) => (e as NodeJS.ErrnoException | null)?.code;

export function createAddressPoolFile(path: string, logger: Logger): AddressPoolFile {
  let cached: { version: string; pool: ParsedAddressPool } | null = null;
  // The last failure logged, so that a file missing for an hour is one log line, not one per sliver.
  let failureLogged: string | null = null;
  let loading: Promise<ParsedAddressPool> | null = null;

  const fail = (e: unknown): never => {
    const code = errorCode(e);
    const message =
      code === 'ENOENT'
        ? `address pool file ${path} not found: libvirt slivers cannot get addresses`
        : `address pool file ${path} cannot be read: ${describeError(e)}`;
    cached = null;
    if (failureLogged !== message) logger.error('address pool unavailable', { file: path, reason: message });
    failureLogged = message;
    throw new Error(message);
  };

  async function load(): Promise<ParsedAddressPool> {
    const st = await stat(path, { bigint: true }).catch(fail);
    if (!st.isFile()) fail(new Error('not a regular file'));
    const version = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    if (cached?.version === version) return cached.pool;
    // Stat before read: a change while reading gives a newer version, which the next call reads again.
    const text = await readFile(path, 'utf8').catch(fail);
    const pool = parseAddressPool(text, path);
    cached = { version, pool };
    failureLogged = null;
    logger.info('address pool loaded', { file: path, entries: pool.entries.length, problems: pool.problems.length });
    for (const problem of pool.problems) logger.warn('address pool line ignored', { reason: problem });
    return pool;
  }

  return {
    path,
    entries() {
      // Callers arriving while the file is being read share that read.
      loading ??= load().finally(() => {
        loading = null;
      });
      return loading;
    },
  };
}
