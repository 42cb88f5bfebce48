// The V8 flags the daemon runs with: those of the `#!` line of its command (src/cli/main.ts), so
// that a bench measures the daemon's code under the daemon's own runtime settings.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** `repo` is the project's root (a checkout, or the directory above dist/). */
export function daemonFlags(repo: string): string[] {
  const shebang = readFileSync(join(repo, 'src', 'cli', 'main.ts'), 'utf8').split('\n', 1)[0]!;
  return shebang.split(/\s+/).filter((word) => word.startsWith('--'));
}
