// Disk limits without root: reading mountinfo and the quota tools' output (captured from Debian 12's
// quota 4.06, on Debian 12's kernel and on one built without a quota format; only the temporary paths
// were renamed), the status that says why limits are not enforced, and the bounded walk. The real
// kernel is in test/system/disk.test.ts.
import test from 'ava';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  hasUserQuotaOption, mountHolding, parseMountinfo, parseQuotaonState, parseRepquotaCsv, type MountEntry,
} from '../../src/limits/disk-parse.js';
import { decideSupport, measureTree } from '../../src/limits/disk.js';

const MOUNTINFO = [
  '22 27 0:21 / /proc rw,relatime - proc proc rw',
  '24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334432k,nr_inodes=3083608,mode=755',
  '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
  '44 27 7:0 / /srv/quota-test/mnt rw,relatime - ext4 /dev/loop0 rw,quota,usrquota',
  // Not captured: a mount point with a space, an optional field, and a mount stacked on another.
  '45 27 7:1 / /srv/my\\040homes rw,nosuid shared:7 master:1 - xfs /dev/loop1 rw,attr2,inode64,usrquota',
  '46 27 0:40 / /srv/quota-test/mnt rw,relatime - tmpfs tmpfs rw,size=1024k',
].join('\n') + '\n';

// repquota -u -v -n -p -O csv MNT, with limits set by setquota and files written by three uids.
const REPQUOTA_CSV = `User,BlockStatus,FileStatus,BlockUsed,BlockSoftLimit,BlockHardLimit,BlockGrace,FileUsed,FileSoftLimit,FileHardLimit,FileGrace
#0,ok,ok,13,0,0,0,2,0,0,0
#72001,hard,ok,1025,1024,1024,1796210593,2,0,0,0
#72002,hard,ok,2049,1000,2048,1796210593,2,10,20,0
#72003,ok,ok,3073,0,0,0,3,0,0,0
`;

test('mountinfo: mount points unescaped, options of the mount and of the file system together', (t) => {
  const mounts = parseMountinfo(MOUNTINFO);
  t.is(mounts.length, 7);
  t.like(mounts[2], { mountPoint: '/', device: '/dev/vda', fsType: 'ext4' });
  t.like(mounts[5], { mountPoint: '/srv/my homes', device: '/dev/loop1', fsType: 'xfs' });
  t.true(mounts[5]!.options.includes('nosuid') && mounts[5]!.options.includes('usrquota'));
  t.throws(() => parseMountinfo('27 1 254:0 / / rw,relatime ext4 /dev/vda rw\n'), { message: /mountinfo: malformed line/ });
});

test('the mount holding a path is the longest mount point above it, the latest of stacked ones', (t) => {
  const mounts = parseMountinfo(MOUNTINFO);
  t.is(mountHolding(mounts, '/home')!.mountPoint, '/');
  t.is(mountHolding(mounts, '/srv/my homes/alice')!.fsType, 'xfs');
  t.is(mountHolding(mounts, '/srv/my homesick')!.mountPoint, '/', 'a name that merely starts like a mount point is not in it');
  t.is(mountHolding(mounts, '/srv/quota-test/mnt')!.fsType, 'tmpfs', 'the mount on top hides the one below');
  t.is(mountHolding([], '/home'), null);
});

test('user quota options, ext4 and XFS spellings', (t) => {
  const mount = (options: string[]): MountEntry => ({ mountPoint: '/', device: '/dev/vda', fsType: 'ext4', options });
  for (const yes of [['rw', 'usrquota'], ['quota'], ['usrjquota=aquota.user', 'jqfmt=vfsv1'], ['uquota'], ['uqnoenforce']]) t.true(hasUserQuotaOption(mount(yes)), yes.join());
  for (const no of [['rw', 'relatime'], ['grpquota'], ['prjquota'], ['noquota']]) t.false(hasUserQuotaOption(mount(no)), no.join());
});

test('quotaon -p: off, accounting only, enforced, and nothing listed', (t) => {
  // Quota files made by quotacheck, quotaon not run (or refused by a kernel without a format).
  t.is(parseQuotaonState('user quota on /srv/quota-test/mnt (/dev/loop0) is off\n'), 'off');
  // The ext4 quota feature, mounted without usrquota: the kernel counts but does not enforce.
  t.is(parseQuotaonState('user quota on /srv/quota-test/a (/dev/loop0) is on (accounting)\n'), 'accounting');
  // The feature mounted with usrquota, or after quotaon -u.
  t.is(parseQuotaonState('user quota on /srv/quota-test/c (/dev/loop0) is on (enforced)\n'), 'enforced');
  // Without -v the two cannot be told apart; "on" is taken at its word.
  t.is(parseQuotaonState('user quota on /srv/quota-test/b (/dev/loop1) is on\n'), 'enforced');
  t.is(parseQuotaonState('user quota on /srv/my homes (/dev/loop1) is on (enforced)\n'), 'enforced', 'a space in the mount point');
  // Captured for a mount without quota options: the complaint goes to stderr, stdout stays empty.
  t.is(parseQuotaonState(''), null);
  t.is(parseQuotaonState('group quota on / (/dev/sda1) is on\n'), null, 'only user quota counts');
});

