// Answers to calls that read nothing but the node's database, kept until the database changes.
// A monitor that asks every sliver's GetRSpec or GetEffectiveRSpec over and over is answered from
// here: the same request from the same caller is not decoded, run and encoded again. The store
// replaces its database object on every change (its data is never changed in place), so "the
// same object" is "nothing changed", and every answer kept for an older one is dropped at once.
import type { Caller } from './identity.js';

export interface AnswerCacheOptions {
  /** The database in force: answers are kept only while it is this very object. */
  readonly generation: () => object;
  /** Whether a method's answer depends on nothing but the database, its arguments and its caller. */
  readonly readsOnlyDatabase: (method: string) => boolean;
  /**
   * Where a method's answers from here are counted (each counts as a call like any other): asked
   * once for each answer kept, so that giving the answer is one addition, with no lookup.
   */
  readonly tallyOf?: (method: string) => AnswerTally;
  /** At most this many answers; when full it is emptied and fills again (default 4096). */
  readonly maxEntries?: number;
  /** At most this many characters of answers in all, likewise (default 8 Mi: the daemon's memory is bounded). */
  readonly maxChars?: number;
}

/** How many answers of one method were given from the cache since its reader last took them. */
export interface AnswerTally {
  hits: number;
}

export interface KeptAnswer {
  readonly method: string;
  /**
   * The response document, kept as text: node:http sends a text body and its head in one write,
   * where a Buffer body costs a second chunk (writev); an ASCII string takes a byte per character.
   */
  readonly answer: string;
  /** Its length in bytes, as sent. */
  readonly bytes: number;
  readonly tally: AnswerTally | null;
}

export interface AnswerCache {
  /** The answer kept for this request from this caller (and the method it answers), or null. */
  lookup(caller: Caller, body: Buffer): KeptAnswer | null;
  /** The database a call about to run reads; handed back to keep(). */
  generation(): object;
  /**
   * Keeps a method's answer (a result, never a fault) when its method reads only the database and
   * the database is still the one the call read (`readFrom`).
   */
  keep(caller: Caller, body: Buffer, method: string, answer: string, readFrom: object): void;
}

/** Requests and answers larger than these are not kept: a cache is for small, repeated calls. */
const MAX_REQUEST_BYTES = 4096;
const MAX_ANSWER_BYTES = 64 * 1024;

/** Mixed into every request's hash, so that which requests share a hash differs from node to node. */
const HASH_SEED = (Math.random() * 2 ** 32) >>> 0;
/** Where a request is copied to be hashed as whole 32-bit words (a body is a slice of a read, at any offset). */
const words = new Uint32Array(MAX_REQUEST_BYTES / 4);
const wordBytes = new Uint8Array(words.buffer);

/**
 * A hash of a request of at most MAX_REQUEST_BYTES, four bytes at a time: FNV's step on whole
 * words, then murmur3's final mix; 30 bits, a small integer, which V8 keeps without allocating.
 * Answers are found by it, and the bytes of the one found are then compared with the request's:
 * two requests of one hash only miss each other's answers. A text key made of the request would
 * cost a copy, and V8 hashes a text a character at a time: about 2,000 instructions for a 170-byte
 * GetRSpec call (counted with callgrind), where this takes a few hundred.
 */
export function requestHash(request: Uint8Array): number {
  const length = request.length;
  wordBytes.set(request);
  // The bytes after the request, to its last word's end, are zeros (the length tells 'ab' from 'ab\0').
  for (let at = length; (at & 3) !== 0; at++) wordBytes[at] = 0;
  let hash = HASH_SEED ^ length;
  for (let at = 0, end = (length + 3) >>> 2; at < end; at++) hash = Math.imul(hash ^ words[at]!, 0x01000193);
  hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b);
  hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35);
  return (hash ^ (hash >>> 16)) & 0x3fffffff;
}

/** A kept answer with the request it answers (a copy of its own: a body is a slice of the connection's read, which it would keep whole). */
interface Kept extends KeptAnswer {
  readonly request: Uint8Array;
}

/**
 * Who the caller is, as far as an answer can depend on it; null for a certificate subject, whose
 * permission is read from allowed_users at every call and so is never taken from a cache.
 */
function callerKey(caller: Caller): string | null {
  if (caller.kind === 'certificate') return null;
  return `${caller.kind}:${caller.uid}:${caller.name ?? ''}`;
}

export function createAnswerCache(options: AnswerCacheOptions): AnswerCache {
  const maxEntries = options.maxEntries ?? 4096;
  const maxChars = options.maxChars ?? 8 * 1024 * 1024;
  // By caller, then by the request's hash (one answer a hash: a later one of the same hash replaces it).
  const answers = new Map<string, Map<number, Kept>>();
  let count = 0;
  let chars = 0;
  let keptFor: object | null = null;
  // A caller is resolved once per connection, and its key made once. Its own answers are found
  // again through its slot, with no lookup by key, until the set of callers' maps changes (`maps`
  // counts the changes: emptied, or a caller's map made).
  const slots = new WeakMap<Caller, { readonly key: string | null; own: Map<number, Kept> | null; seen: number }>();
  let maps = 0;
  /** The caller's answers; made when `make` (a lookup makes nothing). */
  const answersOf = (caller: Caller, make: boolean): Map<number, Kept> | null => {
    let slot = slots.get(caller);
    if (slot === undefined) slots.set(caller, (slot = { key: callerKey(caller), own: null, seen: -1 }));
    if (slot.key === null) return null;
    if (slot.seen !== maps) {
      slot.own = answers.get(slot.key) ?? null;
      slot.seen = maps;
    }
    if (slot.own === null && make) {
      answers.set(slot.key, (slot.own = new Map()));
      slot.seen = ++maps;
    }
    return slot.own;
  };
  const empty = () => {
    answers.clear();
    maps++;
    count = 0;
    chars = 0;
  };
  const current = () => {
    const generation = options.generation();
    if (generation !== keptFor) {
      empty();
      keptFor = generation;
    }
  };

  return {
    lookup(caller, body) {
      if (count === 0 || body.length > MAX_REQUEST_BYTES) return null;
      current();
      const found = answersOf(caller, false)?.get(requestHash(body));
      if (found === undefined || !body.equals(found.request)) return null;
      if (found.tally !== null) found.tally.hits++;
      return found;
    },
    generation: () => options.generation(),
    keep(caller, body, method, answer, readFrom) {
      if (!options.readsOnlyDatabase(method) || body.length > MAX_REQUEST_BYTES || answer.length > MAX_ANSWER_BYTES) return;
      current();
      if (keptFor !== readFrom) return;
      // Full: everything goes, and the calls that come again fill it anew.
      if (count >= maxEntries || chars + answer.length > maxChars) empty();
      const own = answersOf(caller, true);
      if (own === null) return;
      const hash = requestHash(body);
      const before = own.get(hash);
      if (before === undefined) count++;
      chars += body.length + answer.length - (before === undefined ? 0 : before.request.length + before.answer.length);
      own.set(hash, { method, answer, bytes: Buffer.byteLength(answer), tally: options.tallyOf?.(method) ?? null, request: new Uint8Array(body) });
    },
  };
}
