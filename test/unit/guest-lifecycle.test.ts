// The guest lifecycle over drivers of its own making: what it does with a guest (leases, directory,
// root, domain, boot, shutdown, removal, recovery) it does through the driver and by the driver's
// capabilities, whatever the kind. libvirt is an in-memory stand-in here; the real one is in the
// system tests (libvirt.test.ts, libvirt-lxc.test.ts).
import test from 'ava';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressBook } from '../../src/addresses/address-book.js';
import type { AddressLease } from '../../src/db/types.js';
import { memoryLogger } from '../../src/log.js';
import { commonDomainPlan } from '../../src/runtimes/libvirt/domain-plan.js';
import { readDomainDetails } from '../../src/runtimes/libvirt/domain-xml.js';
import { AgentError } from '../../src/runtimes/libvirt/guest-agent.js';
import type { GuestBandwidth } from '../../src/runtimes/libvirt/guest-bandwidth.js';
import type { GuestDefinition, GuestKind } from '../../src/runtimes/libvirt/guest-definition.js';
import type { GuestCapabilities, GuestDriver } from '../../src/runtimes/libvirt/guest-driver.js';
import { createLxcDriver } from '../../src/runtimes/libvirt/drivers/lxc.js';
import { createQemuDriver } from '../../src/runtimes/libvirt/drivers/qemu.js';
import { createGuestLifecycle, type GuestLifecycle } from '../../src/runtimes/libvirt/guests.js';
import type { Hypervisor } from '../../src/runtimes/libvirt/hypervisor.js';
import { PermanentError } from '../../src/util/errors.js';

type FakeHypervisor = Hypervisor & { domains: Map<string, { xml: string; active: boolean }>; calls: string[] };

function fakeHypervisor(uri: string, reachable = true): FakeHypervisor {
  const domains = new Map<string, { xml: string; active: boolean }>();
  const calls: string[] = [];
  const answer = async <T>(call: string, value: () => T): Promise<T> => {
    if (!reachable) throw new Error(`cannot connect to libvirt at ${uri}: Connection refused`);
    calls.push(call);
    return value();
  };
  const set = (name: string, active: boolean) => {
    const d = domains.get(name);
    if (d) d.active = active;
  };
  return {
    uri, domains, calls,
    list: () => answer('list', () => [...domains].map(([name, d]) => ({ name, active: d.active, xml: d.xml }))),
    find: (name) => answer(`find ${name}`, () => {
      const d = domains.get(name);
      return d ? { name, active: d.active, xml: d.xml } : null;
    }),
    definition: (name) => answer(`definition ${name}`, () => domains.get(name)?.xml ?? null),
    define: (xml) => answer('define', () => {
      const name = readDomainDetails(xml).name!;
      domains.set(name, { xml, active: domains.get(name)?.active ?? false });
    }),
    start: (name) => answer(`start ${name}`, () => set(name, true)),
    shutdown: (name) => answer(`shutdown ${name}`, () => set(name, false)),
    powerOff: (name) => answer(`powerOff ${name}`, () => set(name, false)),
    undefine: (name) => answer(`undefine ${name}`, () => void domains.delete(name)),
    close: async () => undefined,
  };
}

interface FakeDriver extends GuestDriver {
  readonly log: string[];
  /** What the next boot's guest does: report ready, stay silent, or stop. */
  next: 'ready' | 'silent' | 'stops';
  /** Whether the guest's agent answers a ping. */
  agentAnswers: boolean;
}

function fakeDriver(kind: GuestKind, hypervisor: FakeHypervisor, capabilities: Partial<GuestCapabilities> = {}): FakeDriver {
  const log: string[] = [];
  const driver: FakeDriver = {
    kind, article: kind === 'lxc' ? 'an' : 'a', hypervisor, sharedDir: '.shared', log, next: 'ready', agentAnswers: true,
    capabilities: { image: 'disk', kernelBoot: false, gracefulShutdown: false, liveCpu: false, liveBandwidth: false, ...capabilities },
    domainPlan: (input) => ({ ...commonDomainPlan(input), driver: 'lxc', init: '/sbin/init', rootDir: join(input.files.dir, 'root') }),
    prepareRoot: async (files, image) => void log.push(`prepareRoot ${files.dir} ${image?.path ?? '-'}`),
    releaseRoot: async (files) => void log.push(`releaseRoot ${files.dir}`),
    collectShared: async () => void log.push('collectShared'),
    async prepareBoot(files, marker) {
      log.push(`prepareBoot ${files.dir} ${marker}`);
      const name = files.dir.split('/').pop()!;
      return {
        who: 'box', where: 'over the wire', whenStopped: 'it crashed',
        async wait({ gone }) {
          if (driver.next === 'stops') await hypervisor.powerOff(name);
          return driver.next === 'ready' ? true : (await gone(), false);
        },
      };
    },
    schedulerArgs: () => [],
    overlayPath: (files) => join(files.dir, 'root'),
    session: (name, command) => ({ file: 'enter', args: [name, command ?? 'shell'], cwd: '/' }),
    agent: (name) => ({
      async ping(timeoutMs) {
        log.push(`ping ${name}`);
        if (driver.agentAnswers) return;
        await new Promise((resolve) => setTimeout(resolve, timeoutMs));
        throw new AgentError(`the guest agent of ${name} did not answer guest-ping within ${timeoutMs / 1000} s`);
      },
      exec: async () => 42,
      execStatus: async () => ({ exited: false }),
      putFile: async () => undefined,
      getFile: async () => undefined,
    }),
  };
  return driver;
}

