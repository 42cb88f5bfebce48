// Disk limits against the real kernel (as root): a small ext4 image with user quota, loop-mounted
// on a temp dir and used as the home base, where a sliver's writes must stop at disk_max; and the
// root file system, where limits cannot be enforced and usage comes from a walk that must agree
// with du. The enforcement tests need a kernel that keeps user quota (CONFIG_QFMT_V2); on one
// without, they are skipped with the reason support() gives.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmod, chown, link, mkdir, mkdtemp, open, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDiskLimits, type DiskSupport } from '../../src/limits/disk.js';
import { isRoot, leaseTestUids, run } from './support/host.js';

const MiB = 1024 * 1024;

interface ScratchPaths {
  readonly scratch: string;
  readonly image: string;
  readonly mnt: string;
}

interface QuotaFs extends ScratchPaths {
  /** The kernel mounted an image with the ext4 quota feature, or quotaon succeeded on quota files. */
  readonly kernelQuota: boolean;
  readonly support: DiskSupport;
}

/**
 * On a fresh ext4, `mkfs.ext4 -O quota -E quotatype=usrquota` plus mounting with `usrquota` is all
 * it takes: the kernel turns user quota on (and enforces it) at mount. A kernel without a quota
 * format refuses that mount, so the image is then made again without the feature and given quota
 * files (quotacheck) and quotaon, the way that works on file systems without the feature.
 */
async function makeQuotaFs(paths: ScratchPaths): Promise<QuotaFs> {
  const { image, mnt } = paths;
  await mkdir(mnt);
  await run('truncate', ['-s', '64M', image]);
  await run('mkfs.ext4', ['-q', '-F', '-O', 'quota', '-E', 'quotatype=usrquota', image]);
  let kernelQuota = await run('mount', ['-o', 'loop,usrquota', image, mnt]).then(() => true, () => false);
  if (!kernelQuota) {
    await run('mkfs.ext4', ['-q', '-F', image]);
    await run('mount', ['-o', 'loop,usrquota', image, mnt]);
    await run('quotacheck', ['-cum', mnt]);
    kernelQuota = await run('quotaon', ['-u', mnt]).then(() => true, () => false);
  }
  const support = await createDiskLimits({ homeBase: mnt }).support();
  return { ...paths, kernelQuota, support };
}

async function removeQuotaFs(fs: ScratchPaths): Promise<void> {
  await run('umount', [fs.mnt]).catch(() => run('umount', ['-l', fs.mnt])).catch(() => undefined);
  // `mount -o loop` detaches its device at umount; one left by a failed mount is detached here.
  const { stdout } = await run('losetup', ['-j', fs.image]).catch(() => ({ stdout: '' }));
  for (const device of stdout.split('\n').map((l) => l.split(':')[0]!).filter(Boolean)) {
    await run('losetup', ['-d', device]).catch(() => undefined);
  }
  await rm(fs.scratch, { recursive: true, force: true });
}

let quotaFs: QuotaFs | null = null;
// The slivers' uids (files are written as them): leased, so that no daemon's account has one.
const uids = isRoot ? await leaseTestUids(100, 'test/system/disk.test.ts') : null;
const uidAt = (n: number) => uids!.min + n;
if (isRoot) {
  const scratch = await mkdtemp(join(tmpdir(), 'nodemgr-disk-'));
  // The slivers' uids must reach their homes below it.
  await chmod(scratch, 0o755);
  const paths = { scratch, image: join(scratch, 'homes.img'), mnt: join(scratch, 'homes') };
  try {
    quotaFs = await makeQuotaFs(paths);
  } catch (error) {
    await removeQuotaFs(paths);
    throw error;
  }
}

test.after.always(async () => {
  if (quotaFs) await removeQuotaFs(quotaFs);
  await uids?.release();
});

const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('disk limits: need root (an ext4 image loop-mounted with quota, writes as other uids)', () => undefined);
const enforcing = quotaFs?.kernelQuota ? test.serial : test.skip;
const unless = quotaFs && !quotaFs.kernelQuota ? ` (skipped: ${quotaFs.support.reason})` : isRoot ? '' : ' (skipped: needs root)';

