// The root file systems that the lxc system tests run as containers: busybox-static and an
// /sbin/init script, packed as tar archives (what an lxc sliver's vref names, a cache entry of
// type data). One archive reports ready as the lxc runtime expects (the marker written into
// /var/lib/nodemgr/ready), the other never does.
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand } from '../../../src/host/exec.js';

export interface TestRootfs {
  /** The archive whose init writes the ready marker. */
  ready: string;
  /** The same root, except that its init never does. */
  silent: string;
  /** The directory holding both; removed by remove(). */
  dir: string;
  remove(): Promise<void>;
}

const BUSYBOX = '/bin/busybox';

// The ready file's content: the marker, then what the container saw, so the test can tell that
// the host read the container's own file (hostname: libvirt names it after the domain).
function initScript(marker: string, silent: boolean): string {
  const report = silent
    ? 'echo "container up; silent, as asked" > /tmp/nodemgr-silent'
    : `mkdir -p /var/lib/nodemgr\necho "${marker} hostname=$(hostname) pid=$$" > /var/lib/nodemgr/ready`;
  return `#!/bin/sh
export PATH=/bin:/sbin
${report}
# pid 1 of the container: idle until libvirt ends it
while :; do sleep 3600; done
`;
}

async function buildRoot(root: string, marker: string, silent: boolean): Promise<void> {
  for (const dir of ['bin', 'sbin', 'etc', 'dev', 'proc', 'sys', 'run', 'tmp', 'var/lib', 'root']) {
    await mkdir(join(root, dir), { recursive: true, mode: 0o755 });
  }
  await chmod(join(root, 'tmp'), 0o1777);
  await copyFile(BUSYBOX, join(root, 'bin', 'busybox'));
  await chmod(join(root, 'bin', 'busybox'), 0o755);
  const { stdout } = await runCommand(BUSYBOX, ['--list']);
  for (const applet of stdout.split('\n').map((l) => l.trim()).filter((l) => /^[a-z0-9_.[-]+$/.test(l) && l !== 'busybox' && l !== 'init')) {
    await symlink('busybox', join(root, 'bin', applet)).catch(() => undefined);
  }
  await writeFile(join(root, 'sbin', 'init'), initScript(marker, silent), { mode: 0o755 });
  await writeFile(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n', { mode: 0o644 });
  await writeFile(join(root, 'etc', 'group'), 'root:x:0:\n', { mode: 0o644 });
}

/** Builds both archives in a fresh directory under the system's temp directory. Needs busybox-static and tar. */
export async function buildTestRootfs(marker: string): Promise<TestRootfs> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-test-rootfs-'));
  await chmod(dir, 0o755);
  const archives: Record<'ready' | 'silent', string> = { ready: join(dir, 'rootfs.tar'), silent: join(dir, 'silent-rootfs.tar') };
  for (const kind of ['ready', 'silent'] as const) {
    const root = join(dir, `${kind}-root`);
    await buildRoot(root, marker, kind === 'silent');
    await runCommand('tar', ['-c', '-f', archives[kind], '-C', root, '--numeric-owner', '--owner=0', '--group=0', '.']);
    await rm(root, { recursive: true, force: true });
  }
  return { ...archives, dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
