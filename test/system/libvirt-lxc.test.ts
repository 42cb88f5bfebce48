// lxc slivers for real: a daemon with a real libvirtd (lxc:///system), root file systems built by
// the test (busybox-static and an /sbin/init script, as tar archives) fetched into the image cache
// from file: URIs, each container's root an overlay over a base unpacked once per archive.
import { access, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { readDomainDetails } from '../../src/runtimes/libvirt/domain-xml.js';
import { LXC_READY_FILE, LXC_ROOTS_DIR } from '../../src/runtimes/libvirt/lxc-root.js';
import { accountPrefix, cli, freePort, run, waitFor } from './support/host.js';
import { fileUri, guestNode, lxcUnavailable, virshOn, type GuestNode } from './support/libvirt.js';
import { buildTestRootfs, type TestRootfs } from './support/rootfs.js';
import type { TestSlice } from './support/slices.js';

const URI = 'lxc:///system';
const { virsh, domainState, liveDetails } = virshOn(URI);
const MARKER = 'nodemgr-ready';


const reason = await lxcUnavailable();
const serial = reason === null ? test.serial : test.serial.skip;
if (reason !== null) test.skip(`lxc system tests: ${reason}`, () => undefined);

const prefix = accountPrefix();
const MACS = ['52:54:00:4e:4c:01', '52:54:00:4e:4c:02'];
const POOL = [[MACS[0]!, '192.0.2.41/24'], [MACS[1]!, '192.0.2.42/24']] as const;
let rootfs: TestRootfs | null = null;

test.before(async () => {
  if (reason === null) rootfs = await buildTestRootfs(MARKER);
});

// Whatever a failed test left: our test domains, by their prefix, and their roots' mounts.
test.after.always(async () => {
  if (reason !== null) return;
  for (const name of await testDomains()) {
    await run('virsh', ['-c', URI, 'destroy', name]).catch(() => undefined);
    await run('virsh', ['-c', URI, 'undefine', name]).catch(() => undefined);
  }
  for (const mountPoint of await overlayMounts('/guests/')) {
    if (mountPoint.includes(`/${prefix}`)) await run('umount', ['-l', mountPoint]).catch(() => undefined);
  }
  await rootfs?.remove();
});

async function testDomains(): Promise<string[]> {
  const { stdout } = await run('virsh', ['-c', URI, 'list', '--all', '--name']).catch(() => ({ stdout: '' }));
  return stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith(prefix));
}

/** Mount points of overlays whose path contains `part`. */
async function overlayMounts(part: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n')
    .filter((line) => / - overlay /.test(line))
    .map((line) => line.split(' ')[4]!)
    .filter((mountPoint) => mountPoint.includes(part));
}

function node(t: ExecutionContext, settings: Record<string, string | number> = {}): Promise<GuestNode> {
  return guestNode(t, {
    settings: { guest_ready_timeout: 60, ...settings },
    pool: POOL,
    // A test that failed half way may have left a container running over a mounted root.
    async beforeCleanup(n) {
      for (const name of await testDomains()) {
        const details = readDomainDetails(await virsh('dumpxml', name).catch(() => ''));
        if (details.marker?.guestDir !== n.guests) continue;
        await run('virsh', ['-c', URI, 'destroy', name]).catch(() => undefined);
        await run('virsh', ['-c', URI, 'undefine', name]).catch(() => undefined);
      }
      for (const mountPoint of await overlayMounts(n.guests)) await run('umount', ['-l', mountPoint]).catch(() => undefined);
    },
  });
}

function containerSlice(name: string, resources: Record<string, string | number> = {}, silent = false): TestSlice {
  return { name, resources: { runtime: 'lxc', vref: fileUri(silent ? rootfs!.silent : rootfs!.ready), ...resources } };
}

/**
 * Runs a shell command inside the container, as the ssh gateway does. virsh's child that joins the
 * container's cgroup and namespaces has been seen, once in many runs and right after a restart of
 * the container, to fail with 125 (EXIT_CANCELED: before the command ran) and to succeed when tried
 * again; that failure alone is tried again, for a few seconds. The command's own failures are not.
 */
