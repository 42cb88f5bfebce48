// The node's image cache: one directory of image, kernel, initrd and data files fetched from
// URIs, and index.json, which lists them. One download per URI however many callers ask at once;
// after each add the least recently used entries that no sliver uses are evicted until the cache
// is back under its bound. The daemon is the only writer (the API serves the CLI).
import { setMaxListeners } from 'node:events';
import { chmod, open, rename, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from '../log.js';
import { downloadTo } from './download.js';
import {
  automaticImageName, checkAddRequest, conflictWithEntry, formatBytes, formatOfHeader, ImageError, parseImageUri, planEviction,
  type AddRequest, type CheckedAdd, type ImageEntry, type ImageType,
} from './index.js';
import { FILE_MODE, indexWriter, makeDirectory, readHeader, recover } from './store.js';
import { describeError } from '../util/errors.js';
import { serialQueue } from '../util/serial.js';

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

let sequence = 0;

export async function openImageCache(opts: ImageCacheOptions): Promise<ImageCache> {
  const dir = resolve(opts.dir);
  const { logger } = opts;
  const now = opts.now ?? (() => new Date());
  const retries = opts.retries ?? 4;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const retryInitialMs = opts.retryInitialMs ?? 1000;
  if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes <= 0) throw new Error(`image cache ${dir}: maxBytes must be a whole number > 0, got ${opts.maxBytes}`);

  await makeDirectory(dir);
  const recovered = await recover(dir, logger);
  const entries = new Map(recovered.entries.map((e) => [e.name, e]));
  /** Downloads in progress, by normalised URI, and the names they will take. */
  const downloads = new Map<string, Promise<ImageEntry>>();
  const pendingNames = new Map<string, string>();
  const closing = new AbortController();
  // Every download listens to it; there may be many at once.
  setMaxListeners(0, closing.signal);

  // Changes that await between deciding and changing the entries (an add's eviction plan and
  // rename) are made one at a time; the index is written after each change, several at once.
  const changes = serialQueue();
  const exclusive = <T>(work: () => Promise<T>): Promise<T> => changes.run(work);
  const index = indexWriter(dir, () => [...entries.values()]);
  const persist = index.write;
  if (recovered.changed) await persist();
  const total = () => [...entries.values()].reduce((sum, e) => sum + e.bytes, 0);
  logger.info('image cache open', { dir, entries: entries.size, bytes: total(), max_bytes: opts.maxBytes });
  if (total() > opts.maxBytes) {
    logger.warn('image cache holds more than its bound; the next add evicts unused entries', { dir, bytes: total(), max_bytes: opts.maxBytes });
  }

  const byUri = (uri: string): ImageEntry | undefined => [...entries.values()].find((e) => e.uri === uri);
  const find = (ref: string): ImageEntry | undefined => {
    const named = entries.get(ref);
    if (named) return named;
    const url = parseImageUri(ref);
    return typeof url === 'string' ? undefined : byUri(url.href);
  };
  const copy = (e: ImageEntry): ImageEntry => ({ ...e });
  /** The names of the entries slivers refer to, by name or by URI. */
  const inUse = (): Set<string> => {
    const used = new Set<string>();
    for (const ref of opts.inUse()) {
      const entry = find(ref);
      if (entry) used.add(entry.name);
    }
    return used;
  };
  const touch = async (entry: ImageEntry): Promise<ImageEntry> => {
    const current = entries.get(entry.name);
    if (!current) return copy(entry);
    current.lastUsed = now().toISOString();
    await persist();
    return copy(current);
  };

  const fetchInto = async (req: CheckedAdd): Promise<ImageEntry> => {
    const temp = join(dir, `.${req.name}.${process.pid}.${++sequence}.part`);
    const started = Date.now();
    const handle = await open(temp, 'wx', FILE_MODE);
    let committed = false;
    try {
      let got;
      try {
        got = await downloadTo(req.url, handle, {
          maxBytes: opts.maxBytes, retries, timeoutMs, retryInitialMs, logger, signal: closing.signal,
        });
        await handle.sync();
      } finally {
        await handle.close();
      }
      if (req.sha256 !== null && got.sha256 !== req.sha256) {
        throw new ImageError('refused', `image ${req.uri}: checksum mismatch: expected sha256 ${req.sha256}, got ${got.sha256}; nothing kept`);
      }
      let format = 'raw';
      if (req.type === 'image') {
        const header = formatOfHeader(await readHeader(temp));
        if ('refused' in header) throw new ImageError('refused', `image ${req.uri}: ${header.refused}`);
        format = header.format;
      }
      // umask may have taken bits off the mode given to open.
      await chmod(temp, FILE_MODE);
      const entry = await exclusive(async () => {
        const plan = planEviction([...entries.values()], { name: req.name, bytes: got.bytes }, opts.maxBytes, inUse());
        if ('refused' in plan) throw new ImageError('refused', `image ${req.uri}: not kept: ${plan.refused}`);
        const at = now().toISOString();
        const entry: ImageEntry = {
          name: req.name, uri: req.uri, type: req.type, description: req.description, sha256: got.sha256, bytes: got.bytes,
          path: join(dir, req.name), format, added: at, lastUsed: at,
        };
        await rename(temp, entry.path);
        committed = true;
        for (const old of plan.evict) entries.delete(old.name);
        entries.set(entry.name, entry);
        for (const old of plan.evict) {
          await unlink(old.path).catch((error: NodeJS.ErrnoException) => {
            if (error.code !== 'ENOENT') logger.warn('evicted image file not removed', { image: old.name, path: old.path, error: error.message });
          });
          logger.info('image evicted', { image: old.name, uri: old.uri, bytes: old.bytes, last_used: old.lastUsed, for: entry.name });
        }
        return entry;
      });
      // The index's durable write syncs the directory, so the rename above is durable with it.
      await persist();
      const seconds = (Date.now() - started) / 1000;
      logger.info('image added', {
        image: entry.name, uri: entry.uri, type: entry.type, format, bytes: entry.bytes, sha256: entry.sha256,
        seconds: Number(seconds.toFixed(3)), mb_per_s: seconds > 0 ? Number((entry.bytes / 1e6 / seconds).toFixed(1)) : null,
        attempts: got.attempts, resumed: got.resumed,
      });
      return copy(entry);
    } catch (error) {
      if (!committed) await unlink(temp).catch(() => undefined);
      if (error instanceof ImageError) throw error;
      throw new ImageError('failed', `image ${req.uri}: ${describeError(error)}`);
    }
  };

  const add = async (request: AddRequest): Promise<ImageEntry> => {
    if (closing.signal.aborted) throw new ImageError('failed', `image ${String(request.uri)}: the image cache is closed`);
    const req = checkAddRequest(request);
    const agree = (entry: ImageEntry): ImageEntry => {
      const conflict = conflictWithEntry(req, entry);
      if (conflict !== null) throw new ImageError('invalid', `image ${req.uri}: ${conflict}`);
      if (request.name !== undefined && request.name !== '' && request.name !== entry.name) {
        throw new ImageError('invalid', `image ${req.uri}: cached already under the name ${entry.name}, not ${request.name}`);
      }
      return entry;
    };
    const cached = byUri(req.uri);
    if (cached) return touch(agree(cached));
    const running = downloads.get(req.uri);
    if (running) return agree(await running);
    const holder = entries.get(req.name);
    if (holder) throw new ImageError('invalid', `image ${req.uri}: the name ${req.name} is taken by ${holder.uri}; give another name`);
    const pending = pendingNames.get(req.name);
    if (pending !== undefined) throw new ImageError('invalid', `image ${req.uri}: the name ${req.name} is taken by ${pending}, being fetched; give another name`);
    logger.info('image download started', { image: req.name, uri: req.uri, type: req.type });
    const job = fetchInto(req).finally(() => {
      downloads.delete(req.uri);
      pendingNames.delete(req.name);
    });
    downloads.set(req.uri, job);
    pendingNames.set(req.name, req.uri);
    job.catch((error: Error) => logger.error('image download failed', { image: req.name, uri: req.uri, error: error.message }));
    return job;
  };

  return {
    add,

    list: () => [...entries.values()].sort((a, b) => (a.name < b.name ? -1 : 1)).map(copy),

    async remove(ref) {
      const entry = await exclusive(async () => {
        const found = find(ref);
        if (!found) throw new ImageError('not-found', `image ${JSON.stringify(ref.slice(0, 200))}: no cached image of that name or URI`);
        if (inUse().has(found.name)) throw new ImageError('in-use', `image ${found.name} (${found.uri}): in use by a sliver; not removed`);
        entries.delete(found.name);
        // Before the next change: an add of the same name may put a new file there.
        await unlink(found.path).catch((error: NodeJS.ErrnoException) => {
          if (error.code !== 'ENOENT') logger.warn('removed image file not deleted', { image: found.name, path: found.path, error: error.message });
        });
        return found;
      });
      // A crash before this write leaves an entry without its file, which the next start drops.
      await persist();
      logger.info('image removed', { image: entry.name, uri: entry.uri, bytes: entry.bytes });
      return copy(entry);
    },

    async resolve(ref, type) {
      const shown = JSON.stringify(ref.slice(0, 200));
      let entry = find(ref);
      if (!entry) {
        if (!isImageUri(ref)) throw new ImageError('not-found', `image ${shown}: no cached image of that name (add it, or give a URI)`);
        const url = parseImageUri(ref);
        if (typeof url === 'string') throw new ImageError('invalid', `image ${shown}: ${url}`);
        const name = automaticImageName(url, (n) => {
          const holder = entries.get(n)?.uri ?? pendingNames.get(n);
          return holder !== undefined && holder !== url.href;
        });
        // A download of it in progress (under whatever name its add gave) is joined.
        entry = await (downloads.get(url.href) ?? add({ uri: ref, type, name }));
      }
      if (entry.type !== type) throw new ImageError('invalid', `image ${shown}: it is cached as type ${entry.type} (name ${entry.name}), not ${type}`);
      return touch(entry);
    },

    async close() {
      closing.abort();
      await Promise.allSettled([...downloads.values()]);
      await changes.idle();
      await index.idle();
    },
  };
}

export { readImageIndex } from './store.js';
export { formatBytes, ImageError };
export type { ImageEntry, ImageType };
