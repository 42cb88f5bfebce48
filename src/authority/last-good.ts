// The last authority document that was accepted, kept on disk so that a node restarted while the
// authority is unreachable comes back with the state it had, not an empty one.
//
// Layout in dir: body-<sha256> (the document as received) and last-good.json (what it is and which
// body file holds it). The body is written first under a name of its own, then the meta is
// replaced, then older bodies are removed: a crash at any point leaves a meta that names a
// complete body, either the previous one or the new one.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileDurably } from '../db/durable-file.js';
import { describeError } from '../util/errors.js';

export interface SavedDocument {
  body: Buffer;
  etag: string | null;
  lastModified: string | null;
  /** Where it came from (without credentials). */
  url: string;
  /** The document's own timestamp. */
  timestamp: number;
}

export interface LastGoodDocument extends SavedDocument {
  /** When it was saved, ISO 8601. */
  savedAt: string;
}

interface Meta {
  version: 1;
  bodyFile: string;
  size: number;
  sha256: string;
  etag: string | null;
  lastModified: string | null;
  url: string;
  timestamp: number;
  savedAt: string;
}

const META_FILE = 'last-good.json';
const BODY_FILE = /^body-[0-9a-f]{64}$/;

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function saveLastGood(dir: string, doc: SavedDocument): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const digest = sha256(doc.body);
  const bodyFile = `body-${digest}`;
  await writeFileDurably(join(dir, bodyFile), doc.body, 0o600);
  const meta: Meta = {
    version: 1,
    bodyFile,
    size: doc.body.length,
    sha256: digest,
    etag: doc.etag,
    lastModified: doc.lastModified,
    url: doc.url,
    timestamp: doc.timestamp,
    savedAt: new Date().toISOString(),
  };
  await writeFileDurably(join(dir, META_FILE), JSON.stringify(meta, null, 2) + '\n', 0o600);
  // Older bodies are garbage now; leaving one behind (a failed unlink) costs only disk space.
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (BODY_FILE.test(name) && name !== bodyFile) await unlink(join(dir, name)).catch(() => undefined);
  }
}

function isNullableString(value: unknown): value is string | null {
  return value === null || typeof value === 'string';
}

function parseMeta(text: string): Meta | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return `not JSON (${describeError(error)})`;
  }
  if (typeof value !== 'object' || value === null) return 'not a JSON object';
  const m = value as Record<string, unknown>;
  if (m['version'] !== 1) return `unknown version ${JSON.stringify(m['version'])}`;
  if (typeof m['bodyFile'] !== 'string' || !BODY_FILE.test(m['bodyFile'])) return 'bodyFile missing or invalid';
  if (typeof m['sha256'] !== 'string' || !/^[0-9a-f]{64}$/.test(m['sha256'])) return 'sha256 missing or invalid';
  if (m['bodyFile'] !== `body-${m['sha256']}`) return 'bodyFile does not match sha256';
  if (typeof m['size'] !== 'number' || !Number.isSafeInteger(m['size']) || m['size'] < 0) return 'size missing or invalid';
  if (!isNullableString(m['etag'])) return 'etag is not a string';
  if (!isNullableString(m['lastModified'])) return 'lastModified is not a string';
  if (typeof m['url'] !== 'string') return 'url missing';
  if (typeof m['timestamp'] !== 'number' || !Number.isFinite(m['timestamp'])) return 'timestamp missing or invalid';
  if (typeof m['savedAt'] !== 'string') return 'savedAt missing';
  return m as unknown as Meta;
}

/**
 * The last good document, or null when there is none. A meta that cannot be read or a body that
 * does not match it also gives null (nothing is better than a wrong document); `report`, when
 * given, hears why, for the caller's log. Absence is not reported.
 */
export async function loadLastGood(dir: string, report?: (reason: string) => void): Promise<LastGoodDocument | null> {
  const metaPath = join(dir, META_FILE);
  const invalid = (reason: string): null => {
    report?.(`last good document in ${dir} ignored: ${reason}`);
    return null;
  };
  let text: string;
  try {
    text = await readFile(metaPath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return invalid(`cannot read ${META_FILE}: ${describeError(error)}`);
  }
  const meta = parseMeta(text);
  if (typeof meta === 'string') return invalid(`${META_FILE}: ${meta}`);
  let body: Buffer;
  try {
    body = await readFile(join(dir, meta.bodyFile));
  } catch (error) {
    return invalid(`cannot read ${meta.bodyFile}: ${describeError(error)}`);
  }
  if (body.length !== meta.size || sha256(body) !== meta.sha256) {
    return invalid(`${meta.bodyFile} does not match its checksum (${body.length} bytes, expected ${meta.size})`);
  }
  return {
    body,
    etag: meta.etag,
    lastModified: meta.lastModified,
    url: meta.url,
    timestamp: meta.timestamp,
    savedAt: meta.savedAt,
  };
}
