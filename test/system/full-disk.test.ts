// The state directory on a small file system that fills up: the database on disk stays the last one
// written, whole; `nodemgr status` says what cannot be written; writes resume once there is space.
// As root, with a real daemon and a tmpfs of 512 KiB as its state directory.
import test from 'ava';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import {
  accountPrefix, isRoot, nodemgr, removeAccounts, run, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess,
  waitFor,
} from './support/host.js';
import { slicesXml, type TestSlice } from './support/slices.js';

const prefix = accountPrefix();
const cleanups: Array<() => Promise<unknown>> = [];
const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('full disk: needs root (a tmpfs mount, real accounts)', () => undefined);

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (isRoot) await removeAccounts(prefix);
});

serial('a full state directory keeps the last database whole, shows the error in status, and writing resumes when space returns', async (t) => {
  const names = ['one', 'two'].map((n) => `${prefix}_${n}`);
  const slices = (timestamp: number, extra: TestSlice[] = []) =>
    slicesXml(timestamp, [...names.map((name) => ({ name, resources: { cpu_share: 4 } })), ...extra]);
  const server = await serveDocument(slices(1000));
  const box = await sandbox({ authority_url: server.url, fetch_backoff_initial: 1, fetch_backoff_max: 2 });
  cleanups.push(() => server.close(), () => box.cleanup());
  // The state directory is a file system of its own, small enough to fill.
  const state = join(box.dir, 'state');
  await mkdir(state, { recursive: true, mode: 0o700 });
  await run('mount', ['-t', 'tmpfs', '-o', 'size=512k,mode=0700', 'tmpfs', state]);
  cleanups.push(() => run('umount', ['-l', state]));
  const database = join(state, 'nodemgr.json');

  const daemon = startDaemonProcess(box.config);
  cleanups.push(() => stopDaemonProcess(daemon, 'SIGKILL'));
  await waitFor('two running slivers', async () => {
    const db = await readDatabaseSnapshot(database).catch(() => null);
    return names.every((n) => db?.accounts[n]?.state === 'running');
  });

  // Fill the file system to the last byte.
  const filler = join(state, 'filler');
  await run('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k']).catch(() => undefined);
  const before = await readDatabaseSnapshot(database);

  // A loan set through the API: in force in memory, but the caller is told it is not on disk.
  const loan = await nodemgr(['call', '--config', box.config, 'SetLoans', names[0]!, JSON.stringify([[names[1], 'cpu_share', 2]])]);
  t.is(loan.code, 1);
  t.regex(loan.stderr, /the change is in force but the node database cannot be written \(.*ENOSPC/);
  t.deepEqual(await readDatabaseSnapshot(database), before, 'the database on disk is the last one written, whole');

  // A new document cannot be kept either: not applied, and status says why.
  server.set(slices(2000, [{ name: `${prefix}_three` }]));
  daemon.child.kill('SIGHUP');
  const status = await waitFor('status to show both problems', async () => {
    const s = await nodemgr(['status', '--config', box.config]);
    return /PROBLEM: the node database cannot be written since .*ENOSPC/.test(s.stdout) && /unwritable .*could not be kept.*ENOSPC/.test(s.stdout) ? s : null;
  });
  t.regex(status.stdout, /document in force: 1000 /);

  // Space returns: the database is written without another change, and the document applies.
  await rm(filler);
  const after = await waitFor('the database written again, with the loan and the new document', async () => {
    const db = await readDatabaseSnapshot(database);
    const lender = db.records[`sliver_${names[0]}`];
    return lender?.type === 'sliver' && lender.loans.length === 1 && db.records['timestamp']?.timestamp === 2000 ? db : null;
  }, 30_000);
  t.is(after.records[`sliver_${prefix}_three`]?.type, 'sliver');
  const healed = await waitFor('status without the problem', async () => {
    const s = await nodemgr(['status', '--config', box.config]);
    return s.stdout.includes('PROBLEM') ? null : s;
  });
  t.regex(healed.stdout, /document in force: 2000 /);
  t.regex(daemon.output(), /database written again/);
  await stopDaemonProcess(daemon);
});
