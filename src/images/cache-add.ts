// Adding to the image cache: one download per URI however many callers ask at once, into a
// temporary file that becomes an entry only once its checksum and header pass; then the least
// recently used entries that no sliver uses are evicted until the cache is back under its bound.
import { chmod, open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError } from '../util/errors.js';
import { copyEntry, entryOfUri, namesInUse, touchEntry, type CacheState } from './cache-state.js';
import { downloadTo, type Downloaded } from './download.js';
import {
  checkAddRequest, conflictWithEntry, formatOfHeader, ImageError, planEviction, type AddRequest, type CheckedAdd, type ImageEntry,
} from './index.js';
import { deleteFile, FILE_MODE, readHeader } from './store.js';

let sequence = 0;

/** See ImageCache.add. */
export async function addImage(state: CacheState, request: AddRequest): Promise<ImageEntry> {
  if (state.closing.signal.aborted) throw new ImageError('failed', `image ${String(request.uri)}: the image cache is closed`);
  const req = checkAddRequest(request);
  const agree = (entry: ImageEntry): ImageEntry => {
    const conflict = conflictWithEntry(req, entry);
    if (conflict !== null) throw new ImageError('invalid', `image ${req.uri}: ${conflict}`);
    if (request.name !== undefined && request.name !== '' && request.name !== entry.name) {
      throw new ImageError('invalid', `image ${req.uri}: cached already under the name ${entry.name}, not ${request.name}`);
    }
    return entry;
  };
  const cached = entryOfUri(state, req.uri);
  if (cached) return touchEntry(state, agree(cached));
  const running = state.downloads.get(req.uri);
  if (running) return agree(await running);
  const holder = state.entries.get(req.name);
  if (holder) throw new ImageError('invalid', `image ${req.uri}: the name ${req.name} is taken by ${holder.uri}; give another name`);
  const pending = state.pendingNames.get(req.name);
  if (pending !== undefined) throw new ImageError('invalid', `image ${req.uri}: the name ${req.name} is taken by ${pending}, being fetched; give another name`);
  const { logger } = state;
  logger.info('image download started', { image: req.name, uri: req.uri, type: req.type });
  const job = fetchInto(state, req).finally(() => {
    state.downloads.delete(req.uri);
    state.pendingNames.delete(req.name);
  });
  state.downloads.set(req.uri, job);
  state.pendingNames.set(req.name, req.uri);
  job.catch((error: Error) => logger.error('image download failed', { image: req.name, uri: req.uri, error: error.message }));
  return job;
}

/** Downloads `req` and makes it an entry; nothing of it is left behind when that fails. */
async function fetchInto(state: CacheState, req: CheckedAdd): Promise<ImageEntry> {
  const temp = join(state.dir, `.${req.name}.${process.pid}.${++sequence}.part`);
  const started = Date.now();
  let committed = false;
  try {
    const fetched = await downloadChecked(state, req, temp);
    const entry = await keepDownloaded(state, req, temp, fetched);
    committed = true;
    // The index's durable write syncs the directory, so the rename into place is durable with it.
    await state.persist();
    const seconds = (Date.now() - started) / 1000;
    state.logger.info('image added', {
      image: entry.name, uri: entry.uri, type: entry.type, format: entry.format, bytes: entry.bytes, sha256: entry.sha256,
      seconds: Number(seconds.toFixed(3)), mb_per_s: seconds > 0 ? Number((entry.bytes / 1e6 / seconds).toFixed(1)) : null,
      attempts: fetched.attempts, resumed: fetched.resumed,
    });
    return copyEntry(entry);
  } catch (error) {
    if (!committed) await deleteFile(temp);
    if (error instanceof ImageError) throw error;
    throw new ImageError('failed', `image ${req.uri}: ${describeError(error)}`);
  }
}

/** A download that passed, and its format ('raw' for all but images). */
type Fetched = Downloaded & { readonly format: string };

/** The file fetched into `temp`, its checksum and (for an image) its header checked. */
async function downloadChecked(state: CacheState, req: CheckedAdd, temp: string): Promise<Fetched> {
  const handle = await open(temp, 'wx', FILE_MODE);
  let got;
  try {
    got = await downloadTo(req.url, handle, { maxBytes: state.maxBytes, ...state.download, logger: state.logger, signal: state.closing.signal });
    await handle.sync();
  } finally {
    await handle.close();
  }
  if (req.sha256 !== null && got.digest !== req.sha256) {
    throw new ImageError('refused', `image ${req.uri}: checksum mismatch: expected sha256 ${req.sha256}, got ${got.digest}; nothing kept`);
  }
  let format = 'raw';
  if (req.type === 'image') {
    const header = formatOfHeader(await readHeader(temp));
    if ('refused' in header) throw new ImageError('refused', `image ${req.uri}: ${header.refused}`);
    format = header.format;
  }
  // umask may have taken bits off the mode given to open.
  await chmod(temp, FILE_MODE);
  return { ...got, format };
}

/** Makes the file at `temp` the entry of `req`, evicting what its room needs; refused when room cannot be made. */
function keepDownloaded(state: CacheState, req: CheckedAdd, temp: string, fetched: Fetched): Promise<ImageEntry> {
  const { entries, logger } = state;
  return state.changes.run(async () => {
    const plan = planEviction([...entries.values()], { name: req.name, bytes: fetched.bytes }, state.maxBytes, namesInUse(state));
    if ('refused' in plan) throw new ImageError('refused', `image ${req.uri}: not kept: ${plan.refused}`);
    const at = state.now().toISOString();
    const entry: ImageEntry = {
      name: req.name, uri: req.uri, type: req.type, description: req.description, sha256: fetched.digest, bytes: fetched.bytes,
      path: join(state.dir, req.name), format: fetched.format, added: at, lastUsed: at,
    };
    await rename(temp, entry.path);
    for (const old of plan.evict) entries.delete(old.name);
    entries.set(entry.name, entry);
    for (const old of plan.evict) {
      const failed = await deleteFile(old.path);
      if (failed !== null) logger.warn('evicted image file not removed', { image: old.name, path: old.path, error: failed });
      logger.info('image evicted', { image: old.name, uri: old.uri, bytes: old.bytes, last_used: old.lastUsed, for: entry.name });
    }
    return entry;
  });
}
