// The image cache's data, without I/O: what an entry is, which requests are valid, how the index
// file is read back, what a file's header says about it, and which entries an add evicts.
import { createHash } from 'node:crypto';
import { invalidVref } from '../slices/values.js';
import { describeError } from '../util/errors.js';
import { formatBytes } from '../util/text.js';

export type ImageType = 'image' | 'kernel' | 'initrd' | 'data';
export const IMAGE_TYPES: readonly ImageType[] = ['image', 'kernel', 'initrd', 'data'];

export interface ImageEntry {
  /** The file's name in the cache directory; what a slice's vref, kernel or initrd names. */
  name: string;
  /** Where it was fetched from (normalised: the URL's href). */
  uri: string;
  type: ImageType;
  description: string;
  /** Lower-case hex SHA-256 of the file. */
  sha256: string;
  bytes: number;
  /** Absolute path of the file. */
  path: string;
  /** For type image: 'qcow2' or 'raw' from the file's header; 'raw' for the other types. */
  format: string;
  /** ISO 8601 times. */
  added: string;
  lastUsed: string;
}

/** Why an operation on the cache failed; `kind` says whose business it is to fix it. */
export type ImageErrorKind =
  /** The request itself is wrong (bad URI, type, name, checksum syntax). */
  | 'invalid'
  /** No such entry. */
  | 'not-found'
  /** The entry is referenced by a sliver. */
  | 'in-use'
  /** What was fetched is not acceptable (checksum mismatch, too large, HTTP 4xx, unsafe header). */
  | 'refused'
  /** The fetch or the disk failed (network, server error after the retries, I/O). */
  | 'failed';

export class ImageError extends Error {
  override name = 'ImageError';
  constructor(readonly kind: ImageErrorKind, message: string) {
    super(message);
  }
}

export function isImageType(value: unknown): value is ImageType {
  return typeof value === 'string' && (IMAGE_TYPES as readonly string[]).includes(value);
}

// ---- requests ---------------------------------------------------------------------------------

const MAX_URI = 2048;
const MAX_DESCRIPTION = 1024;
/** Names the cache directory uses for itself. */
const RESERVED_NAMES = new Set(['index.json']);

/**
 * The URL an image is fetched from, or the reason it cannot be: http:, https: or an absolute
 * file: URL of this host. Credentials are refused: the URI is kept in the index and shown to
 * every caller of GetImages (local users, and remote ones over TLS).
 */
export function parseImageUri(uri: string): URL | string {
  if (uri.length === 0) return 'the URI is empty';
  if (uri.length > MAX_URI) return `the URI is ${uri.length} characters long, more than ${MAX_URI}`;
  if (/[\0-\x20\x7f]/.test(uri)) return 'the URI contains a space or a control character';
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return 'not a valid URI (an http:, https: or file: URL is expected)';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:' && url.protocol !== 'file:') {
    return `scheme "${url.protocol}" is not supported; use http:, https: or file:`;
  }
  if (url.username !== '' || url.password !== '') return 'credentials in the URI are not accepted (the URI is shown to every local user)';
  if (url.protocol === 'file:') {
    if (url.host !== '' && url.host !== 'localhost') return `a file: URI names a file of this host, not of "${url.host}"`;
    if (url.search !== '' || url.hash !== '') return 'a file: URI takes no query or fragment';
  } else if (url.hostname === '') {
    return 'no host in the URI';
  }
  if (url.pathname.endsWith('/')) return 'the URI names a directory, not a file';
  return url;
}

/** Null when `name` may name an entry (it becomes a file name in the cache directory), else why not. */
export function invalidImageName(name: string): string | null {
  if (RESERVED_NAMES.has(name)) return `name "${name}" is reserved for the cache's own use`;
  // The same rule as a slice's vref, which names an entry.
  return invalidVref(name);
}

/** The entry name an add takes when none is given: the URI's last path segment. */
export function defaultImageName(url: URL): string | { reason: string } {
  const segment = url.pathname.slice(url.pathname.lastIndexOf('/') + 1);
  let decoded: string;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    decoded = segment;
  }
  const bad = invalidImageName(decoded);
  return bad === null ? decoded : { reason: `no name can be taken from the URI (${bad}); give a name` };
}

/**
 * The name of an entry fetched for a sliver, which no one named: the URI's last part, or that
 * with a part of the URI's hash when another URI's entry has it (two mirrors' "rootfs.img").
 */
export function automaticImageName(url: URL, takenByOther: (name: string) => boolean): string {
  const tag = createHash('sha256').update(url.href).digest('hex').slice(0, 8);
  const base = defaultImageName(url);
  if (typeof base !== 'string') return `image-${tag}`;
  if (!takenByOther(base)) return base;
  // Before the first extension, so that "disk.qcow2" stays a .qcow2.
  const dot = base.indexOf('.', 1);
  const [stem, extension] = dot < 0 ? [base, ''] : [base.slice(0, dot), base.slice(dot)];
  const tagged = `${stem.slice(0, Math.max(1, 119 - extension.length))}-${tag}${extension}`;
  return invalidImageName(tagged) === null ? tagged : `image-${tag}`;
}