function memoryAddresses(): AddressBook & { leases: AddressLease[]; reclaimed: string[] } {
  const leases: AddressLease[] = [];
  const reclaimed: string[] = [];
  let made = 0;
  const leasesOf = (sliver: string) => leases.filter((l) => l.sliver === sliver);
  const add = (sliver: string, mac: string) =>
    leases.push({ mac, ip: `192.0.2.${++made}`, prefix: 24, sliver, iface: leasesOf(sliver).length, since: '2026-01-01T00:00:00.000Z' });
  return {
    leases, reclaimed, leasesOf,
    async lease(sliver, count) {
      while (leasesOf(sliver).length < count) add(sliver, `52:54:00:00:00:${String(made + 1).padStart(2, '0')}`);
      return leasesOf(sliver).slice(0, count);
    },
    async release(sliver) {
      leases.splice(0, leases.length, ...leases.filter((l) => l.sliver !== sliver));
    },
    async reclaim(sliver, macs) {
      reclaimed.push(`${sliver} ${macs.join(',')}`);
      for (const mac of macs) if (!leases.some((l) => l.mac === mac)) add(sliver, mac);
      return [];
    },
    holders: () => [...new Set(leases.map((l) => l.sliver))],
  };
}

const noBandwidth: GuestBandwidth = {
  check: async () => null, shape: async () => undefined, unshape: async () => undefined, sweep: async () => undefined, status: async () => 'none asked',
};

async function setUp(t: { teardown(fn: () => unknown): void }, drivers: readonly GuestDriver[]) {
  const guestDir = await mkdtemp(join(tmpdir(), 'nodemgr-lifecycle-'));
  t.teardown(() => rm(guestDir, { recursive: true, force: true }));
  await chmod(guestDir, 0o711); // the hypervisor's user must reach the guests' files
  const addresses = memoryAddresses();
  const guests: GuestLifecycle = createGuestLifecycle({
    drivers, guestDir, bridge: null, readyMarker: 'up', readyTimeoutMs: 1000, addresses, now: () => new Date(), bandwidth: noBandwidth,
    images: { resolve: async (ref) => ({ name: ref, path: `/cache/${ref}`, format: 'qcow2' }) },
  }, memoryLogger());
  return { guestDir, addresses, guests };
}

const definition = (kind: GuestKind, boot: Partial<GuestDefinition['boot']> = {}): GuestDefinition => ({
  kind, boot: { image: 'base.img', kernel: null, initrd: null, ...boot }, size: 'small', limits: { cpu_share: 2 }, interfaces: 1,
});

const exists = (path: string) => stat(path).then(() => true, () => false);

test('a guest is made, booted, shut down and removed through its kind\'s driver', async (t) => {
  const hv = fakeHypervisor('fake:///one');
  const driver = fakeDriver('qemu', hv, { gracefulShutdown: true });
  const { guestDir, addresses, guests } = await setUp(t, [driver]);
  const dir = join(guestDir, 'web');

  await guests.create('web', definition('qemu'));
  t.deepEqual(driver.log, [`prepareRoot ${dir} /cache/base.img`]);
  t.is((await readFile(join(dir, 'runtime'), 'utf8')).trim(), 'qemu', 'the kind is written beside the guest');
  t.like(readDomainDetails(hv.domains.get('web')!.xml).marker, { name: 'web', runtime: 'qemu', guestDir });
  t.is(addresses.leasesOf('web').length, 1);
  await guests.create('web', definition('qemu'));
  t.is(driver.log.length, 1, 'a guest that exists is not made again');

  await guests.start('web', definition('qemu'));
  t.deepEqual(driver.log.slice(1), [`prepareBoot ${dir} up`]);
  t.deepEqual((await guests.list()).owned, [{ name: 'web', kind: 'qemu', active: true }]);
  t.like(await guests.status('web'), { runtime: 'qemu', state: 'running', overlay: join(dir, 'root'), addresses: '52:54:00:00:00:01 192.0.2.1/24' });
  t.deepEqual(await guests.sessionFor('web', 'id', false), { launch: { file: 'enter', args: ['web', 'id'], cwd: '/' }, started: true });
  t.is(await guests.sessionFor('nobody', null, true), null);

  await guests.stop('web', 'qemu');
  t.true(hv.calls.includes('shutdown web'), 'a kind that honours a shutdown request is asked first');
  t.false(hv.domains.get('web')!.active);
  t.is(driver.log.at(-1), `releaseRoot ${dir}`);

  await guests.destroy('web', 'qemu');
  t.false(hv.domains.has('web'));
  t.false(await exists(dir));
  t.deepEqual(driver.log.slice(-2), [`releaseRoot ${dir}`, 'collectShared']);
  t.deepEqual(addresses.leases, []);
});

