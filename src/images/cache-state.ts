// The image cache's state in memory, shared by its operations (cache.ts, cache-add.ts): the
// entries by name, the downloads in progress, the queue of changes and the index writer; and the
// lookups every operation makes.
import type { Logger } from '../log.js';
import type { SerialQueue } from '../util/serial.js';
import { parseImageUri, type ImageEntry } from './index.js';

export interface CacheState {
  readonly dir: string;
  readonly maxBytes: number;
  readonly logger: Logger;
  readonly now: () => Date;
  /** What slivers refer to, by entry name or URI (the option of the same name). */
  readonly referenced: () => ReadonlySet<string>;
  readonly download: { readonly retries: number; readonly timeoutMs: number; readonly retryInitialMs: number };
  readonly entries: Map<string, ImageEntry>;
  /** Downloads in progress, by normalised URI. */
  readonly downloads: Map<string, Promise<ImageEntry>>;
  /** The names the downloads in progress will take -> their URIs. */
  readonly pendingNames: Map<string, string>;
  /** Aborted when the cache closes; every download listens to it. */
  readonly closing: AbortController;
  /**
   * Changes that await between deciding and changing the entries (an add's eviction plan and
   * rename, a removal) are made one at a time.
   */
  readonly changes: SerialQueue;
  /** Writes the index after each change, several at once (store.ts). */
  readonly persist: () => Promise<void>;
}

/** What callers get: a copy, so that nothing outside changes an entry. */
export const copyEntry = (e: ImageEntry): ImageEntry => ({ ...e });

export const totalBytes = (state: CacheState): number => [...state.entries.values()].reduce((sum, e) => sum + e.bytes, 0);

export function entryOfUri(state: CacheState, uri: string): ImageEntry | undefined {
  return [...state.entries.values()].find((e) => e.uri === uri);
}

/** The entry a name or a URI refers to. */
export function findEntry(state: CacheState, ref: string): ImageEntry | undefined {
  const named = state.entries.get(ref);
  if (named) return named;
  const url = parseImageUri(ref);
  return typeof url === 'string' ? undefined : entryOfUri(state, url.href);
}

/** The names of the entries slivers refer to, by name or by URI. */
export function namesInUse(state: CacheState): Set<string> {
  const used = new Set<string>();
  for (const ref of state.referenced()) {
    const entry = findEntry(state, ref);
    if (entry) used.add(entry.name);
  }
  return used;
}

/** Marks `entry` used now (for eviction) and returns a copy of it. */
export async function touchEntry(state: CacheState, entry: ImageEntry): Promise<ImageEntry> {
  const current = state.entries.get(entry.name);
  if (!current) return copyEntry(entry);
  current.lastUsed = state.now().toISOString();
  await state.persist();
  return copyEntry(current);
}