export interface AddRequest {
  uri: string;
  type: ImageType;
  description?: string;
  sha256?: string;
  name?: string;
}

export interface CheckedAdd {
  url: URL;
  /** The normalised URI: the key of the entry and of its download. */
  uri: string;
  type: ImageType;
  description: string;
  /** Lower case, or null when the caller gave none. */
  sha256: string | null;
  name: string;
}

/** Validates an add request; throws ImageError('invalid') naming the URI and the reason. */
export function checkAddRequest(req: AddRequest): CheckedAdd {
  const shown = typeof req.uri === 'string' ? JSON.stringify(req.uri.slice(0, 200)) : String(req.uri);
  const refuse = (reason: string): never => {
    throw new ImageError('invalid', `image ${shown}: ${reason}`);
  };
  if (typeof req.uri !== 'string') return refuse('the URI must be a string');
  const url = parseImageUri(req.uri);
  if (typeof url === 'string') return refuse(url);
  if (!isImageType(req.type)) return refuse(`type ${JSON.stringify(req.type)} is not one of ${IMAGE_TYPES.join(', ')}`);
  const description = req.description ?? '';
  if (typeof description !== 'string') return refuse('the description must be a string');
  if (description.length > MAX_DESCRIPTION) return refuse(`the description is ${description.length} characters long, more than ${MAX_DESCRIPTION}`);
  if (/[\0-\x1f\x7f]/.test(description)) return refuse('the description contains a line break or a control character');
  let sha256: string | null = null;
  if (req.sha256 !== undefined && req.sha256 !== '') {
    if (typeof req.sha256 !== 'string' || !/^[0-9a-fA-F]{64}$/.test(req.sha256)) {
      return refuse(`sha256 ${JSON.stringify(String(req.sha256).slice(0, 80))} is not 64 hexadecimal digits`);
    }
    sha256 = req.sha256.toLowerCase();
  }
  let name: string;
  if (req.name !== undefined && req.name !== '') {
    const bad = typeof req.name === 'string' ? invalidImageName(req.name) : 'the name must be a string';
    if (bad !== null) return refuse(bad);
    name = req.name;
  } else {
    const taken = defaultImageName(url);
    if (typeof taken !== 'string') return refuse(taken.reason);
    name = taken;
  }
  return { url, uri: url.href, type: req.type, description, sha256, name };
}

/** An add of a URI that is cached already: null when the request agrees with the entry, else why not. */
export function conflictWithEntry(req: CheckedAdd, entry: ImageEntry): string | null {
  if (req.type !== entry.type) return `cached already as type ${entry.type} (name ${entry.name}), not ${req.type}`;
  if (req.sha256 !== null && req.sha256 !== entry.sha256) {
    return `cached already (name ${entry.name}) with sha256 ${entry.sha256}, not ${req.sha256}`;
  }
  return null;
}

// ---- file headers -----------------------------------------------------------------------------

/** Bytes of the file's start that formatOfHeader needs. */
export const HEADER_BYTES = 80;

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
/** qcow2 v3 incompatible feature bit: the guest data lives in another file. */
const QCOW2_EXTERNAL_DATA_FILE = 1n << 2n;

/**
 * The disk format of an image from its first bytes, or why it must not be used: a qcow2 image
 * that names a backing file or an external data file would make the hypervisor open a file of
 * this host chosen by whoever made the image.
 */
export function formatOfHeader(header: Uint8Array): { format: 'qcow2' | 'raw' } | { refused: string } {
  const b = Buffer.from(header.buffer, header.byteOffset, header.byteLength);
  if (b.length < 4 || b.readUInt32BE(0) !== QCOW2_MAGIC) return { format: 'raw' };
  if (b.length < 72) return { refused: 'a qcow2 header that is cut short' };
  const version = b.readUInt32BE(4);
  if (version !== 2 && version !== 3) return { refused: `qcow2 version ${version} is not supported (2 or 3)` };
  if (b.readBigUInt64BE(8) !== 0n) return { refused: 'a qcow2 image with a backing file is not accepted (it would make the hypervisor open another file)' };
  if (version === 3) {
    if (b.length < 80) return { refused: 'a qcow2 header that is cut short' };
    if ((b.readBigUInt64BE(72) & QCOW2_EXTERNAL_DATA_FILE) !== 0n) {
      return { refused: 'a qcow2 image with an external data file is not accepted (it would make the hypervisor open another file)' };
    }
  }
  return { format: 'qcow2' };
}

// ---- eviction ---------------------------------------------------------------------------------

