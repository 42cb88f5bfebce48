// Virtual clusters for real: a daemon with the real libvirtd (software emulation), a repository
// served over loopback HTTP with one description and a gzip-compressed disk (an ext2 file system
// like a cluster node's image), the test guest's kernel and initramfs booted directly; each node's
// init prints the vc-out.xml found on its disk, takes its private address from it, and a compute
// pings the frontend. `nodemgr vc` as a user runs it.
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { buildTestGuest, VC_NET_PREFIX, VC_OUT_BEGIN, VC_OUT_END, type TestGuest } from './support/guest.js';
import { cli, run, startDaemonProcess, waitFor } from './support/host.js';
import { guestNode, libvirtUnavailable, virshOn, type GuestNode } from './support/libvirt.js';
import { serveVcRepository } from './support/vc-repository.js';

const URI = 'qemu:///system';
const { domainState } = virshOn(URI);
const reason = await libvirtUnavailable(URI);
const serial = reason === null ? test.serial : test.serial.skip;
if (reason !== null) test.skip(`virtual cluster system tests: ${reason}`, () => undefined);

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNsdXN0ZXJrZXlmb3Jub2RlbWdydGVzdHNvbmx5MTIzNDU= vc@test';
const WAIT_SECONDS = 8;
let guest: TestGuest;

test.before(async (t) => {
  t.timeout(10 * 60_000, 'building the test guest');
  if (reason === null) guest = await buildTestGuest();
});

interface ClusterNode { node: GuestNode; vc(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }>; consoleOf(guest: string): Promise<string> }

async function clusterNode(t: ExecutionContext, corrupt = false): Promise<ClusterNode> {
  const node = await guestNode(t, {
    settings: { guest_accel: 'qemu', guest_ready_timeout: 180 },
    pool: [['52:54:00:4e:56:01', '192.0.2.71/24']],
    beforeCleanup: async (n) => {
      const { stdout } = await run('virsh', ['-c', URI, 'list', '--all', '--name']).catch(() => ({ stdout: '' }));
      for (const name of stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('vc.'))) {
        const xml = (await run('virsh', ['-c', URI, 'dumpxml', name]).catch(() => ({ stdout: '' }))).stdout;
        if (!xml.includes(n.box.dir)) continue;
        await run('virsh', ['-c', URI, 'destroy', name]).catch(() => undefined);
        await run('virsh', ['-c', URI, 'undefine', name]).catch(() => undefined);
      }
    },
  });
  const served = await serveVcRepository(guest, node.box.dir, WAIT_SECONDS, corrupt);
  t.teardown(() => served.close());
  const url = served.url;
  await writeFile(node.box.config, `${await readFile(node.box.config, 'utf8')}vc_repository_url = ${url}\n`);
  const keyFile = join(node.box.dir, 'id.pub');
  await writeFile(keyFile, `${KEY}\n`);
  node.start();
  await waitFor('the API', async () => (await node.call('Help')).length > 0, 60_000);
  const vc = async (...args: string[]) => {
    const full = [cli, 'vc', ...args, '--config', node.box.config, ...(args[0] === 'boot' ? ['--key', keyFile] : [])];
    try {
      const { stdout, stderr } = await run(process.execPath, full, { timeout: 15 * 60_000 });
      return { stdout, stderr, code: 0 };
    } catch (error) {
      const e = error as { stdout: string; stderr: string; code: number };
      return { stdout: e.stdout, stderr: e.stderr, code: e.code };
    }
  };
  const consoleOf = (name: string) => readFile(join(node.box.stateDir, 'clusters', 'guests', name, 'console.log'), 'utf8');
  return { node, vc, consoleOf };
}

/** When QEMU last started the domain (libvirt's "starting up" line in its log). */
async function startedAt(name: string): Promise<number> {
  const log = await readFile(`/var/log/libvirt/qemu/${name}.log`, 'utf8');
  const starts = [...log.matchAll(/^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+\d{4}): starting up/gm)];
  return Date.parse(starts[starts.length - 1]![1]!.replace(' ', 'T').replace(/([+-]\d\d)(\d\d)$/, '$1:$2'));
}

