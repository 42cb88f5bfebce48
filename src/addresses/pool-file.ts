// The pool file on disk: read when first asked for and again only when it changed (see
// host/changed-file.ts), so an edited file is in force for the next allocation without a restart.
// Its problems are logged once per version.
import type { Logger } from '../log.js';
import { rereadWhenChanged } from '../host/changed-file.js';
import { parseAddressPool, type ParsedAddressPool } from './pool.js';
import { describeError } from '../util/errors.js';

export interface AddressPoolFile {
  readonly path: string;
  /** The pool as the file says now; rejects with a reason naming the file when it cannot be read. */
  entries(): Promise<ParsedAddressPool>;
}

const errorCode = (e: unknown) => (e as NodeJS.ErrnoException | null)?.code;

export function createAddressPoolFile(path: string, logger: Logger): AddressPoolFile {
  // The last failure logged, so that a file missing for an hour is one log line, not one per sliver.
  let failureLogged: string | null = null;
  const file = rereadWhenChanged(path, (text) => {
    const pool = parseAddressPool(text, path);
    failureLogged = null;
    logger.info('address pool loaded', { file: path, entries: pool.entries.length, problems: pool.problems.length });
    for (const problem of pool.problems) logger.warn('address pool line ignored', { reason: problem });
    return pool;
  });

  return {
    path,
    entries: () =>
      file.current().catch((e: unknown) => {
        const message =
          errorCode(e) === 'ENOENT'
            ? `address pool file ${path} not found: libvirt slivers cannot get addresses`
            : `address pool file ${path} cannot be read: ${describeError(e)}`;
        if (failureLogged !== message) logger.error('address pool unavailable', { file: path, reason: message });
        failureLogged = message;
        throw new Error(message);
      }),
  };
}
