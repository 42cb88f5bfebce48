// libvirt slivers for real: a daemon with a real libvirtd (qemu:///system, software emulation),
// a guest built by the test (Debian's kernel, a busybox initramfs that reports ready on its
// serial console), images fetched into the cache from file: URIs, addresses from a pool file.
import { spawn } from 'node:child_process';
import { access, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { ifbOf } from '../../src/runtimes/libvirt/guest-shaper.js';
import { buildTestGuest, type TestGuest } from './support/guest.js';
import { accountPrefix, cli, freePort, run, waitFor } from './support/host.js';
import { fileUri, guestNode, libvirtUnavailable, virshOn, type GuestNode } from './support/libvirt.js';
import type { TestSlice } from './support/slices.js';

const URI = 'qemu:///system';
const { virsh, domainState, liveDetails } = virshOn(URI);
const reason = await libvirtUnavailable(URI);
const serial = reason === null ? test.serial : test.serial.skip;
if (reason !== null) test.skip(`libvirt system tests: ${reason}`, () => undefined);

const prefix = accountPrefix();
const MACS = ['52:54:00:4e:4d:01', '52:54:00:4e:4d:02'];
const IPS = ['192.0.2.21', '192.0.2.22'];
let guest: TestGuest;

test.before(async (t) => {
  t.timeout(10 * 60_000, 'building the test guest (apt-get download of a kernel)');
  if (reason === null) guest = await buildTestGuest();
});

/** Removes our test domains (by their prefix): a stopped daemon leaves its guests running. */
async function removeTestDomains(): Promise<void> {
  const { stdout } = await run('virsh', ['-c', URI, 'list', '--all', '--name']).catch(() => ({ stdout: '' }));
  for (const name of stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith(prefix))) {
    // nodemgr's own limit of a guest interface has an ifb device, which outlives the guest.
    const taps = await liveDetails(name).then((d) => d.interfaces.map((i) => i.targetDev ?? ''), () => []);
    for (const tap of taps.filter((x) => x.startsWith('nmg'))) await run('ip', ['link', 'del', ifbOf(tap)]).catch(() => undefined);
    await run('virsh', ['-c', URI, 'destroy', name]).catch(() => undefined);
    await run('virsh', ['-c', URI, 'undefine', name]).catch(() => undefined);
  }
}

test.after.always(async () => {
  if (reason === null) await removeTestDomains();
});

/** A test's node: guests under software emulation (the tests must not depend on the host's KVM). */
function node(t: ExecutionContext, settings: Record<string, string | number> = {}, poolLines = 2): Promise<GuestNode> {
  return guestNode(t, {
    settings: { guest_ready_timeout: 180, guest_accel: 'qemu', ...settings },
    pool: MACS.slice(0, poolLines).map((mac, i) => [mac, `${IPS[i]}/24`] as const),
    // Tests run one at a time: what this one booted must not slow the next one's boots.
    beforeCleanup: removeTestDomains,
  });
}

function vmSlice(name: string, resources: Record<string, string | number> = {}): TestSlice {
  return {
    name,
    resources: {
      runtime: 'qemu',
      vref: fileUri(guest.disk),
      kernel: fileUri(guest.kernel),
      initrd: fileUri(guest.initrd),
      ...resources,
    },
  };
}

const exists = (path: string) => access(path).then(() => true, () => false);

async function stateOf(n: GuestNode, name: string) {
  return (await n.db()).accounts[name];
}