async function inside(name: string, command: string): Promise<string> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      return (await virsh('lxc-enter-namespace', name, '--noseclabel', '/bin/sh', '-c', command)).trim();
    } catch (error) {
      const joinFailed = /unexpected exit status 125/.test(String((error as { stderr?: string }).stderr));
      if (!joinFailed || Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** A cgroup v1 file of the container's own group, as the kernel enforces it (read on the host). */
async function cgroupValue(name: string, controller: string, file: string): Promise<string> {
  const lines = (await inside(name, 'cat /proc/self/cgroup')).split('\n');
  const line = lines.find((l) => l.split(':')[1]?.split(',').includes(controller));
  if (!line) throw new Error(`${name}: no ${controller} cgroup in ${JSON.stringify(lines)}`);
  return (await readFile(join('/sys/fs/cgroup', controller, line.split(':').slice(2).join(':'), file), 'utf8')).trim();
}

const exists = (path: string) => access(path).then(() => true, () => false);

async function stateOf(n: GuestNode, name: string) {
  return (await n.db()).accounts[name];
}

serial('slices become running containers over one shared base, with their limits; the gateway enters them; Stop, Start and ReCreate; removal leaves nothing', async (t) => {
  t.timeout(6 * 60_000, 'two containers, a restart and a re-creation');
  const port = await freePort();
  const n = await node(t, { ssh_port: port, ssh_address: '127.0.0.1' });
  const key = join(n.box.dir, 'id_user');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'user@test', '-f', key]);
  const publicKey = (await readFile(`${key}.pub`, 'utf8')).trim();
  const a = `${prefix}ca`;
  const b = `${prefix}cb`;
  const slices = [
    { ...containerSlice(a, { cpu_share: 3, cpu_cap: 50 }), users: { 1: publicKey } },
    containerSlice(b, { mem_max: 256 * 1024 }),
  ];
  n.setDocument(slices);
  const started = Date.now();
  n.start();
  await waitFor('both containers to run', async () =>
    (await stateOf(n, a))?.state === 'running' && (await stateOf(n, b))?.state === 'running', 120_000);
  t.log(`document to two running containers: ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // Running, ours, and ready by their own word: the file their init wrote.
  for (const name of [a, b]) {
    t.is(await domainState(name), 'running', name);
    const live = await liveDetails(name);
    t.is(live.type, 'lxc');
    t.is(live.marker?.name, name);
    const ready = await readFile(join(n.guests, name, 'rootfs', LXC_READY_FILE), 'utf8');
    t.regex(ready, new RegExp(`^${MARKER} hostname=${name} pid=1\\n$`), `${name}'s ready file`);
  }
  // GetSliverStatus shows the container as libvirt holds it, its root the overlay mount.
  const status = JSON.parse((await run(process.execPath, [cli, 'call', '--config', n.box.config, 'GetSliverStatus', a])).stdout);
  t.is(status.runtime, 'lxc');
  t.like(status.guest, { runtime: 'lxc', state: 'running', cpu_shares: 3072, overlay: join(n.guests, a, 'rootfs') });

  // Limits from the rspec and the default size (small: 512 MiB), in the definition, in what
  // libvirt reports of the running container, and in the cgroups the container itself sees.
  const liveA = await liveDetails(a);
  t.is(liveA.cpuShares, 3072, 'cpu_share 3');
  t.is(liveA.cpuPeriodUs, 100_000);
  t.is(liveA.cpuQuotaUs, 50_000, 'cpu_cap 50');
  t.is(liveA.memoryKiB, 512 * 1024, 'small: 512 MiB');
  t.is((await liveDetails(b)).memoryKiB, 256 * 1024, 'mem_max 262144 KiB');
  t.is((await liveDetails(b)).cpuShares, 1024, 'the default share');
  const sched = await virsh('schedinfo', a, '--live');
  t.regex(sched, /cpu_shares\s*:\s*3072/);
  t.regex(sched, /vcpu_quota\s*:\s*50000/);
  t.regex(await virsh('memtune', b, '--live'), /hard_limit\s*:\s*262144\b/);
  t.is(await cgroupValue(a, 'cpu', 'cpu.shares'), '3072');
  t.is(await cgroupValue(a, 'cpu', 'cpu.cfs_quota_us'), '50000');
  t.is(await cgroupValue(b, 'memory', 'memory.limit_in_bytes'), String(256 * 1024 * 1024));
  t.deepEqual([...(await liveDetails(a)).macs, ...(await liveDetails(b)).macs].sort(), [...MACS].sort());

  // virsh enters it, and so does an ssh login through the gateway.
  t.is(await inside(a, 'echo in-$((6*7))'), 'in-42');
  const viaSsh = await run('ssh', [
    '-p', String(port), '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', `${a}@127.0.0.1`, 'echo ssh-$((6*7)) $(hostname)',
  ], { timeout: 60_000 });
  t.is(viaSsh.stdout.trim(), `ssh-42 ${a}`);

  // Copy on write: one base for both, each root an overlay of its own; a write stays in its sliver.
  const bases = await readdir(join(n.guests, LXC_ROOTS_DIR));
  t.is(bases.length, 1, `one base for one archive: ${bases.join(', ')}`);
  t.deepEqual((await overlayMounts(n.guests)).sort(), [join(n.guests, a, 'rootfs'), join(n.guests, b, 'rootfs')].sort());
  await inside(a, 'echo mine > /root/note');
  t.is(await readFile(join(n.guests, a, 'upper', 'root', 'note'), 'utf8'), 'mine\n');
  t.is(await inside(b, 'cat /root/note 2>/dev/null || echo absent'), 'absent');
  t.false(await exists(join(n.guests, LXC_ROOTS_DIR, bases[0]!, 'root', 'note')), 'the base is never written');

  // Stop: the container is off and its root unmounted; Start: mounted and ready again, with what it wrote.
  t.is(await n.call('Stop', a), '1');
  await waitFor('the container to be off', async () => (await domainState(a)) === 'shut off' && (await stateOf(n, a))?.state === 'stopped', 60_000);
  t.deepEqual(await overlayMounts(join(n.guests, a)), [], 'its root is unmounted');
  t.is(await n.call('Start', a), '1');
  await waitFor('the container to run again', async () => (await stateOf(n, a))?.state === 'running', 60_000);
  t.is(await inside(a, 'cat /root/note'), 'mine');

  // ReCreate: a new domain over a fresh root (stateless), the same address.
  const before = await liveDetails(a);
  t.is(await n.call('ReCreate', a), '1');
  await waitFor('a new container to run', async () => {
    const d = await liveDetails(a).catch(() => null);
    return d !== null && d.uuid !== before.uuid && (await stateOf(n, a))?.state === 'running' && (await domainState(a)) === 'running';
  }, 60_000);
  t.is(await inside(a, 'cat /root/note 2>/dev/null || echo absent'), 'absent');
  t.deepEqual((await liveDetails(a)).macs, before.macs);

  // Removed from the document: domain, root, files and lease go; the base goes with its last user.
  n.setDocument([slices[1]!]);
  await waitFor('the first container to go', async () => (await domainState(a)) === null && (await stateOf(n, a)) === undefined, 60_000);
  t.false(await exists(join(n.guests, a)));
  t.deepEqual(await overlayMounts(join(n.guests, a)), []);
  t.deepEqual(await readdir(join(n.guests, LXC_ROOTS_DIR)), bases, 'the base stays while another container uses it');
  n.setDocument([]);
  await waitFor('the second container to go', async () => (await domainState(b)) === null && (await stateOf(n, b)) === undefined, 60_000);
  t.deepEqual(await readdir(n.guests).then((names) => names.filter((x) => x !== LXC_ROOTS_DIR)), []);
  t.deepEqual(await readdir(join(n.guests, LXC_ROOTS_DIR)), [], 'no base without a container');
  t.deepEqual(await overlayMounts(n.guests), []);
  t.deepEqual((await n.db()).addresses, {});
});