serial('vc boot makes a frontend and computes that read their vc-out.xml and reach each other; list, shutdown and clean leave nothing', async (t) => {
  t.timeout(20 * 60_000, 'three boots under software emulation');
  const c = await clusterNode(t);
  t.regex((await c.vc('repository')).stdout, /^testvc\s+testvc\/testvc\.xml$/m);
  const booted = await c.vc('boot', 'testvc', '2', '--name', 'alpha');
  t.is(booted.code, 0, booted.stderr);
  t.is(booted.stdout.trim(), 'alpha');
  const nodes = ['vc.alpha.frontend', 'vc.alpha.compute-0'];
  for (const name of nodes) t.is(await domainState(name), 'running', name);
  // The computes started no earlier than the clock wait after the frontend.
  t.true((await startedAt(nodes[1]!)) - (await startedAt(nodes[0]!)) >= WAIT_SECONDS * 1000 - 1000);

  // Each console shows its vc-out.xml: names, addresses, CPUs and the key.
  const frontendOut = await waitFor('the frontend to show its vc-out.xml', async () => {
    const text = await c.consoleOf(nodes[0]!).catch(() => '');
    return text.includes(VC_OUT_END) ? text.slice(text.indexOf(VC_OUT_BEGIN), text.indexOf(VC_OUT_END)) : null;
  }, 240_000);
  t.regex(frontendOut, /<frontend fqdn="alpha\.cluster\.local" gw="192\.0\.2\.1" name="alpha">/);
  t.regex(frontendOut, /<private ip="10\.7\.0\.1" mac="06:76:[0-9a-f:]+" mtu="1500" netmask="255\.255\.255\.0" subnet="10\.7\.0\.0"\/>/);
  t.regex(frontendOut, /<public ip="192\.0\.2\.71" mac="52:54:00:4e:56:01"/);
  t.regex(frontendOut, /<node cpus="2" gw="10\.7\.0\.1" name="compute-0">/);
  t.true(frontendOut.includes(`<key>${KEY}</key>`) || frontendOut.includes(KEY));
  const computeLog = await waitFor('the compute to ping the frontend', async () => {
    const text = await c.consoleOf(nodes[1]!).catch(() => '');
    return /nodemgr-vc-net ping \S+ (answered|unanswered)/.test(text) ? text : null;
  }, 300_000).catch(async (error: unknown) => {
    for (const name of nodes) t.log(`${name} console:\n${(await c.consoleOf(name).catch(() => '')).slice(-3000)}`);
    throw error;
  });
  t.regex(computeLog, /<compute gw="10\.7\.0\.1" name="compute-0">/);
  t.regex(computeLog, new RegExp(`${VC_NET_PREFIX} address 10\\.7\\.0\\.2`));
  t.regex(computeLog, new RegExp(`${VC_NET_PREFIX} ping 10\\.7\\.0\\.1 answered`), 'the compute reached the frontend over the private network');

  const list = await c.vc('list');
  t.regex(list.stdout, /^alpha\s+testvc\s+root\s+-\s+3\s+running/m);
  t.regex(list.stdout, /^\s+frontend\s+1\s+running\s+10\.7\.0\.1 192\.0\.2\.71$/m);
  t.regex(list.stdout, /^\s+compute-0\s+2\s+running\s+10\.7\.0\.2$/m);
  t.regex((await c.vc('clean', 'alpha')).stderr, /^Error: cluster alpha has nodes running \(frontend, compute-0\); shut it down first \(fault 104\)\n$/);
  t.is((await c.vc('shutdown', 'alpha')).code, 0);
  for (const name of nodes) t.is(await domainState(name), 'shut off', name);
  t.is((await c.vc('clean', 'alpha')).code, 0);
  for (const name of nodes) t.is(await domainState(name), null, `${name} is gone`);
  t.false((await run('virsh', ['-c', URI, 'net-list', '--all', '--name'])).stdout.includes('nodemgr-vc-alpha'), 'the private network is gone');
  t.deepEqual((await c.node.db()).addresses, {}, 'the public address is released');
  t.deepEqual(await readdir(join(c.node.box.stateDir, 'clusters', 'guests')).catch(() => []), [], 'no disk is left');
  t.is((await c.vc('list')).stdout.trim(), 'no clusters');
});

serial('over capacity exits 1 with the numbers; a corrupt image rolls back everything; kill -9 mid-boot leaves nothing after a restart', async (t) => {
  t.timeout(15 * 60_000);
  const c = await clusterNode(t, true);
  const over = await c.vc('boot', 'testvc', '1000');
  t.is(over.code, 1);
  t.regex(over.stderr, /^Error: not enough capacity for 1001 CPUs \(free: \d+\) \(fault 105\)\n$/);
  const corrupt = await c.vc('boot', 'testvc', '1', '--name', 'beta');
  t.is(corrupt.code, 1);
  t.regex(corrupt.stderr, /^Error: cluster beta not booted: writing \/root\/vc-out\.xml into the disk of vc\.beta\.frontend failed: .*no Linux file system.*everything made for it was removed/);
  t.deepEqual((await c.node.db()).clusters, {});
  t.is(await domainState('vc.beta.frontend'), null);
  t.deepEqual((await c.node.db()).addresses, {});
  t.false((await run('virsh', ['-c', URI, 'net-list', '--all', '--name'])).stdout.includes('nodemgr-vc-beta'));

  // A good image now; the daemon killed while the computes wait for the frontend.
  const d = await clusterNode(t);
  const boot = d.vc('boot', 'testvc', '2', '--name', 'gamma');
  await waitFor('the frontend to run', async () => (await domainState('vc.gamma.frontend')) === 'running', 240_000);
  d.node.daemon!.child.kill('SIGKILL');
  await d.node.daemon!.exited;
  t.is((await boot).code, 1, 'the boot was cut short');
  t.is((await d.node.db()).clusters['gamma']?.state, 'booting');
  d.node.daemon = startDaemonProcess(d.node.box.config);
  await waitFor('the cut boot to be rolled back', async () => Object.keys((await d.node.db()).clusters).length === 0, 120_000);
  for (const name of ['vc.gamma.frontend', 'vc.gamma.compute-0']) t.is(await domainState(name), null, `${name} is gone`);
  t.false((await run('virsh', ['-c', URI, 'net-list', '--all', '--name'])).stdout.includes('nodemgr-vc-gamma'));
  t.deepEqual((await d.node.db()).addresses, {});
});