test('repquota csv: used, soft and hard in KiB per uid, inode limits kept', (t) => {
  const quotas = parseRepquotaCsv(REPQUOTA_CSV);
  t.is(quotas.size, 4);
  t.deepEqual(quotas.get(72001), { usedKiB: 1025, softKiB: 1024, hardKiB: 1024, inodeSoft: 0, inodeHard: 0 });
  t.deepEqual(quotas.get(72002), { usedKiB: 2049, softKiB: 1000, hardKiB: 2048, inodeSoft: 10, inodeHard: 20 });
  t.is(quotas.get(72003)!.hardKiB, 0);
  t.is(parseRepquotaCsv('').size, 0);
});

test('repquota csv: anything else is refused with the line', (t) => {
  // What -s (human-readable units) prints instead: a different header, numbers with units.
  const human = 'User,SpaceStatus,FileStatus,SpaceUsed,SpaceSoftLimit,SpaceHardLimit,SpaceGrace,FileUsed,FileSoftLimit,FileHardLimit,FileGrace\n#0,ok,ok,13K,0K,0K,,2,0,0,\n';
  t.throws(() => parseRepquotaCsv(human), { message: /repquota: no BlockUsed column/ });
  t.throws(() => parseRepquotaCsv(REPQUOTA_CSV.replace('#72001', 'alice')), { message: /repquota: not a uid: "alice,hard/ });
  t.throws(() => parseRepquotaCsv(REPQUOTA_CSV.replace(',1025,', ',1025K,')), { message: /BlockUsed is not a number/ });
  t.throws(() => parseRepquotaCsv('#0,ok,ok,13,0,0,0,2,0,0,0\n'), { message: /before the header/ });
});

test('the status says where limits are not enforced and why', (t) => {
  const [root, loop] = [parseMountinfo(MOUNTINFO)[2]!, parseMountinfo(MOUNTINFO)[4]!];
  const facts = { homeBase: '/home', missingTools: [], kernelGap: null };
  t.like(decideSupport({ ...facts, mount: root, state: null }), {
    enforced: false, accounted: false, mountPoint: '/', device: '/dev/vda', fsType: 'ext4', reason: 'not enforced: / (ext4) is mounted without usrquota',
  });
  t.is(
    decideSupport({ ...facts, mount: root, state: null, kernelGap: 'CONFIG_QFMT_V2 is not set' }).reason,
    'not enforced: / (ext4) is mounted without usrquota; the kernel cannot keep user quota (CONFIG_QFMT_V2 is not set)',
  );
  t.is(decideSupport({ ...facts, mount: root, missingTools: ['quotaon', 'setquota', 'repquota'], state: null }).reason,
    'not enforced: / (ext4): quota tools missing (quotaon, setquota, repquota), and it is mounted without usrquota');
  t.is(decideSupport({ ...facts, mount: loop, state: 'off' }).reason,
    'not enforced: user quota on /srv/quota-test/mnt (ext4) is off (run quotacheck -cum /srv/quota-test/mnt and quotaon -u /srv/quota-test/mnt)');
  const accounting = decideSupport({ ...facts, mount: loop, state: 'accounting' });
  t.like(accounting, { enforced: false, accounted: true });
  t.regex(accounting.reason!, /only accounts usage \(mount it with usrquota, or run quotaon -u \/srv\/quota-test\/mnt\)$/);
  t.like(decideSupport({ ...facts, mount: loop, state: 'enforced' }), { enforced: true, accounted: true, reason: null, device: '/dev/loop0' });
  t.is(decideSupport({ ...facts, mount: null, state: null }).reason, 'not enforced: no mount holds /home');
});

test('the walk counts what lstat sees, never a symlink target, and stops at its bound', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-disk-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const home = join(dir, 'home');
  await mkdir(join(home, 'a', 'b'), { recursive: true });
  await writeFile(join(home, 'a', 'b', 'f'), Buffer.alloc(64 * 1024, 1));
  await writeFile(join(dir, 'outside'), Buffer.alloc(4 * 1024 * 1024, 1));
  await symlink(join(dir, 'outside'), join(home, 'link'));
  const whole = await measureTree(home, { maxEntries: 1_000, deadline: Date.now() + 60_000 });
  t.true(whole.complete);
  t.is(whole.entries, 5);
  t.true(whole.usedKiB >= 64 && whole.usedKiB < 1024, `${whole.usedKiB} KiB: the 4 MiB behind the symlink is not counted`);
  const cut = await measureTree(home, { maxEntries: 2, deadline: Date.now() + 60_000 });
  t.false(cut.complete);
  t.true(cut.entries <= 2 && cut.usedKiB <= whole.usedKiB);
  const late = await measureTree(home, { maxEntries: 1_000, deadline: Date.now() - 1 });
  t.like(late, { complete: false, entries: 0, usedKiB: 0 });
  t.like(await measureTree(join(dir, 'nowhere'), { maxEntries: 10, deadline: Date.now() + 60_000 }), { usedKiB: 0, complete: true });
});
