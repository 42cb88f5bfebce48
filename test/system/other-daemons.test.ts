// Two daemons on one host, each with its own state directory and uid range (each sandbox leases
// its own), sharing one cgroup parent: neither touches the other's accounts or groups. As root,
// with real daemon processes.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createSliverCgroups } from '../../src/limits/cgroups.js';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import {
  accountPrefix, isRoot, passwdEntries, removeAccounts, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess,
  waitFor, type DaemonProcess, type DocumentServer, type Sandbox,
} from './support/host.js';
import { slicesXml } from './support/slices.js';

const prefix = accountPrefix();
const cleanups: Array<() => Promise<unknown>> = [];
const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('two daemons on one host: needs root (real accounts and cgroups)', () => undefined);

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (isRoot) await removeAccounts(prefix);
});

async function daemonOf(sliver: string, cgroupParent: string): Promise<{ box: Sandbox; daemon: DaemonProcess; server: DocumentServer }> {
  const server = await serveDocument(slicesXml(1000, [{ name: sliver }]));
  const box = await sandbox({ authority_url: server.url, cgroup_parent: cgroupParent });
  cleanups.push(() => server.close(), () => box.cleanup());
  const daemon = startDaemonProcess(box.config);
  cleanups.push(() => stopDaemonProcess(daemon, 'SIGKILL'));
  await waitFor(`${sliver} running`, async () =>
    (await readDatabaseSnapshot(join(box.stateDir, 'nodemgr.json')).catch(() => null))?.accounts[sliver]?.state === 'running');
  return { box, daemon, server };
}

serial('a daemon never removes the cgroups of another daemon\'s slivers under a shared parent', async (t) => {
  const parent = `nodemgr-test-shared-${randomBytes(3).toString('hex')}`;
  const cgroups = await createSliverCgroups({ parent });
  const first = `${prefix}_first`;
  const second = `${prefix}_second`;
  const one = await daemonOf(first, parent);
  await waitFor(`${first}'s group`, async () => (await cgroups.list()).includes(first));

  const other = await daemonOf(second, parent);
  t.false(one.box.uids.min <= other.box.uids.max && other.box.uids.min <= one.box.uids.max, 'the daemons\' uid ranges are apart');
  await waitFor(`${second}'s group`, async () => (await cgroups.list()).includes(second));
  // A few more passes of the second daemon, each of which refreshes the limits. A sync is a fetch
  // and then a converge pass (with its refresh), and syncs never overlap: a pass is over once the
  // fetch of the next sync reaches the authority.
  for (let pass = 0; pass < 3 + 1; pass++) {
    const fetched = other.server.requests;
    other.daemon.child.kill('SIGHUP');
    await waitFor(`sync ${pass + 1} of the second daemon`, async () => other.server.requests > fetched);
  }
  t.deepEqual((await cgroups.list()).sort(), [first, second].sort(), 'both groups are there');
  t.deepEqual((await passwdEntries(prefix)).map((e) => e.name).sort(), [first, second].sort(), 'both accounts are there');
  t.notRegex(other.daemon.output(), new RegExp(`cgroup of a removed sliver removed sliver=${first}`));
});