serial('a container whose init never writes the marker is powered off, reported failed with the reason, and retried', async (t) => {
  t.timeout(4 * 60_000, 'two start attempts');
  const n = await node(t, { guest_ready_timeout: 5, op_retry_initial: 3, op_retry_max: 600 });
  const name = `${prefix}cs`;
  n.setDocument([containerSlice(name, {}, true)]);
  n.start();
  const failed = await waitFor('the start to fail', async () => {
    const s = await stateOf(n, name);
    return s?.state === 'failed' ? s : null;
  }, 120_000);
  t.regex(failed.reason ?? '', new RegExp(`container did not report ready \\("${MARKER}" in ${LXC_READY_FILE}\\) within 5 s`));
  t.is(await domainState(name), 'shut off', 'torn down');
  t.deepEqual(await overlayMounts(join(n.guests, name)), [], 'its root is unmounted');
  // Its init did run: what it wrote is in the sliver's upper layer.
  t.regex(await readFile(join(n.guests, name, 'upper', 'tmp', 'nodemgr-silent'), 'utf8'), /silent, as asked/);
  const again = await waitFor('a second attempt', async () => {
    const s = await stateOf(n, name);
    return (s?.attempts ?? 0) >= 2 ? s : null;
  }, 120_000);
  t.true(again!.attempts >= 2, 'started again after its backoff, the attempts counted');
});

serial('after kill -9 of the daemon and its container undefined behind its back, a restart leaves nothing: no mount, files, base or lease', async (t) => {
  t.timeout(4 * 60_000, 'two daemon starts');
  const n = await node(t);
  const name = `${prefix}ck`;
  n.setDocument([containerSlice(name)]);
  n.start();
  await waitFor('the container to run', async () => (await stateOf(n, name))?.state === 'running', 120_000);
  n.daemon!.child.kill('SIGKILL');
  await n.daemon!.exited;
  // What a crash in the middle of a destroy leaves: the domain gone, its root still mounted.
  await virsh('destroy', name);
  await virsh('undefine', name);
  t.is((await overlayMounts(join(n.guests, name))).length, 1, 'the root is still mounted');

  n.setDocument([]);
  n.start();
  await waitFor('the remains to go', async () =>
    !(await exists(join(n.guests, name))) && (await overlayMounts(n.guests)).length === 0 && (await stateOf(n, name)) === undefined, 60_000);
  await waitFor('the base to go', async () => (await readdir(join(n.guests, LXC_ROOTS_DIR)).catch(() => [])).length === 0, 30_000);
  t.deepEqual((await n.db()).addresses, {});
});
