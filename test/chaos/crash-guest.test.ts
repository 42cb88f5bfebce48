// Crash consistency of guests: the daemon is killed with SIGKILL at a random moment while it
// defines and boots an lxc sliver (image into the cache, address lease, guest directory, overlay
// root, domain); after the restart the node converges: one running domain with its lease, overlay
// and mount, and after its removal nothing at all. As root, with a real libvirtd (lxc:///system).
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess, waitFor, accountPrefix, type DaemonProcess } from '../system/support/host.js';
import { fileUri, lxcUnavailable } from '../system/support/libvirt.js';
import { buildTestRootfs, type TestRootfs } from '../system/support/rootfs.js';
import { slicesXml } from '../system/support/slices.js';
import { differences, nodeState, type Inventory, type NodeLayout } from './support/inventory.js';
import { scaled } from './support/scale.js';

const URI = 'lxc:///system';
const MARKER = 'nodemgr-ready';
const TRIALS = scaled(2, 20);

const reason = await lxcUnavailable();
const serial = reason === null ? test.serial : test.serial.skip;
if (reason !== null) test.skip(`crash consistency of guests: ${reason}`, () => undefined);

const prefix = accountPrefix();
const cleanups: Array<() => Promise<unknown>> = [];
let rootfs: TestRootfs | null = null;
const random = (below: number) => Math.floor(Math.random() * below);

test.before(async () => {
  if (reason === null) rootfs = await buildTestRootfs(MARKER);
});

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await rootfs?.remove();
});

serial(`kill -9 while an lxc guest is defined and booted: after each restart one running guest, and after its removal nothing`, async (t) => {
  const guest = `${prefix}_ct`;
  let timestamp = 1;
  const documentWith = (present: boolean) => slicesXml(++timestamp, present
    ? [{ name: guest, resources: { runtime: 'lxc', vref: fileUri(rootfs!.ready) } }]
    : []);
  const server = await serveDocument(documentWith(false));
  const box = await sandbox({ authority_url: server.url, guest_ready_timeout: 60 });
  const guests = join(box.dir, 'guests');
  await writeFile(join(box.dir, 'mac-addresses'), '52:54:00:4e:43:01 192.0.2.61/24\n52:54:00:4e:43:02 192.0.2.62/24\n');
  let daemon: DaemonProcess | null = null;
  cleanups.push(async () => {
    if (daemon) await stopDaemonProcess(daemon, 'SIGKILL');
    // What a failure may have left: the domain and its root's mount.
    await run('virsh', ['-c', URI, 'destroy', guest]).catch(() => undefined);
    await run('virsh', ['-c', URI, 'undefine', guest]).catch(() => undefined);
    await run('umount', ['-l', join(guests, guest, 'rootfs')]).catch(() => undefined);
    await server.close();
    await box.cleanup();
  });
  const config = await readFile(box.config, 'utf8');
  const layout: NodeLayout = {
    stateDir: box.stateDir, runDir: join(box.dir, 'run'), homeBase: '/home', uidMin: box.uids.min, uidMax: box.uids.max,
    cgroupParent: /^cgroup_parent = (.*)$/m.exec(config)![1]!, shaping: null, guests: { dir: guests, uri: URI },
  };
  const start = async () => {
    daemon = startDaemonProcess(box.config);
    await waitFor('the daemon to start', async () => daemon!.output().includes('daemon starting'));
  };
  const none: Inventory = { accounts: [], groups: [], shadowLines: [], homes: [], runFiles: [], cgroups: [], trafficClassUids: [], strayTrafficClasses: [], classifiedUids: [], addressLeases: [], domains: [], guestDirs: [], lxcMounts: [], lxcBases: [] };
  const one: Inventory = { ...none, addressLeases: [guest], domains: [guest], guestDirs: [guest], lxcMounts: [join(guests, guest, 'rootfs')] };
  /** Waits for the node to hold `expected` (and `bases` unpacked roots); what still differs then. */
  const settle = async (expected: Inventory, bases: number, running: boolean) => {
    let last: string[] = [];
    await waitFor('convergence', async () => {
      const state = await nodeState(layout);
      last = differences({ ...state.inventory, lxcBases: [] }, expected);
      if (state.inventory['lxcBases']!.length !== bases) last.push(`${state.inventory['lxcBases']!.length} unpacked bases, not ${bases}`);
      if (running && state.database.accounts[guest]?.state !== 'running') last.push(`${guest} is ${state.database.accounts[guest]?.state ?? 'absent'}`);
      return last.length === 0;
    }, 180_000).catch(() => undefined);
    if (last.length > 0) t.log(daemon?.output().split('\n').slice(-30).join('\n'));
    return last;
  };

  await start();
  // A first run without a kill: how long from the document to a running guest.
  let began = Date.now();
  server.set(documentWith(true));
  daemon!.child.kill('SIGHUP');
  t.deepEqual(await settle(one, 1, true), [], 'the guest runs');
  const bootMs = Date.now() - began;
  server.set(documentWith(false));
  daemon!.child.kill('SIGHUP');
  t.deepEqual(await settle(none, 0, false), [], 'the guest is gone, and everything of it');

  for (let trial = 1; trial <= TRIALS; trial++) {
    began = Date.now();
    server.set(documentWith(true));
    daemon!.child.kill('SIGHUP');
    // Not a wait for something: the kill comes at a random moment of the create.
    await new Promise((r) => setTimeout(r, random(bootMs)));
    daemon!.child.kill('SIGKILL');
    await daemon!.exited;
    const killedAt = Date.now() - began;
    await start();
    t.deepEqual(await settle(one, 1, true), [], `trial ${trial}: after a kill ${killedAt} ms into the create, one running guest`);
    server.set(documentWith(false));
    daemon!.child.kill('SIGHUP');
    t.deepEqual(await settle(none, 0, false), [], `trial ${trial}: removed, nothing of it is left`);
    t.log(`trial ${trial}: killed ${killedAt} ms into a ${bootMs} ms create; converged, then removed with 0 orphans`);
  }
  console.log(`crash consistency: lxc guest define and boot: ${TRIALS} kills, 0 orphans (domains, guest directories, overlays, mounts, leases, bases)`);
  await stopDaemonProcess(daemon!);
  daemon = null;
});