test('a guest that does not report ready is powered off, its root let go, and the start fails saying what was awaited', async (t) => {
  const hv = fakeHypervisor('fake:///one');
  const driver = fakeDriver('qemu', hv);
  const { guestDir, guests } = await setUp(t, [driver]);
  await guests.create('quiet', definition('qemu'));

  driver.next = 'silent';
  await t.throwsAsync(guests.start('quiet', definition('qemu')), {
    message: 'box did not report ready ("up" over the wire) within 1 s; it was powered off and will be started again',
  });
  t.false(hv.domains.get('quiet')!.active);
  t.is(driver.log.at(-1), `releaseRoot ${join(guestDir, 'quiet')}`);

  driver.next = 'stops';
  await t.throwsAsync(guests.start('quiet', definition('qemu')), { message: 'box stopped before it reported ready ("up" over the wire); it crashed' });
});

test('the lifecycle asks capabilities, not names: no shutdown request where none is honoured, no kernel for a kind that cannot boot one', async (t) => {
  const hv = fakeHypervisor('fake:///one');
  const driver = fakeDriver('lxc', hv, { image: 'root-archive', kernelBoot: false, gracefulShutdown: false });
  const { guests } = await setUp(t, [driver]);
  await guests.create('ct', definition('lxc'));
  await guests.start('ct', definition('lxc'));
  await guests.stop('ct', 'lxc');
  t.false(hv.calls.includes('shutdown ct'));
  t.true(hv.calls.includes('powerOff ct'));

  const noImage = definition('lxc', { image: null, kernel: 'vmlinuz' });
  t.throws(() => guests.check(noImage), { instanceOf: PermanentError, message: 'an lxc guest needs a root file system image' });
  t.throws(() => guests.check(noImage, { guest: 'sliver', imageField: 'vref' }), { message: 'an lxc sliver needs a root file system image (vref)' });
  await t.throwsAsync(guests.create('other', noImage), { instanceOf: PermanentError });
  t.false(hv.domains.has('other'), 'nothing is asked of libvirt for a definition no guest can boot');

  const kernelOnly = fakeDriver('qemu', fakeHypervisor('fake:///two'), { kernelBoot: true });
  const { guests: vms } = await setUp(t, [kernelOnly]);
  t.notThrows(() => vms.check(definition('qemu', { image: null, kernel: 'vmlinuz' })));
  t.throws(() => vms.check(definition('qemu', { image: null })), { message: 'a qemu guest needs a disk image or a kernel to boot' });
  t.throws(() => vms.check(definition('qemu', { initrd: 'initrd.img' })), { message: 'an initrd is given without a kernel' });
  t.throws(() => vms.check({ ...definition('qemu'), size: 'huge' as 'small' }), { instanceOf: PermanentError, message: /unknown instance_size "huge"/ });
});

test('recovery removes what an interrupted create left, keeps what an unreachable kind may hold, and leases again what a domain uses', async (t) => {
  const vms = fakeDriver('qemu', fakeHypervisor('fake:///vms'));
  const down = fakeHypervisor('fake:///cts', false);
  const cts = fakeDriver('lxc', down);
  const { guestDir, addresses, guests } = await setUp(t, [vms, cts]);
  await guests.create('kept', definition('qemu'));
  const keptMac = addresses.leasesOf('kept')[0]!.mac;
  await addresses.release('kept'); // as a database rebuilt without its leases
  for (const [name, kind] of [['left', 'qemu'], ['held', 'lxc']]) {
    await mkdir(join(guestDir, name!));
    await writeFile(join(guestDir, name!, 'runtime'), `${kind}\n`);
  }
  await mkdir(join(guestDir, '.shared'));
  await addresses.lease('gone', 1);

  const { owned } = await guests.list();
  t.deepEqual(owned.map((g) => g.name), ['kept']);
  t.deepEqual(addresses.reclaimed, [`kept ${keptMac}`]);
  t.false(await exists(join(guestDir, 'left')), 'a directory without its domain goes');
  t.true(vms.log.includes(`releaseRoot ${join(guestDir, 'left')}`) && cts.log.includes(`releaseRoot ${join(guestDir, 'left')}`));
  t.true(await exists(join(guestDir, 'held')), 'its kind did not answer: the domain may exist');
  t.true(await exists(join(guestDir, '.shared')), 'what a kind shares is no guest');
  t.true(vms.log.includes('collectShared') && cts.log.includes('collectShared'));
  t.deepEqual(addresses.holders(), ['kept'], 'a lease without domain or directory is released');

  await t.throwsAsync(guests.destroy('held', 'lxc'), { message: /^libvirt unreachable: the destroy of lxc guest held waits for fake:\/\/\/cts: cannot connect/ });
  t.true(await exists(join(guestDir, 'held')), 'and nothing of it is removed while its libvirt is away');
});

