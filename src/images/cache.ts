// The node's image cache: one directory of image, kernel, initrd and data files fetched from
// URIs, and index.json, which lists them. One download per URI however many callers ask at once;
// after each add the least recently used entries that no sliver uses are evicted until the cache
// is back under its bound (cache-add.ts). The daemon is the only writer (the API serves the CLI).
import { setMaxListeners } from 'node:events';
import { resolve } from 'node:path';
import type { Logger } from '../log.js';
import { serialQueue } from '../util/serial.js';
import { addImage } from './cache-add.js';
import { copyEntry, findEntry, namesInUse, totalBytes, touchEntry, type CacheState } from './cache-state.js';
import { automaticImageName, ImageError, parseImageUri, type AddRequest, type ImageEntry, type ImageType } from './index.js';
import { deleteFile, indexWriter, makeDirectory, recover } from './store.js';

export interface ImageCache {
  /**
   * Fetches `uri` into the cache. Concurrent adds of one URI share one download; an entry of that
   * URI that exists already is returned (and counts as used now).
   */
  add(req: AddRequest): Promise<ImageEntry>;
  /** Every entry, by name. */
  list(): readonly ImageEntry[];
  /** Removes an entry by name or URI; refused while a sliver uses it. */
  remove(ref: string): Promise<ImageEntry>;
  /** The entry a name or URI refers to, fetched first when a URI is not cached yet; its type must be `type`. */
  resolve(ref: string, type: ImageType): Promise<ImageEntry>;
  /** Abandons the downloads in progress and waits for the index to be written. */
  close(): Promise<void>;
}

export interface ImageCacheOptions {
  dir: string;
  maxBytes: number;
  /**
   * What slivers refer to (entry names, or URIs as a slice's vref may give them): those entries
   * are never evicted, never removed.
   */
  inUse: () => ReadonlySet<string>;
  logger: Logger;
  /** Retries of a failing download (network errors, 408, 429, 5xx). Default 4. */
  retries?: number;
  /** A download attempt that receives nothing for this long is abandoned. Default 60 s. */
  timeoutMs?: number;
  /** Wait before the first retry, doubling after each further failure. Default 1 s. */
  retryInitialMs?: number;
  now?: () => Date;
}

/** A reference written as a URI (scheme:...) rather than as an entry's name, which has no colon. */
const isImageUri = (ref: string): boolean => /^[a-z][a-z0-9+.-]*:/i.test(ref);

export async function openImageCache(opts: ImageCacheOptions): Promise<ImageCache> {
  const dir = resolve(opts.dir);
  const { logger, maxBytes } = opts;
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new Error(`image cache ${dir}: maxBytes must be a whole number > 0, got ${maxBytes}`);

  await makeDirectory(dir);
  const recovered = await recover(dir, logger);
  const entries = new Map(recovered.entries.map((e) => [e.name, e]));
  const index = indexWriter(dir, () => [...entries.values()]);
  const state: CacheState = {
    dir, maxBytes, logger, now: opts.now ?? (() => new Date()), referenced: opts.inUse,
    download: { retries: opts.retries ?? 4, timeoutMs: opts.timeoutMs ?? 60_000, retryInitialMs: opts.retryInitialMs ?? 1000 },
    entries, downloads: new Map(), pendingNames: new Map(), closing: new AbortController(), changes: serialQueue(), persist: index.write,
  };
  // Every download listens to it; there may be many at once.
  setMaxListeners(0, state.closing.signal);
  if (recovered.changed) await state.persist();
  logger.info('image cache open', { dir, entries: entries.size, bytes: totalBytes(state), max_bytes: maxBytes });
  if (totalBytes(state) > maxBytes) {
    logger.warn('image cache holds more than its bound; the next add evicts unused entries', { dir, bytes: totalBytes(state), max_bytes: maxBytes });
  }

  return {
    add: (request) => addImage(state, request),
    list: () => [...entries.values()].sort((a, b) => (a.name < b.name ? -1 : 1)).map(copyEntry),
    remove: (ref) => removeImage(state, ref),
    resolve: (ref, type) => resolveImage(state, ref, type),
    async close() {
      state.closing.abort();
      await Promise.allSettled([...state.downloads.values()]);
      await state.changes.idle();
      await index.idle();
    },
  };
}

async function removeImage(state: CacheState, ref: string): Promise<ImageEntry> {
  const { logger } = state;
  const entry = await state.changes.run(async () => {
    const found = findEntry(state, ref);
    if (!found) throw new ImageError('not-found', `image ${JSON.stringify(ref.slice(0, 200))}: no cached image of that name or URI`);
    if (namesInUse(state).has(found.name)) throw new ImageError('in-use', `image ${found.name} (${found.uri}): in use by a sliver; not removed`);
    state.entries.delete(found.name);
    // Before the next change: an add of the same name may put a new file there.
    const failed = await deleteFile(found.path);
    if (failed !== null) logger.warn('removed image file not deleted', { image: found.name, path: found.path, error: failed });
    return found;
  });
  // A crash before this write leaves an entry without its file, which the next start drops.
  await state.persist();
  logger.info('image removed', { image: entry.name, uri: entry.uri, bytes: entry.bytes });
  return copyEntry(entry);
}

async function resolveImage(state: CacheState, ref: string, type: ImageType): Promise<ImageEntry> {
  const shown = JSON.stringify(ref.slice(0, 200));
  let entry = findEntry(state, ref);
  if (!entry) {
    if (!isImageUri(ref)) throw new ImageError('not-found', `image ${shown}: no cached image of that name (add it, or give a URI)`);
    const url = parseImageUri(ref);
    if (typeof url === 'string') throw new ImageError('invalid', `image ${shown}: ${url}`);
    const name = automaticImageName(url, (n) => {
      const holder = state.entries.get(n)?.uri ?? state.pendingNames.get(n);
      return holder !== undefined && holder !== url.href;
    });
    // A download of it in progress (under whatever name its add gave) is joined.
    entry = await (state.downloads.get(url.href) ?? addImage(state, { uri: ref, type, name }));
  }
  if (entry.type !== type) throw new ImageError('invalid', `image ${shown}: it is cached as type ${entry.type} (name ${entry.name}), not ${type}`);
  return touchEntry(state, entry);
}

export { readImageIndex } from './store.js';
export { ImageError };
export type { ImageEntry, ImageType };