/** Writes `bytes` of zeros to `file` as `uid`; the outcome as dd reports it. */
function writeAs(uid: number, file: string, bytes: number): { ok: boolean; stderr: string } {
  const result = spawnSync('setpriv', [
    `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups',
    'dd', 'if=/dev/zero', `of=${file}`, 'bs=64K', `count=${bytes / 65_536}`, 'conv=fsync', 'status=none',
  ], { encoding: 'utf8' });
  return { ok: result.status === 0, stderr: result.stderr };
}

async function sliverHome(fs: QuotaFs, uid: number): Promise<string> {
  const home = join(fs.mnt, `s${uid}`);
  await mkdir(home);
  await chown(home, uid, uid);
  return home;
}

async function duKiB(path: string): Promise<number> {
  const { stdout } = await run('du', ['-sk', path]);
  return Number(stdout.split('\t')[0]);
}

serial('support() names the mount of a home base and says whether its quota is enforced', async (t) => {
  const fs = quotaFs!;
  if (fs.kernelQuota) {
    t.like(fs.support, { enforced: true, accounted: true, reason: null, mountPoint: fs.mnt, fsType: 'ext4' });
    t.regex(fs.support.device, /^\/dev\/loop\d+$/);
  } else {
    t.like(fs.support, { enforced: false, mountPoint: fs.mnt, fsType: 'ext4' });
    t.true(fs.support.reason!.startsWith(`not enforced: user quota on ${fs.mnt} (ext4) is off`), fs.support.reason!);
  }

  // The temp dir's own file system (the root one on a usual host), and the daemon's own verdict on it.
  const { stdout } = await run('findmnt', ['-n', '-o', 'TARGET,FSTYPE,OPTIONS', '--target', fs.scratch]);
  const [target, fsType, options] = stdout.trim().split(/\s+/);
  const plain = createDiskLimits({ homeBase: join(fs.scratch, 'home') });
  const verdict = await plain.support();
  t.like(verdict, { mountPoint: target, fsType });
  if (!/(^|,)(usr)?quota(,|$)/.test(options!)) {
    t.false(verdict.enforced);
    t.true(verdict.reason!.startsWith(`not enforced: ${target} (${fsType}) is mounted without usrquota`), verdict.reason!);
  }
  t.is(await plain.support(), verdict, 'the verdict is kept');
  t.not(await plain.support({ refresh: true }), verdict, 'and looked for again on request');
});

enforcing(`a write past disk_max fails with "Disk quota exceeded", and usage reads the quota${unless}`, async (t) => {
  const fs = quotaFs!;
  const uid = uidAt(1);
  const limits = createDiskLimits({ homeBase: fs.mnt });
  const home = await sliverHome(fs, uid);
  await limits.apply(uid, 1024);
  await limits.apply(uid, 1024);

  const write = writeAs(uid, join(home, 'big'), 2 * MiB);
  t.false(write.ok);
  t.regex(write.stderr, /Disk quota exceeded/);
  t.true((await stat(join(home, 'big'))).size <= MiB);

  const usage = await limits.usage(uid, home);
  t.like(usage, { limitKiB: 1024, enforced: true, source: 'quota', complete: true });
  t.is(usage.usedKiB, await duKiB(home), 'the quota counts what du sees in the home');
  t.true(usage.usedKiB > 900 && usage.usedKiB <= 1024, `${usage.usedKiB} KiB`);
});

enforcing(`a raised limit lets the write through, and a removed one lets anything through${unless}`, async (t) => {
  const fs = quotaFs!;
  const uid = uidAt(2);
  const limits = createDiskLimits({ homeBase: fs.mnt });
  const home = await sliverHome(fs, uid);
  await limits.apply(uid, 1024);
  t.false(writeAs(uid, join(home, 'a'), 2 * MiB).ok);

  await limits.apply(uid, 4096);
  t.true(writeAs(uid, join(home, 'a'), 2 * MiB).ok);
  t.is((await stat(join(home, 'a'))).size, 2 * MiB);
  t.like(await limits.usage(uid, home), { limitKiB: 4096 });
  t.false(writeAs(uid, join(home, 'b'), 4 * MiB).ok, 'the raised limit still holds');

  await limits.apply(uid, null);
  t.true(writeAs(uid, join(home, 'b'), 4 * MiB).ok);
  const after = await limits.usage(uid, home);
  t.like(after, { limitKiB: null, source: 'quota' });
  t.true(after.usedKiB > 6 * 1024, `${after.usedKiB} KiB`);

  const all = await limits.usageAll([{ uid, home }, { uid: uids!.max, home: join(fs.mnt, 'none') }]);
  t.deepEqual(all.get(uid), after);
  t.like(all.get(uids!.max), { usedKiB: 0, limitKiB: null, source: 'quota' });
});

serial('without quota, usage walks the home as du does: symlinks not followed, sparse files by their blocks', async (t) => {
  const fs = quotaFs!;
  const base = join(fs.scratch, 'plain');
  const home = join(base, `s${uidAt(3)}`);
  await mkdir(join(home, 'a', 'b', 'c'), { recursive: true });
  await writeFile(join(home, 'small'), Buffer.alloc(100 * 1024, 7));
  await writeFile(join(home, 'a', 'b', 'c', 'deep'), Buffer.alloc(10 * 1024, 7));
  await writeFile(join(home, 'empty'), '');
  await link(join(home, 'small'), join(home, 'a', 'small-again'));
  // 8 MiB outside the home, reached through a symlink inside it.
  await writeFile(join(fs.scratch, 'outside'), Buffer.alloc(8 * MiB, 7));
  await symlink(join(fs.scratch, 'outside'), join(home, 'a', 'to-outside'));
  await symlink('nowhere', join(home, 'dangling'));
  // 100 MiB long, 16 KiB written in the middle.
  const sparse = await open(join(home, 'sparse'), 'w');
  await sparse.truncate(100 * MiB);
  await sparse.write(Buffer.alloc(16 * 1024, 7), 0, 16 * 1024, 50 * MiB);
  await sparse.close();

  const limits = createDiskLimits({ homeBase: base });
  const s = await limits.support();
  t.false(s.accounted, `the temp dir's file system has no quota here: ${s.reason}`);
  const usage = await limits.usage(uidAt(3), home);
  t.like(usage, { limitKiB: null, enforced: false, source: 'walk', complete: true });
  t.is(usage.usedKiB, await duKiB(home));
  t.true(usage.usedKiB < 1024, `${usage.usedKiB} KiB: neither the symlink's target nor the sparse file's holes count`);
  const all = await limits.usageAll([{ uid: uidAt(3), home }, { uid: uidAt(4), home: join(base, 'none') }]);
  t.deepEqual(all.get(uidAt(3)), usage);
  t.is(all.get(uidAt(4))!.usedKiB, 0);
});
