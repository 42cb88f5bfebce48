// The repository's list of virtual clusters (pragma_boot's vcdb.txt): one `name,path/to/name.xml`
// line per cluster, the path relative to the repository. Pure: text in, entries or a VcdbError
// naming the line out. Unlike pragma, blank lines and # comments are allowed, and a bad line or a
// name listed twice is refused with its line number instead of crashing or shadowing another.
import { relativeFilePath } from './vc-in-values.js';

/** The file's name in the repository (pragma's default vcdb_filename). */
export const VCDB_FILE = 'vcdb.txt';

export interface VcdbEntry {
  /** The cluster's name: what a boot asks for, and the prefix of its images' names in the cache. */
  readonly name: string;
  /** Its description, relative to the repository and normalised. */
  readonly path: string;
  /** 1-based line of the file, for messages. */
  readonly line: number;
}

/** Why the list was refused; the message starts with the file's name and the line. */
export class VcdbError extends Error {
  override name = 'VcdbError';
  constructor(message: string, readonly line: number) {
    super(message);
  }
}

// The cluster's name becomes the start of image names in the cache (letters, digits, . _ + -), so it
// is held to that alphabet, and short enough to leave room for the file's name after it.
const CLUSTER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/;

/** Null when `name` may name a virtual cluster, else why not. */
export function invalidClusterName(name: string): string | null {
  if (CLUSTER_NAME.test(name)) return null;
  return `${JSON.stringify(name.slice(0, 80))} is not a cluster name (a letter or digit, then up to 63 of A-Z a-z 0-9 . _ + -)`;
}

/** The entries of `text`, in the file's order. `source` names the file in messages. */
export function parseVcdb(text: string, source: string): VcdbEntry[] {
  const entries: VcdbEntry[] = [];
  const lineOf = new Map<string, number>();
  text.split('\n').forEach((raw, index) => {
    const line = index + 1;
    const content = raw.replace(/\r$/, '').trim();
    if (content === '' || content.startsWith('#')) return;
    const fail = (why: string): never => {
      throw new VcdbError(`${source} line ${line}: ${why}`, line);
    };
    const fields = content.split(',');
    if (fields.length !== 2) {
      fail(`expected "name,path/to/name.xml" (one comma), got ${JSON.stringify(content.slice(0, 80))}`);
    }
    const name = fields[0]!.trim();
    const bad = invalidClusterName(name);
    if (bad !== null) fail(bad);
    const seen = lineOf.get(name);
    if (seen !== undefined) fail(`${name} is listed already on line ${seen}`);
    const path = relativeFilePath(fields[1]!.trim(), 'the repository');
    if (typeof path !== 'string') fail(`${name}: ${path.reason}`);
    lineOf.set(name, line);
    entries.push({ name, path: path as string, line });
  });
  return entries;
}
