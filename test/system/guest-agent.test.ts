// The in-guest agent for real: the guest lifecycle with the real drivers against the host's
// libvirtd. A virtual machine (software emulation) runs the test guest with Debian's qemu-ga on its
// virtio-serial channel; another runs the same guest without the agent; a container is entered by
// nodemgr itself. Programs run, report exit codes and signals, and files go in and out.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import type { AddressBook } from '../../src/addresses/address-book.js';
import { memoryLogger } from '../../src/log.js';
import { GUEST_DRIVERS, GUEST_KINDS } from '../../src/runtimes/libvirt/drivers/index.js';
import { agentDir, AgentError, killRequest, type ExecState, type GuestAgent } from '../../src/runtimes/libvirt/guest-agent.js';
import type { GuestDefinition, GuestKind } from '../../src/runtimes/libvirt/guest-definition.js';
import { guestFiles } from '../../src/runtimes/libvirt/guest-files.js';
import { createGuestLifecycle, type GuestLifecycle } from '../../src/runtimes/libvirt/guests.js';
import { libvirtHypervisor } from '../../src/runtimes/libvirt/hypervisor.js';
import { lxcRootPaths } from '../../src/runtimes/libvirt/lxc-root.js';
import { PermanentError } from '../../src/util/errors.js';
import { buildTestGuest, type TestGuest } from './support/guest.js';
import { accountPrefix, projectRoot } from './support/host.js';
import { libvirtUnavailable, lxcUnavailable, virshOn } from './support/libvirt.js';
import { buildTestRootfs, type TestRootfs } from './support/rootfs.js';

const run = promisify(execFile);
const qemuReason = await libvirtUnavailable('qemu:///system');
const lxcReason = await lxcUnavailable();
const qemuTest = qemuReason === null ? test.serial : test.serial.skip;
const lxcTest = lxcReason === null ? test.serial : test.serial.skip;
if (qemuReason !== null) test.skip(`guest agent in virtual machines: ${qemuReason}`, () => undefined);
if (lxcReason !== null) test.skip(`guest agent in containers: ${lxcReason}`, () => undefined);

const prefix = accountPrefix();
let guest: TestGuest;
let rootfs: TestRootfs | null = null;

test.before(async (t) => {
  t.timeout(10 * 60_000, 'building the test guest (apt-get download of a kernel)');
  if (qemuReason === null) guest = await buildTestGuest();
  if (lxcReason === null) rootfs = await buildTestRootfs('nodemgr-ready');
});
test.after.always(async () => rootfs?.remove());

/** No interfaces: the agent's way in is its channel or the container's namespaces, not the network. */
const noAddresses: AddressBook = {
  lease: async () => [], release: async () => undefined, reclaim: async () => [], holders: () => [], leasesOf: () => [],
};

/** A lifecycle of the real drivers over a guest directory of the test's own; its guests are destroyed at the end. */
async function lifecycle(t: ExecutionContext): Promise<{ guests: GuestLifecycle; guestDir: string; made: Array<[string, GuestKind]> }> {
  const guestDir = await mkdtemp(join(tmpdir(), 'nodemgr-agent-'));
  await chmod(guestDir, 0o711);
  const logger = memoryLogger();
  const drivers = GUEST_KINDS.map((kind) =>
    GUEST_DRIVERS[kind]({ hypervisor: libvirtHypervisor(`${kind}:///system`, logger), guestDir, accel: 'qemu', logger }));
  const guests = createGuestLifecycle({
    drivers, guestDir, bridge: null, readyMarker: 'nodemgr-ready', readyTimeoutMs: 60_000, addresses: noAddresses,
    now: () => new Date(),
    // The test's files as they are: the agent is under test here, not the image cache.
    images: { resolve: async (ref) => ({ name: ref, path: ref, format: 'raw' }) },
  }, logger);
  const made: Array<[string, GuestKind]> = [];
  t.teardown(async () => {
    if (!t.passed) t.log(logger.lines.slice(-20).join('\n'));
    for (const [name, kind] of made) await guests.destroy(name, kind).catch((error: unknown) => t.log(`destroy ${name}: ${String(error)}`));
    await guests.close();
    await rm(guestDir, { recursive: true, force: true });
  });
  return { guests, guestDir, made };
}

function vm(initrd: string, timeoutMs: number): GuestDefinition {
  return {
    kind: 'qemu', boot: { image: null, kernel: guest.kernel, initrd }, size: 'small', limits: {}, interfaces: 0,
    agent: true, readiness: { by: 'agent', timeoutMs },
  };
}

