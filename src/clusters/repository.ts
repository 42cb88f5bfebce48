// The repository of virtual clusters: a directory of this host (vc_repository_dir) or one served at
// a URL (vc_repository_url), holding vcdb.txt and, for each cluster, its description (vc-in.xml)
// with its image files next to it. One way of finding things serves both: the repository is a
// base URL (file: for a directory), the description's URL is its vcdb path resolved against that
// base, and an image's URL is its path resolved against the description's URL. pragma instead
// built remote image URLs from local absolute paths and dropped the description's directory.
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Config } from '../config/schema.js';
import { describeFileError } from '../host/file-errors.js';
import { httpGet, HttpGetError } from '../host/http-get.js';
import { redactUrl } from '../host/url.js';
import { formatBytes } from '../util/text.js';
import { parseVcIn, type VcDescription, type VcImageFile } from './vc-in.js';
import { invalidClusterName, parseVcdb, VCDB_FILE, VcdbError, type VcdbEntry } from './vcdb.js';

export { fetchImage, cachedImageName, type FetchImageOptions } from './vc-images.js';
export { VCDB_FILE, type VcdbEntry } from './vcdb.js';

/** A repository: a directory of this host (a path), or the http:, https: or file: URL it is served at. */
export type RepositoryPlace = string | URL;

/**
 * Why the repository could not answer: `not-found`, no such cluster or file; `invalid`, its vcdb or a
 * description is wrong (the operator's to fix); `failed`, it could not be read (network, disk).
 */
export type VcRepositoryErrorKind = 'not-found' | 'invalid' | 'failed';

export class VcRepositoryError extends Error {
  override name = 'VcRepositoryError';
  constructor(readonly kind: VcRepositoryErrorKind, message: string) {
    super(message);
  }
}

export interface RepositoryReadOptions {
  /** The largest vcdb.txt or description accepted, in bytes. Default 1 MiB. */
  maxBytes?: number;
  /** A read from an http(s) repository that receives nothing for this long is abandoned. Default 30 s. */
  timeoutMs?: number;
  /** PEM bundle of the CAs an https repository is checked against; null or absent: the system's roots. */
  caFile?: string | null;
  signal?: AbortSignal;
}

/** A description read from the repository, and where its files are. */
export interface LoadedDescription {
  /** The cluster's name in vcdb.txt. */
  readonly name: string;
  readonly description: VcDescription;
  /** The description's own URL (file: for a directory); its image files are resolved against it. */
  readonly url: URL;
  /** The directory of its files when the repository is a directory of this host, else null. */
  readonly dir: string | null;
}

const DEFAULT_MAX_BYTES = 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 30_000;

/** The configured repository: vc_repository_url when set, else vc_repository_dir. */
export function configuredRepository(config: Pick<Config, 'vcRepositoryDir' | 'vcRepositoryUrl'>): RepositoryPlace {
  return config.vcRepositoryUrl === null ? config.vcRepositoryDir : new URL(config.vcRepositoryUrl);
}

/** The repository's base URL, ending in "/" so that relative paths resolve inside it. */
export function repositoryBase(place: RepositoryPlace): URL {
  if (typeof place === 'string') {
    if (place === '' || place.includes('\0')) throw new VcRepositoryError('invalid', `repository ${JSON.stringify(place)}: not a directory path`);
    return pathToFileURL(`${resolve(place)}/`);
  }
  if (place.protocol !== 'http:' && place.protocol !== 'https:' && place.protocol !== 'file:') {
    throw new VcRepositoryError('invalid', `repository ${redactUrl(place)}: scheme "${place.protocol}" is not supported; use http:, https: or file:`);
  }
  const base = new URL(place.href);
  base.search = '';
  base.hash = '';
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  return base;
}

/** The URLs of a node image's parts, in the order they are concatenated. */
export function imagePartUrls(loaded: LoadedDescription, file: VcImageFile): URL[] {
  return file.parts.map((part) => new URL(part, loaded.url));
}

/** The clusters vcdb.txt lists, in its order. */
export async function listRepository(place: RepositoryPlace, options: RepositoryReadOptions = {}): Promise<VcdbEntry[]> {
  const url = new URL(VCDB_FILE, repositoryBase(place));
  const text = (await readRepositoryFile(url, options)).toString('utf8');
  try {
    return parseVcdb(text, redactUrl(url));
  } catch (error) {
    if (error instanceof VcdbError) throw new VcRepositoryError('invalid', error.message);
    throw error;
  }
}

/**
 * The description of cluster `name`, parsed and validated. Throws VcRepositoryError ('not-found'
 * for a name vcdb.txt does not list) or, for a description that is wrong, its VcInError.
 */
export async function loadDescription(place: RepositoryPlace, name: string, options: RepositoryReadOptions = {}): Promise<LoadedDescription> {
  const bad = invalidClusterName(name);
  if (bad !== null) throw new VcRepositoryError('invalid', `virtual cluster ${bad}`);
  const base = repositoryBase(place);
  const entries = await listRepository(base, options);
  const entry = entries.find((e) => e.name === name);
  if (entry === undefined) {
    throw new VcRepositoryError('not-found', `virtual cluster ${name}: not in ${redactUrl(new URL(VCDB_FILE, base))} (it lists ${entries.length === 0 ? 'none' : entries.map((e) => e.name).join(', ')})`);
  }
  const url = new URL(entry.path, base);
  const bytes = await readRepositoryFile(url, options);
  const description = parseVcIn(bytes, { maxBytes: options.maxBytes ?? DEFAULT_MAX_BYTES, source: `virtual cluster ${name} (${redactUrl(url)})` });
  return { name, description, url, dir: url.protocol === 'file:' ? fileURLToPath(new URL('.', url)) : null };
}

/** The bytes of a small file of the repository (vcdb.txt, a description), within options.maxBytes. */
export async function readRepositoryFile(url: URL, options: RepositoryReadOptions): Promise<Buffer> {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  const shown = redactUrl(url);
  const tooLarge = (size: number) => new VcRepositoryError('invalid', `${shown}: ${formatBytes(size)} or more, larger than the ${formatBytes(maxBytes)} accepted`);
  if (url.protocol === 'file:') {
    const path = fileURLToPath(url);
    try {
      const info = await stat(path);
      if (!info.isFile()) throw new VcRepositoryError('not-found', `${shown}: not a regular file`);
      if (info.size > maxBytes) throw tooLarge(info.size);
      return await readFile(path);
    } catch (error) {
      if (error instanceof VcRepositoryError) throw error;
      const code = (error as NodeJS.ErrnoException).code;
      throw new VcRepositoryError(code === 'ENOENT' || code === 'ENOTDIR' ? 'not-found' : 'failed', `${shown}: ${describeFileError(error)}`);
    }
  }
  try {
    const answer = await httpGet(url, { signal: options.signal, idleTimeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS, caFile: options.caFile ?? null });
    if (answer.status !== 200) {
      answer.body.resume();
      throw new VcRepositoryError(answer.status === 404 || answer.status === 410 ? 'not-found' : 'failed', `${shown}: HTTP ${answer.status} ${answer.statusText}`.trim());
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of answer.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) {
        answer.body.destroy();
        throw tooLarge(size);
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks, size);
  } catch (error) {
    if (error instanceof VcRepositoryError) throw error;
    const reason = error instanceof HttpGetError || error instanceof Error ? error.message : String(error);
    throw new VcRepositoryError('failed', `${shown}: ${reason}`);
  }
}
