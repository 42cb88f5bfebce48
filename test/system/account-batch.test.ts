// The daemon's batched writes of the account files beside an administrator's own useradd and
// userdel, as root on the real /etc files. While the real daemon (dist/) creates and then removes
// hundreds of slivers, a loop adds and deletes accounts of another prefix with shadow-utils' tools.
// Both take the same locks (lckpwdf's fcntl lock and the per-file locks), so afterwards each set is
// exactly as intended, no entry is duplicated or lost, and pwck/grpck find nothing about either.
import test from 'ava';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import { entryName } from '../../src/host/account-files/entries.js';
import { lockAccountFiles } from '../../src/host/account-files/lock.js';
import {
  accountPrefix, isRoot, leaseTestUids, run, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess, waitFor,
  type DaemonProcess, type UidLease,
} from './support/host.js';
import { slicesXml } from './support/slices.js';

const SLIVERS = 200;
const ADMIN_ACCOUNTS = 60;
const sliverPrefix = accountPrefix();
const adminPrefix = `${accountPrefix()}adm`;
const FILES = ['/etc/passwd', '/etc/shadow', '/etc/group', '/etc/gshadow'];

let uids: UidLease | null = null;
const cleanups: Array<() => Promise<unknown>> = [];

if (!isRoot) test.skip('account batches beside useradd/userdel: needs root (the real account files)', () => undefined);
const serial = isRoot ? test.serial : test.skip;

test.before(async () => {
  if (isRoot) uids = await leaseTestUids(SLIVERS + 50, 'test/system/account-batch.test.ts');
});

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (!isRoot) return;
  for (const name of await namesIn('/etc/passwd', adminPrefix)) await run('userdel', ['-r', name]).catch(() => undefined);
  await uids?.release();
});

/** Entry names of the file that start with the prefix, as often as they occur. */
async function namesIn(file: string, prefix: string): Promise<string[]> {
  return (await readFile(file, 'utf8')).split('\n').map(entryName).filter((n): n is string => n !== null && n.startsWith(prefix));
}

