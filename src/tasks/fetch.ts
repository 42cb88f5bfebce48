// A task's files, fetched into its spool directory: what an XSDL Location names (an http(s) or
// file: URL, or an entry of the image cache), its hash checked on the bytes as fetched (XenBEE's
// rule), then its compression undone (gzip by zlib, bzip2 by the bzip2 program) and its mode set.
// A file is whole under its name or absent: it is written under a temporary name and renamed.
import { chmod, open, rename, rm } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { downloadTo, type DownloadWords } from '../images/download.js';
import type { Logger } from '../log.js';
import { describeError } from '../util/errors.js';
import { transcode } from './compression.js';
import type { Location, XsdlUri } from './xsdl-types.js';

export interface FetchDeps {
  /** The path of the image cache's entry of that name, or null when there is none. */
  readonly cachedFile: (name: string) => string | null;
  /** The largest file fetched, as fetched (compressed). */
  readonly maxBytes: number;
  /** Further attempts of a failing download. */
  readonly retries: number;
  /** An attempt that receives nothing for this long is abandoned. */
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
  readonly logger: Logger;
}

/** A file that could not be fetched; the message names it and says why. */
export class FetchError extends Error {
  override readonly name = 'FetchError';
}

const STAGING_WORDS: DownloadWords = {
  file: 'file',
  limit: 'the most a task may stage in (task_stage_max_bytes)',
  abandoned: 'abandoned (the task was terminated or the daemon is stopping)',
};

/** The location's source as a person reads it: the URL, or `cache:<name>`. */
export function describeUri(uri: XsdlUri): string {
  return uri.kind === 'url' ? uri.href : `cache:${uri.name}`;
}

/** Fetches what `location` names into `dest`; returns its size after decompression. */
export async function fetchLocation(location: Location, dest: string, deps: FetchDeps): Promise<{ bytes: number }> {
  const fetched = `${dest}.fetching`;
  const unpacked = `${dest}.unpacking`;
  try {
    const digest = await download(location.uri, fetched, deps, location.hash?.algorithm ?? 'sha256');
    if (location.hash !== null && digest !== location.hash.hex) {
      throw new FetchError(`${describeUri(location.uri)}: checksum mismatch: expected ${location.hash.algorithm} ${location.hash.hex}, got ${digest}`);
    }
    if (location.compression === null) {
      await rename(fetched, dest);
    } else {
      await transcode('unpack', location.compression, fetched, unpacked, deps.signal).catch((error: unknown) => {
        throw new FetchError(`${describeUri(location.uri)}: not ${location.compression} data, or damaged: ${describeError(error)}`);
      });
      await rename(unpacked, dest);
    }
    if (location.mode !== null) await chmod(dest, location.mode);
    const handle = await open(dest, 'r');
    try {
      return { bytes: (await handle.stat()).size };
    } finally {
      await handle.close();
    }
  } finally {
    await rm(fetched, { force: true });
    await rm(unpacked, { force: true });
  }
}

async function download(uri: XsdlUri, path: string, deps: FetchDeps, hashAlgorithm: string): Promise<string> {
  let url: URL;
  if (uri.kind === 'url') {
    url = new URL(uri.href);
  } else {
    const cached = deps.cachedFile(uri.name);
    if (cached === null) throw new FetchError(`cache:${uri.name}: no entry of that name in the image cache`);
    url = pathToFileURL(cached);
  }
  const handle = await open(path, 'w', 0o600);
  try {
    const got = await downloadTo(url, handle, {
      maxBytes: deps.maxBytes, retries: deps.retries, timeoutMs: deps.timeoutMs, retryInitialMs: 1000,
      logger: deps.logger, signal: deps.signal, hashAlgorithm, words: STAGING_WORDS,
    }).catch((error: unknown) => {
      throw new FetchError(describeError(error));
    });
    return got.digest;
  } finally {
    await handle.close();
  }
}