serial('a slice becomes a running domain with its overlay, address and limits; a change of rspec reaches it; removal leaves nothing', async (t) => {
  t.timeout(15 * 60_000, 'two boots under software emulation');
  const n = await node(t);
  const name = `${prefix}vm`;
  n.setDocument([vmSlice(name, { cpu_share: 2, net_max_rate: 8000 })]);
  const started = Date.now();
  n.start();
  await waitFor('the guest to run', async () => (await stateOf(n, name))?.state === 'running', 300_000);
  t.log(`document to running domain: ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // The domain: ours, running, shaped from the rspec and the default instance size.
  t.is(await domainState(name), 'running');
  const live = await liveDetails(name);
  t.is(live.marker?.name, name);
  t.is(live.vcpus, 1, 'small: 1 vCPU');
  t.is(live.memoryKiB, 512 * 1024, 'small: 512 MiB');
  t.is(live.cpuShares, 2048, 'cpu_share 2');
  t.deepEqual(live.macs, [MACS[0]]);

  // Its disk is its own copy-on-write overlay over the cached image.
  const overlay = join(n.box.dir, 'guests', name, 'overlay.qcow2');
  t.is(live.disks[0]?.source, overlay);
  const info = JSON.parse((await run('qemu-img', ['info', '-U', '--output=json', overlay])).stdout) as { format: string; 'backing-filename': string };
  t.is(info.format, 'qcow2');
  t.true(info['backing-filename'].startsWith(join(n.box.dir, 'images')), `backing file ${info['backing-filename']} is in the cache`);

  // The guest saw its address and its disk, and said so on its console.
  const consoleLog = await readFile(join(n.box.dir, 'guests', name, 'console.log'), 'utf8');
  const ready = consoleLog.split('\n').find((l) => l.includes('nodemgr-ready'));
  t.truthy(ready, 'the ready line is on the console');
  t.regex(ready!, new RegExp(`mac=${MACS[0]}`));
  t.regex(ready!, /disk=vda:/);
  t.regex(ready!, new RegExp(`ip=${IPS[0]!.replace(/\./g, '\\.')}:::255\\.255\\.255\\.0:${name}:eth0:off`));

  // The lease is in the database, and the status shows the domain.
  t.like((await n.db()).addresses[MACS[0]!], { sliver: name, ip: IPS[0], iface: 0 });
  const status = JSON.parse((await run(process.execPath, [cli, 'call', '--config', n.box.config, 'GetSliverStatus', name])).stdout);
  t.is(status.runtime, 'qemu');
  t.like(status.guest, { state: 'running', vcpus: 1, cpu_shares: 2048 });
  t.true(Number(status.guest.vnc_port) >= 5900, `VNC port ${status.guest.vnc_port}`);
  t.regex(status.guest.addresses, new RegExp(IPS[0]!));
  // nodemgr status shows the domain and the cached images it was made from.
  const table = (await run(process.execPath, [cli, 'status', '--config', n.box.config])).stdout;
  t.regex(table, new RegExp(`^${name}\\s+qemu running\\s+1\\s+524288\\s+2048\\s+127\\.0\\.0\\.1:\\d+\\s+${MACS[0]} ${IPS[0]!.replace(/\./g, '\\.')}/24`, 'm'));
  t.regex(table, /image cache \(3\):/);
  for (const image of ['base.qcow2', 'vmlinuz', 'initrd.cpio']) t.regex(table, new RegExp(`^${image.replace('.', '\\.')}\\s`, 'm'));
  // Interface bandwidth from net_max_rate: by libvirt where the kernel has what it shapes with,
  // else by nodemgr's own classes on the guest's interface and its ifb device.
  const shaped = status.guest.bandwidth === 'enforced';
  const tap = live.interfaces[0]!.targetDev!;
  if (shaped) t.is(live.interfaces[0]?.outboundAverageKBps, 1000, 'net_max_rate 8000 kbit/s');
  else {
    t.regex(status.guest.bandwidth, /^enforced by nodemgr: 8000 kbit\/s to, 8000 kbit\/s from the guest \(the kernel lacks .*\)$/);
    t.regex((await run('tc', ['class', 'show', 'dev', tap])).stdout, /class htb 1:1 .*rate 8Mbit ceil 8Mbit/);
  }
  t.log(`interface bandwidth: ${status.guest.bandwidth}`);

  // A new CPU share and rate reach the running guest without a reboot (same domain id).
  const domid = (await virsh('domid', name)).trim();
  n.setDocument([vmSlice(name, { cpu_share: 4, net_max_rate: 16000 })]);
  await waitFor('the new share in the running domain', async () => (await liveDetails(name)).cpuShares === 4096, 60_000);
  const sched = await virsh('schedinfo', name, '--live');
  t.regex(sched, /cpu_shares\s*:\s*4096/);
  if (shaped) t.is((await liveDetails(name)).interfaces[0]?.outboundAverageKBps, 2000);
  else {
    const bandwidth = async () =>
      JSON.parse((await run(process.execPath, [cli, 'call', '--config', n.box.config, 'GetSliverStatus', name])).stdout).guest.bandwidth as string;
    await waitFor('the new rate on the guest\'s interface', async () => /^enforced by nodemgr: 16000 kbit\/s to, 16000 kbit\/s from the guest/.test(await bandwidth()), 30_000);
  }
  t.is((await virsh('domid', name)).trim(), domid, 'no reboot for a change of share and rate');

  // A new instance size boots the guest again with the new shape.
  n.setDocument([vmSlice(name, { cpu_share: 4, net_max_rate: 16000, instance_size: 'medium' })]);
  await waitFor('the medium guest to run', async () => {
    const d = await liveDetails(name);
    return d.vcpus === 2 && (await stateOf(n, name))?.state === 'running' && (await domainState(name)) === 'running';
  }, 300_000);
  t.is((await liveDetails(name)).memoryKiB, 1024 * 1024);

  // Removed from the document: domain, overlay, files and lease go.
  n.setDocument([]);
  await waitFor('the domain to go', async () => (await domainState(name)) === null, 120_000);
  await waitFor('the sliver to be forgotten', async () => (await stateOf(n, name)) === undefined);
  t.false(await exists(join(n.box.dir, 'guests', name)));
  t.deepEqual((await n.db()).addresses, {});
  const links = (await run('ip', ['-o', 'link', 'show'])).stdout;
  t.false(links.includes(tap.replace(/^nmg/, 'nmi')), 'the ifb device went with the guest');
});

serial('a guest that never reports ready is powered off, reported failed with the reason, and retried', async (t) => {
  t.timeout(10 * 60_000, 'boots under software emulation');
  // Long enough for the guest to reach its init (and say so on its console) on a loaded host.
  const n = await node(t, { guest_ready_timeout: 60, op_retry_initial: 5, op_retry_max: 600 });
  const name = `${prefix}silent`;
  n.setDocument([vmSlice(name, { initrd: fileUri(guest.silentInitrd) })]);
  n.start();
  const failed = await waitFor('the start to fail', async () => {
    const s = await stateOf(n, name);
    return s?.state === 'failed' ? s : null;
  }, 240_000);
  t.regex(failed.reason ?? '', /guest did not report ready \("nodemgr-ready" on its serial console\) within 60 s/);
  t.is(await domainState(name), 'shut off', 'torn down');
  t.regex(await readFile(join(n.box.dir, 'guests', name, 'console.log'), 'utf8'), /guest up; silent, as asked/);
  // The supervisor starts it again after its backoff, and reports the attempts.
  const again = await waitFor('a second attempt', async () => {
    const s = await stateOf(n, name);
    return (s?.attempts ?? 0) >= 2 ? s : null;
  }, 240_000);
  t.true(again!.attempts >= 2, 'started again after its backoff, the attempts counted');
});

serial('kill -9 during creation leaves nothing behind after a restart; an exhausted pool fails only the sliver without an address', async (t) => {
  t.timeout(10 * 60_000, 'a boot under software emulation');
  const n = await node(t, {}, 1);
  const first = `${prefix}ka`;
  const second = `${prefix}kb`;
  n.setDocument([vmSlice(first)]);
  n.start();
  // Killed once the creation is under way: the guest's directory is made, its lease taken.
  await waitFor('the creation to begin', async () => exists(join(n.box.dir, 'guests', first)), 120_000);
  n.daemon!.child.kill('SIGKILL');
  await n.daemon!.exited;

  // Meanwhile the slice goes away; the restarted daemon cleans up whatever was made.
  n.setDocument([vmSlice(second)]);
  n.start();
  await waitFor('the other sliver to run', async () => (await stateOf(n, second))?.state === 'running', 300_000);
  await waitFor('the first sliver\'s remains to go', async () =>
    (await domainState(first)) === null && !(await exists(join(n.box.dir, 'guests', first))), 60_000);
  t.deepEqual(Object.values((await n.db()).addresses).map((l) => l.sliver), [second], 'the one address went to the sliver that exists');

  // A third sliver finds the one-address pool taken: it alone fails, and says why.
  const third = `${prefix}kc`;
  n.setDocument([vmSlice(second), vmSlice(third)]);
  const failed = await waitFor('the third sliver to fail', async () => {
    const s = await stateOf(n, third);
    return s?.state === 'failed' ? s : null;
  }, 120_000);
  t.regex(failed.reason ?? '', /address pool exhausted: all 1 addresses of .*mac-addresses are leased \(to .*kb\)/);
  t.is((await stateOf(n, second))?.state, 'running');
  t.is(await domainState(third), null, 'no domain without an address');
  t.deepEqual(await readdir(join(n.box.dir, 'guests')), [second], 'and no files either');
});

/** An ssh login with a terminal: types `line` once `prompt` shows, returns what came back after `until`. */
function sshConsole(port: number, key: string, user: string, line: string, until: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', [
      '-tt', '-p', String(port), '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
      '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', `${user}@127.0.0.1`,
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    // The console shows nothing until something is typed, and what is typed before the guest's
    // shell reads its terminal is lost: the line is typed again until its answer shows.
    const typing = setInterval(() => child.stdin.write(`\r${line}\r`), 3000);
    const timer = setTimeout(() => {
      clearInterval(typing);
      child.kill();
      reject(new Error(`no ${until} on the console; got ${JSON.stringify(out.slice(-500))}`));
    }, 90_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (until.test(out)) {
        clearTimeout(timer);
        clearInterval(typing);
        child.stdin.write('\x1d'); // virsh console's escape: the session ends
        child.on('close', () => resolve(out));
      }
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString('latin1')));
    child.on('error', reject);
  });
}

serial('Stop, Start and ReCreate through the API act on the domain, and the ssh gateway opens its console', async (t) => {
  t.timeout(15 * 60_000, 'three boots under software emulation');
  const port = await freePort();
  const n = await node(t, { ssh_port: port, ssh_address: '127.0.0.1' });
  const key = join(n.box.dir, 'id_user');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'user@test', '-f', key]);
  const line = (await readFile(`${key}.pub`, 'utf8')).trim();
  const name = `${prefix}api`;
  n.setDocument([{ ...vmSlice(name), users: { 1: line } }]);
  n.start();
  await waitFor('the guest to run', async () => (await stateOf(n, name))?.state === 'running', 300_000);

  // A login reaches the guest's serial console, where its shell answers.
  const seen = await sshConsole(port, key, name, 'echo console-$((6*7))', /console-42/);
  t.regex(seen, /console-42/);
  t.log(`console session: ${JSON.stringify(seen.replace(/\s+/g, ' ').slice(-120))}`);

  t.is(await n.call('Stop', name), '1');
  await waitFor('the domain to be off', async () => (await domainState(name)) === 'shut off', 60_000);
  await waitFor('the state stopped', async () => (await stateOf(n, name))?.state === 'stopped');
  t.is(await domainState(name), 'shut off', 'and it stays off across syncs');

  t.is(await n.call('Start', name), '1');
  await waitFor('the guest to run again', async () => (await stateOf(n, name))?.state === 'running', 300_000);
  t.is(await domainState(name), 'running');

  // ReCreate makes the domain again: a new uuid, a new overlay, the same address.
  const before = await liveDetails(name);
  t.is(await n.call('ReCreate', name), '1');
  await waitFor('a new domain to run', async () => {
    const d = await liveDetails(name).catch(() => null);
    return d !== null && d.uuid !== before.uuid && (await stateOf(n, name))?.state === 'running' && (await domainState(name)) === 'running';
  }, 300_000);
  t.deepEqual((await liveDetails(name)).macs, before.macs);
});
