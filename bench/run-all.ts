// Every benchmark, one after the other (`npm run bench`): each prints its own figures.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
let failed = 0;
// Those that need root or libvirtd say so and exit 0 where they cannot run.
for (const bench of ['parse.ts', 'sync.ts', 'api.ts', 'limits.ts', 'metrics.ts', 'ssh.ts', 'images.ts', 'libvirt.ts', 'guest-agent.ts', 'tasks.ts', 'vc-inject.ts', 'clusters.ts']) {
  console.log(`\n== bench/${bench}`);
  const result = spawnSync(process.execPath, ['--import', 'tsx', join(here, bench)], { stdio: 'inherit' });
  if (result.status !== 0) failed++;
}
process.exitCode = failed === 0 ? 0 : 1;