/** Runs a shadow-utils tool, trying again while another writer holds the lock, as an administrator would. */
async function shadowTool(file: string, args: string[]): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await run(file, args, { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } });
      return;
    } catch (err) {
      const stderr = String((err as { stderr?: string }).stderr ?? '');
      if (!/cannot lock|try again later/i.test(stderr) || attempt > 200) throw err;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/**
 * The administrator's loop: adds ADMIN_ACCOUNTS accounts one by one and deletes every third one
 * right after adding the next, until `done()`; returns the names that must remain.
 */
async function administratorLoop(homeBase: string, done: () => boolean): Promise<{ kept: Set<string>; deleted: Set<string>; rounds: number }> {
  const kept = new Set<string>();
  const deleted = new Set<string>();
  let rounds = 0;
  for (let i = 0; ; i++) {
    const name = `${adminPrefix}${i % ADMIN_ACCOUNTS}`;
    if (i > 0 && i % ADMIN_ACCOUNTS === 0) rounds++;
    if (rounds > 0 && done()) break;
    if (kept.has(name)) {
      await shadowTool('userdel', ['-r', name]);
      kept.delete(name);
      deleted.add(name);
    } else {
      await shadowTool('useradd', ['-m', '-d', join(homeBase, name), '-c', 'an administrator account', '-U', name]);
      kept.add(name);
      deleted.delete(name);
    }
    if (i % 3 === 2 && kept.has(name)) {
      await shadowTool('userdel', ['-r', name]);
      kept.delete(name);
      deleted.add(name);
    }
  }
  return { kept, deleted, rounds };
}

async function checkOutput(file: string, args: string[]): Promise<string> {
  const { stdout, stderr } = await run(file, args).catch((err: { stdout: string; stderr: string }) => err);
  return `${stdout}${stderr}`;
}

serial('hundreds of slivers made and removed in batches beside useradd/userdel: both sets exact, nothing duplicated or lost', async (t) => {
  t.timeout(15 * 60_000);
  const names = Array.from({ length: SLIVERS }, (_, i) => `${sliverPrefix}_s${i}`);
  const server = await serveDocument(slicesXml(1000, names.map((name) => ({ name }))));
  const box = await sandbox({ authority_url: server.url }, { uids: uids! });
  const adminHomes = join(box.dir, 'admin-homes');
  await mkdir(adminHomes);
  cleanups.push(() => server.close(), () => box.cleanup());
  const dbFile = join(box.stateDir, 'nodemgr.json');
  const ownership = async () => Promise.all(FILES.map(async (f) => {
    const st = await stat(f);
    return `${f} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
  }));
  const ownershipBefore = await ownership();
  const states = async () => Object.values((await readDatabaseSnapshot(dbFile).catch(() => null))?.accounts ?? {});

  let phase: 'creating' | 'removing' | 'done' = 'creating';
  const admin = administratorLoop(adminHomes, () => phase === 'done');
  const daemon: DaemonProcess = startDaemonProcess(box.config);
  cleanups.push(() => stopDaemonProcess(daemon, 'SIGKILL'));

  await waitFor(`all ${SLIVERS} slivers running\n${daemon.output().slice(-2000)}`, async () =>
    (await states()).filter((a) => a.state === 'running').length === SLIVERS, { timeoutMs: 10 * 60_000, intervalMs: 500 });
  t.deepEqual((await namesIn('/etc/passwd', sliverPrefix)).sort(), [...names].sort(), 'every sliver once in passwd');

  phase = 'removing';
  server.set(slicesXml(2000, []));
  daemon.child.kill('SIGHUP');
  await waitFor('every sliver removed', async () => (await states()).length === 0 && (await namesIn('/etc/passwd', sliverPrefix)).length === 0,
    { timeoutMs: 10 * 60_000, intervalMs: 500 });
  phase = 'done';
  const { kept, deleted, rounds } = await admin;
  t.log(`administrator: ${rounds} rounds of ${ADMIN_ACCOUNTS} accounts beside the daemon's batches`);
  t.true(rounds >= 1);

  for (const file of FILES) {
    t.deepEqual(await namesIn(file, sliverPrefix), [], `no sliver left in ${file}`);
    t.deepEqual((await namesIn(file, adminPrefix)).sort(), [...kept].sort(), `exactly the administrator's accounts in ${file}, each once`);
    const all = (await readFile(file, 'utf8')).split('\n').map(entryName).filter((n) => n !== null);
    t.is(new Set(all).size, all.length, `no entry of ${file} duplicated`);
  }
  for (const name of deleted) t.false(kept.has(name));
  t.deepEqual(await ownership(), ownershipBefore, 'each file keeps its mode and owner (/etc/shadow stays unreadable to others)');
  for (const file of FILES) t.true((await stat(`${file}-`)).isFile(), `the backup ${file}- is kept`);
  const check = `${await checkOutput('pwck', ['-r'])}\n${await checkOutput('grpck', ['-r'])}`;
  const ours = check.split('\n').filter((line) => line.includes(sliverPrefix) || line.includes(adminPrefix) || /duplicate/i.test(line));
  t.deepEqual(ours, [], 'pwck and grpck find nothing about either set, and no duplicate');

  await stopDaemonProcess(daemon);
  await rm(adminHomes, { recursive: true, force: true });
});

serial("useradd waits for the daemon's lock of the account files (the fcntl lock of lckpwdf, not a flock)", async (t) => {
  const name = `${adminPrefix}w`;
  const lock = await lockAccountFiles({ lockFile: '/etc/.pwd.lock', files: FILES, timeoutMs: 15_000 });
  const started = Date.now();
  let finished = 0;
  const useradd = run('useradd', ['-M', '-c', 'an administrator account', '-U', name]).then(() => (finished = Date.now()));
  await new Promise((resolve) => setTimeout(resolve, 1500));
  t.is(finished, 0, 'useradd is still waiting while the lock is held');
  t.deepEqual(await namesIn('/etc/passwd', name), []);
  await lock.release();
  await useradd;
  t.true(finished - started >= 1500, 'useradd went on once the lock was released');
  t.deepEqual(await namesIn('/etc/passwd', name), [name]);
  await run('userdel', [name]);
});
