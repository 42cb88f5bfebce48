import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { memoryLogger } from '../../src/log.js';
import { guestFiles, type GuestFiles } from '../../src/runtimes/libvirt/guest-files.js';
import { createLxcRoots, LXC_READY_FILE, mountsAt, overlayOptions } from '../../src/runtimes/libvirt/lxc-root.js';

const run = promisify(execFile);

const MOUNTINFO = [
  '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '301 22 0:77 / /var/lib/nodemgr/guests/alice/rootfs rw,relatime - overlay overlay rw,lowerdir=/b,upperdir=/u,workdir=/w',
  '302 22 0:78 / /var/lib/nodemgr/guests/with\\040space/rootfs rw,relatime - overlay overlay rw',
  '303 301 0:79 / /var/lib/nodemgr/guests/alice/rootfs rw,relatime - overlay overlay rw',
  '',
].join('\n');

test('mountsAt counts the mounts stacked on a path, and undoes mountinfo\'s escapes', (t) => {
  t.is(mountsAt(MOUNTINFO, '/var/lib/nodemgr/guests/alice/rootfs'), 2);
  t.is(mountsAt(MOUNTINFO, '/var/lib/nodemgr/guests/with space/rootfs'), 1);
  t.is(mountsAt(MOUNTINFO, '/var/lib/nodemgr/guests/alice'), 0, 'a parent of a mount point is not mounted');
  t.is(mountsAt('', '/'), 0);
});

test('overlayOptions names the three layers, and refuses directories mount(8) would misread', (t) => {
  t.is(overlayOptions('/g/.lxc-roots/abc', { upper: '/g/x/upper', work: '/g/x/work' }),
    'lowerdir=/g/.lxc-roots/abc,upperdir=/g/x/upper,workdir=/g/x/work');
  for (const bad of ['/g,h', '/g:h', '/g h', '/g=h', '/g\\h']) {
    const error = t.throws(() => overlayOptions('/b', { upper: `${bad}/upper`, work: '/w' }));
    t.regex(error!.message, /the upper directory .* cannot name; choose a guest_dir without one/);
  }
});

async function fakeSliver(): Promise<{ files: GuestFiles; outside: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-lxc-root-'));
  const files = guestFiles(join(dir, 'guests'), 'alice');
  const outside = join(dir, 'outside');
  await mkdir(join(files.dir, 'rootfs', 'var', 'lib'), { recursive: true });
  await mkdir(outside);
  return { files, outside, remove: () => rm(dir, { recursive: true, force: true }) };
}

test('the ready file counts when it holds the marker, and clearReady removes it', async (t) => {
  const { files, remove } = await fakeSliver();
  t.teardown(remove);
  const roots = createLxcRoots(join(files.dir, '..'), memoryLogger());
  const ready = join(files.dir, 'rootfs', LXC_READY_FILE);
  t.false(await roots.waitForReady(files, 'nodemgr-ready', { timeoutMs: 0 }), 'none yet');
  await mkdir(join(ready, '..'));
  await writeFile(ready, 'nodemgr-ready hostname=alice\n');
  t.true(await roots.waitForReady(files, 'nodemgr-ready', { timeoutMs: 0 }));
  t.false(await roots.waitForReady(files, 'other-marker', { timeoutMs: 0 }));
  await roots.clearReady(files);
  t.false(existsSync(ready));
});

test('a link or a FIFO in the container\'s root never leads the host out of it', async (t) => {
  const { files, outside, remove } = await fakeSliver();
  t.teardown(remove);
  const roots = createLxcRoots(join(files.dir, '..'), memoryLogger());
  // The container makes /var/lib/nodemgr a link to a host directory that has a "ready" file.
  await writeFile(join(outside, 'ready'), 'nodemgr-ready\n');
  await symlink(outside, join(files.dir, 'rootfs', 'var', 'lib', 'nodemgr'));
  t.false(await roots.waitForReady(files, 'nodemgr-ready', { timeoutMs: 0 }), 'not read through the link');
  await roots.clearReady(files);
  t.true(existsSync(join(outside, 'ready')), 'not removed through the link');
  // The ready file itself a link, then a FIFO: neither is read (and the FIFO does not block).
  await rm(join(files.dir, 'rootfs', 'var', 'lib', 'nodemgr'));
  await mkdir(join(files.dir, 'rootfs', 'var', 'lib', 'nodemgr'));
  const ready = join(files.dir, 'rootfs', LXC_READY_FILE);
  await symlink(join(outside, 'ready'), ready);
  t.false(await roots.waitForReady(files, 'nodemgr-ready', { timeoutMs: 0 }));
  await roots.clearReady(files);
  t.true(existsSync(join(outside, 'ready')), 'the link goes, not what it names');
  t.false(existsSync(ready));
  await run('mkfifo', [ready]);
  t.false(await roots.waitForReady(files, 'nodemgr-ready', { timeoutMs: 0 }));
});