async function finished(agent: GuestAgent, pid: number, timeoutMs = 60_000): Promise<ExecState & { exited: true }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = await agent.execStatus(pid);
    if (state.exited) return state;
    if (Date.now() > deadline) throw new Error(`pid ${pid} still runs after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');
const exists = (path: string) => access(path).then(() => true, () => false);

/** What both kinds must do alike: exit codes with exactly the environment given, kills, files both ways. */
async function commonBehaviour(t: ExecutionContext, agent: GuestAgent, work: string): Promise<void> {
  await agent.ping(5000);
  const pid = await agent.exec({ path: '/bin/sh', args: ['-c', 'echo $FOO > /tmp/x; env > /tmp/env; exit 3'], env: ['FOO=bar'] });
  t.like(await finished(agent, pid), { exited: true, exitCode: 3, signal: null });
  t.like(await agent.execStatus(pid), { exited: true, exitCode: 3 }, 'asked again: the same answer');
  await agent.getFile('/tmp/x', join(work, 'x'), 1024);
  t.is(await readFile(join(work, 'x'), 'utf8'), 'bar\n');
  const env = (await agent.getFile('/tmp/env', join(work, 'env'), 4096), await readFile(join(work, 'env'), 'utf8'));
  t.false(/^(HOME|USER|TERM)=/m.test(env), `only what was given (and what sh sets itself): ${JSON.stringify(env)}`);

  // A job killed by the guest's kill: reported with its signal.
  const job = await agent.exec({ path: '/bin/sleep', args: ['600'], env: [] });
  t.deepEqual(await agent.execStatus(job), { exited: false });
  const killer = await agent.exec(killRequest(job));
  t.like(await finished(agent, killer), { exitCode: 0 });
  t.like(await finished(agent, job), { exited: true, exitCode: null, signal: 9 });

  // 1 MiB of random bytes in and out again, with its mode, into directories that are not there yet.
  const original = join(work, 'random');
  await writeFile(original, randomBytes(1 << 20));
  await agent.putFile(original, '/tmp/stage/in/random.bin', 0o640);
  await agent.putFile(original, '/tmp/stage/in/random.bin', 0o640); // replaces what is there
  await agent.getFile('/tmp/stage/in/random.bin', join(work, 'back'), 1 << 20);
  t.is(await sha256(join(work, 'back')), await sha256(original), 'the same bytes came back');
  const mode = await agent.exec({ path: '/bin/sh', args: ['-c', 'stat -c %a /tmp/stage/in/random.bin > /tmp/mode'], env: [] });
  await finished(agent, mode);
  await agent.getFile('/tmp/mode', join(work, 'mode'), 64);
  t.is((await readFile(join(work, 'mode'), 'utf8')).trim(), '640');

  await t.throwsAsync(agent.getFile('/tmp/stage/in/random.bin', join(work, 'small'), 1000), { instanceOf: AgentError, message: /more than the 1000 bytes allowed/ });
  t.false(await exists(join(work, 'small')), 'nothing left of a refused copy');
  await t.throwsAsync(agent.getFile('/tmp/no-such-file', join(work, 'none'), 1000), { instanceOf: AgentError, message: /missing/ });
  await t.throwsAsync(agent.exec({ path: 'sh', args: [], env: [] }), { instanceOf: AgentError, message: /not an absolute path/ });
  await t.throwsAsync(agent.exec({ path: '/no/such/program', args: [], env: [] }), { instanceOf: AgentError });
}

qemuTest('a virtual machine with qemu-ga: ready when its agent answers; programs, exit codes, signals and files through the agent', async (t) => {
  t.timeout(12 * 60_000, 'a boot under software emulation and a few hundred agent calls');
  const { guests, guestDir, made } = await lifecycle(t);
  const name = `${prefix}-vm`;
  const definition = vm(guest.initrd, 300_000);
  await guests.create(name, definition);
  made.push([name, 'qemu']);
  const started = Date.now();
  await guests.start(name, definition);
  t.log(`booted, agent answering: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const { liveDetails } = virshOn('qemu:///system');
  t.true((await liveDetails(name)).channels.includes('org.qemu.guest_agent.0'));
  const agent = (await guests.agentFor(name))!;
  const work = await mkdtemp(join(tmpdir(), 'nodemgr-agent-work-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  await commonBehaviour(t, agent, work);

  // Another lifecycle's agent (as after a daemon restart) knows the exits of this one's programs.
  const pid = await agent.exec({ path: '/bin/sh', args: ['-c', 'exit 5'], env: [] });
  await finished(agent, pid);
  const other = createGuestLifecycle({
    drivers: GUEST_KINDS.map((kind) => GUEST_DRIVERS[kind]({ hypervisor: libvirtHypervisor(`${kind}:///system`, memoryLogger()), guestDir, accel: 'qemu', logger: memoryLogger() })),
    guestDir, bridge: null, readyMarker: 'x', readyTimeoutMs: 1000, addresses: noAddresses, now: () => new Date(),
    images: { resolve: async (ref) => ({ name: ref, path: ref, format: 'raw' }) },
  }, memoryLogger());
  t.like(await (await other.agentFor(name))!.execStatus(pid), { exited: true, exitCode: 5 });
  await other.close();
  t.true(await exists(agentDir(guestFiles(guestDir, name).dir)), 'exits are kept in the guest\'s directory');
  t.is(await guests.agentFor(`${prefix}-none`), null);
});

qemuTest('a virtual machine whose agent never answers fails its start for good, and is left powered off', async (t) => {
  t.timeout(6 * 60_000, 'a boot under software emulation');
  const { guests, made } = await lifecycle(t);
  const name = `${prefix}-mute`;
  const definition = vm(guest.agentlessInitrd, 20_000);
  await guests.create(name, definition);
  made.push([name, 'qemu']);
  const started = Date.now();
  const error = await t.throwsAsync(guests.start(name, definition), { instanceOf: PermanentError });
  const took = Date.now() - started;
  t.is(error!.message, 'instance agent did not answer within 20 s');
  t.true(took >= 20_000 && took < 90_000, `failed after ${took} ms`);
  t.is(await virshOn('qemu:///system').domainState(name), 'shut off');
});

lxcTest('a container: programs run in its namespaces and cgroups, survive the process that started them; files through its root, never out of it', async (t) => {
  t.timeout(4 * 60_000, 'a container');
  const { guests, guestDir, made } = await lifecycle(t);
  const name = `${prefix}-ct`;
  const definition: GuestDefinition = {
    kind: 'lxc', boot: { image: rootfs!.ready, kernel: null, initrd: null }, size: 'small', limits: {}, interfaces: 0,
    readiness: { by: 'agent', timeoutMs: 30_000 },
  };
  await guests.create(name, definition);
  made.push([name, 'lxc']);
  await guests.start(name, definition);
  const agent = (await guests.agentFor(name))!;
  const work = await mkdtemp(join(tmpdir(), 'nodemgr-agent-work-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  await commonBehaviour(t, agent, work);

  // In the container's pid namespace and its cgroups: its pid there, and the group the container has.
  const inside = await agent.exec({ path: '/bin/sh', args: ['-c', 'echo $$ > /tmp/pid; cat /proc/self/cgroup > /tmp/cgroup; hostname > /tmp/hostname'], env: [] });
  await finished(agent, inside);
  const read = async (file: string) => (await agent.getFile(file, join(work, 'r'), 65536), (await readFile(join(work, 'r'), 'utf8')).trim());
  t.is(await read('/tmp/pid'), String(inside), 'the pid exec gave is the program\'s pid in the container');
  t.is(await read('/tmp/hostname'), name);
  t.regex(await read('/tmp/cgroup'), /memory:\/.*lxc.*libvirt-lxc|memory:\/$/, 'in the container\'s memory group');

  // Started by a process that ends at once (a daemon stopping): its exit is still told.
  const root = lxcRootPaths(guestFiles(guestDir, name)).merged;
  const records = agentDir(guestFiles(guestDir, name).dir);
  const { stdout } = await run(process.execPath, ['--import', 'tsx', join(projectRoot, 'test/system/support/agent-exec.ts'), name, root, records, '/bin/sh', '-c', 'sleep 2; exit 7'], { cwd: projectRoot });
  const orphan = Number(stdout.trim());
  t.deepEqual(await agent.execStatus(orphan), { exited: false });
  t.like(await finished(agent, orphan), { exited: true, exitCode: 7 });

  // Links that lead out of the root are refused; absolute ones lead to the container's own files.
  const links = await agent.exec({ path: '/bin/sh', args: ['-c', 'ln -s ../../../../../../../../.. /tmp/up; ln -s /etc /tmp/etc-link'], env: [] });
  await finished(agent, links);
  const marker = `nodemgr-escape-${prefix}`;
  await t.throwsAsync(agent.putFile(join(work, 'random'), `/tmp/up/tmp/${marker}`), { instanceOf: AgentError, message: /above the container's root/ });
  await t.throwsAsync(agent.getFile('/tmp/up/etc/hostname', join(work, 'h'), 4096), { instanceOf: AgentError, message: /refused/ });
  t.false(await exists(join('/tmp', marker)), 'nothing written on the host');
  await agent.putFile(join(work, 'x'), `/tmp/etc-link/${marker}`);
  t.true((await stat(join(root, 'etc', marker))).isFile(), 'written in the container\'s /etc');
  t.false(await exists(join('/etc', marker)), 'not in the host\'s');
});
