// What the limits benches enforce on: a throwaway network namespace with a veth (`nmb0`, up) for
// the traffic classes, a cgroup parent of their own, and a scratch directory; `remove` takes all of
// it away again, every sliver group and the parent in each hierarchy included. Root only.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSliverCgroups } from '../../src/limits/cgroups.js';

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'ignore' });

export const BENCH_DEVICE = 'nmb0';

export async function limitsBenchHost(namespacePrefix: string) {
  const tag = randomBytes(3).toString('hex');
  const ns = `${namespacePrefix}${tag}`;
  const parent = `nodemgr-bench-${tag}`;
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-bench-'));
  ip('netns', 'add', ns);
  ip('-n', ns, 'link', 'add', BENCH_DEVICE, 'type', 'veth', 'peer', 'name', 'nmb1');
  ip('-n', ns, 'link', 'set', BENCH_DEVICE, 'up');
  const cgroups = await createSliverCgroups({ parent });
  return {
    ns, parent, dir, cgroups,
    async remove(): Promise<void> {
      for (const name of await cgroups.list()) await cgroups.remove(name).catch(() => undefined);
      for (const hierarchy of ['cpu', 'cpuacct', 'memory', 'pids', 'freezer', 'unified', '']) {
        await rmdir(join('/sys/fs/cgroup', hierarchy, parent)).catch(() => undefined);
      }
      ip('netns', 'del', ns);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