/** Least recently used first; ties by age, then name, so that the order never depends on the map. */
export function leastRecentlyUsedFirst(a: ImageEntry, b: ImageEntry): number {
  if (a.lastUsed !== b.lastUsed) return a.lastUsed < b.lastUsed ? -1 : 1;
  if (a.added !== b.added) return a.added < b.added ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

export type EvictionPlan = { evict: ImageEntry[] } | { refused: string };

/**
 * Which entries leave so that `added` fits under `maxBytes`: the least recently used ones that no
 * sliver uses, as few as needed. Refused when `added` alone is larger than the bound, or when the
 * entries in use leave no room for it; then nothing is evicted.
 */
export function planEviction(
  entries: readonly ImageEntry[],
  added: { name: string; bytes: number },
  maxBytes: number,
  inUse: ReadonlySet<string>,
): EvictionPlan {
  if (added.bytes > maxBytes) {
    return { refused: `it is ${formatBytes(added.bytes)}, more than the cache may hold (${formatBytes(maxBytes)}, image_cache_max_bytes)` };
  }
  const others = entries.filter((e) => e.name !== added.name);
  let total = added.bytes + others.reduce((sum, e) => sum + e.bytes, 0);
  const evict: ImageEntry[] = [];
  for (const candidate of others.filter((e) => !inUse.has(e.name)).sort(leastRecentlyUsedFirst)) {
    if (total <= maxBytes) break;
    evict.push(candidate);
    total -= candidate.bytes;
  }
  if (total > maxBytes) {
    const held = others.filter((e) => inUse.has(e.name)).reduce((sum, e) => sum + e.bytes, 0);
    return {
      refused: `it is ${formatBytes(added.bytes)} and the images in use by slivers hold ${formatBytes(held)} of the ${formatBytes(maxBytes)} the cache may hold (image_cache_max_bytes)`,
    };
  }
  return { evict };
}

// ---- the index file ---------------------------------------------------------------------------

export const INDEX_FILE = 'index.json';
const INDEX_VERSION = 1;

type StoredEntry = Omit<ImageEntry, 'path'>;

export function formatIndex(entries: readonly ImageEntry[]): string {
  const stored: StoredEntry[] = [...entries].sort((a, b) => (a.name < b.name ? -1 : 1)).map(({ path: _path, ...rest }) => rest);
  return JSON.stringify({ version: INDEX_VERSION, entries: stored }, null, 2) + '\n';
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/** Why a stored entry cannot be used, or null. */
function invalidStoredEntry(value: unknown): string | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'not an object';
  const e = value as Record<string, unknown>;
  if (typeof e['name'] !== 'string' || invalidImageName(e['name']) !== null) return `name ${JSON.stringify(e['name'])} is not an image name`;
  if (typeof e['uri'] !== 'string' || typeof parseImageUri(e['uri']) === 'string') return 'uri is not an http, https or file URI';
  if (!isImageType(e['type'])) return `type ${JSON.stringify(e['type'])} is not one of ${IMAGE_TYPES.join(', ')}`;
  if (typeof e['description'] !== 'string') return 'description is not a string';
  if (typeof e['sha256'] !== 'string' || !/^[0-9a-f]{64}$/.test(e['sha256'])) return 'sha256 is not 64 lower-case hexadecimal digits';
  if (typeof e['bytes'] !== 'number' || !Number.isSafeInteger(e['bytes']) || e['bytes'] < 0) return 'bytes is not a whole number';
  if (typeof e['format'] !== 'string' || !['qcow2', 'raw'].includes(e['format'])) return 'format is not qcow2 or raw';
  for (const field of ['added', 'lastUsed']) {
    if (typeof e[field] !== 'string' || !ISO_TIME.test(e[field] as string)) return `${field} is not an ISO 8601 UTC time`;
  }
  return null;
}

/**
 * The entries of an index file's text, with their paths under `dir`, and the reasons for the ones
 * left out. Throws when the text is not an index at all (the caller moves the file aside).
 */
export function parseIndex(text: string, dir: string): { entries: ImageEntry[]; dropped: string[] } {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new Error(`not JSON (${describeError(error)})`);
  }
  const top = data as { version?: unknown; entries?: unknown };
  if (data === null || typeof data !== 'object' || top.version !== INDEX_VERSION || !Array.isArray(top.entries)) {
    throw new Error(`not an image index of version ${INDEX_VERSION} ({"version": ${INDEX_VERSION}, "entries": [...]})`);
  }
  const entries: ImageEntry[] = [];
  const dropped: string[] = [];
  const names = new Set<string>();
  const uris = new Set<string>();
  top.entries.forEach((value: unknown, i: number) => {
    const bad = invalidStoredEntry(value);
    const e = value as StoredEntry;
    if (bad !== null) dropped.push(`entry ${i + 1}: ${bad}`);
    else if (names.has(e.name)) dropped.push(`entry ${i + 1}: name ${e.name} listed twice`);
    else if (uris.has(e.uri)) dropped.push(`entry ${i + 1}: uri ${e.uri} listed twice`);
    else {
      names.add(e.name);
      uris.add(e.uri);
      entries.push({
        name: e.name, uri: e.uri, type: e.type, description: e.description, sha256: e.sha256, bytes: e.bytes,
        path: `${dir.replace(/\/+$/, '')}/${e.name}`, format: e.format, added: e.added, lastUsed: e.lastUsed,
      });
    }
  });
  return { entries, dropped };
}