test('the drivers\' sessions: a virtual machine\'s serial console, with a terminal and no command; a shell in a container\'s namespaces', (t) => {
  const context = { guestDir: '/var/lib/nodemgr/guests', accel: 'qemu' as const, logger: memoryLogger() };
  const vm = createQemuDriver({ ...context, hypervisor: fakeHypervisor('qemu:///system') });
  t.deepEqual(vm.session('vm', null, true), { file: 'virsh', args: ['-q', '-c', 'qemu:///system', 'console', '--force', 'vm'], cwd: '/' });
  t.regex((vm.session('vm', 'uptime', true) as { refused: string }).refused, /^vm is a virtual machine: the gateway reaches its serial console only/);
  t.regex((vm.session('vm', null, false) as { refused: string }).refused, /its serial console needs a terminal \(ssh -t\)$/);
  const ct = createLxcDriver({ ...context, hypervisor: fakeHypervisor('lxc:///system') });
  t.deepEqual(ct.session('ct', 'uptime', false), {
    file: 'virsh', args: ['-q', '-c', 'lxc:///system', 'lxc-enter-namespace', 'ct', '--noseclabel', '/bin/sh', '-c', 'uptime'], cwd: '/',
  });
  t.like(ct.session('ct', null, true), { args: ['-q', '-c', 'lxc:///system', 'lxc-enter-namespace', 'ct', '--noseclabel', '/bin/sh', '-l'] });
});

test('readiness by agent: start waits for the agent\'s answer instead of the marker; one that never answers is powered off and fails for good', async (t) => {
  const hv = fakeHypervisor('fake:///agent');
  const driver = fakeDriver('qemu', hv);
  const { guests } = await setUp(t, [driver]);
  const byAgent: GuestDefinition = { ...definition('qemu'), agent: true, readiness: { by: 'agent', timeoutMs: 1500 } };
  await guests.create('task1', byAgent);
  driver.next = 'silent'; // no marker ever: the agent alone decides
  await guests.start('task1', byAgent);
  t.true(hv.domains.get('task1')!.active);
  t.true(driver.log.includes('ping task1'));
  t.not(await guests.agentFor('task1'), null);
  t.is(await guests.agentFor('nobody'), null, 'no guest of ours of that name');

  await guests.create('task2', byAgent);
  driver.agentAnswers = false;
  const started = Date.now();
  const error = await t.throwsAsync(guests.start('task2', byAgent), { instanceOf: PermanentError });
  t.is(error!.message, 'instance agent did not answer within 1.5 s');
  t.true(Date.now() - started < 10_000);
  t.false(hv.domains.get('task2')!.active, 'powered off');
  t.true(driver.log.some((l) => l.startsWith('releaseRoot') && l.endsWith('task2')));
});

test('a definition\'s kernel arguments and agent are checked, and only a new boot changes them', async (t) => {
  const hv = fakeHypervisor('fake:///extras');
  const driver = fakeDriver('qemu', hv);
  const { guests } = await setUp(t, [driver]);
  t.throws(() => guests.check({ ...definition('qemu'), kernelArgs: ['two words'] }), { instanceOf: PermanentError, message: /not one word/ });
  t.throws(() => guests.check({ ...definition('qemu'), readiness: { by: 'agent', timeoutMs: 0 } }), { instanceOf: PermanentError });
  await guests.create('vm', definition('qemu'));
  const before = readDomainDetails(hv.domains.get('vm')!.xml).marker!.spec;
  await guests.configure('vm', definition('qemu'));
  t.is(readDomainDetails(hv.domains.get('vm')!.xml).marker!.spec, before, 'the same definition: the same boot');
  await guests.configure('vm', { ...definition('qemu'), agent: true });
  t.not(readDomainDetails(hv.domains.get('vm')!.xml).marker!.spec, before, 'the agent is a new boot');
});
