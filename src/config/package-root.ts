// Where nodemgr's own files are (etc/slices.xml is the default authority document).
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cachedRoot: string | null = null;

/** The directory of nodemgr's package.json: found upwards from this module, in src/ or dist/src/. */
export function packageRoot(): string {
  if (cachedRoot !== null) return cachedRoot;
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return (cachedRoot = dir);
    if (dirname(dir) === dir) throw new Error(`no package.json in ${start} or any directory above it`);
  }
}

/** The version in nodemgr's package.json. */
export async function packageVersion(): Promise<string> {
  const manifest = JSON.parse(await readFile(join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown };
  return typeof manifest.version === 'string' ? manifest.version : 'unknown';
}
