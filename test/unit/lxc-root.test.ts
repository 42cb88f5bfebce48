import test from 'ava';
import { mountsAt, overlayOptions } from '../../src/runtimes/libvirt/lxc-root.js';

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
