// While libvirt cannot be reached, a guest's stop or destroy fails with that reason (and is retried
// by its supervisor): nothing of the guest is removed, and nothing is reported done. The runtime is
// the real one; only the connection to libvirt is one that always fails, as an unreachable one does.
import test from 'ava';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressBook } from '../../src/addresses/address-book.js';
import type { AddressLease } from '../../src/db/types.js';
import { memoryLogger } from '../../src/log.js';
import { dispatchRuntime } from '../../src/runtimes/dispatch.js';
import type { Hypervisor } from '../../src/runtimes/libvirt/hypervisor.js';
import { createLibvirtRuntime } from '../../src/runtimes/libvirt/runtime.js';
import { ImageError } from '../../src/images/index.js';
import { PermanentError } from '../../src/util/errors.js';
import type { AccountRuntime } from '../../src/runtimes/types.js';

function unreachable(uri: string): Hypervisor {
  const fail = () => Promise.reject(new Error(`cannot connect to libvirt at ${uri}: Failed to connect socket: Connection refused`));
  return { uri, list: fail, find: fail, definition: fail, define: fail, start: fail, shutdown: fail, powerOff: fail, undefine: fail, close: async () => undefined };
}

/** A libvirt that answers and holds no domain. */
function empty(uri: string): Hypervisor {
  return { ...unreachable(uri), list: async () => [], find: async () => null, definition: async () => null };
}

function heldAddresses(leases: AddressLease[]): AddressBook & { released: string[] } {
  const released: string[] = [];
  return {
    released,
    lease: async () => leases,
    release: async (sliver) => void released.push(sliver),
    reclaim: async () => [],
    holders: () => [...new Set(leases.map((l) => l.sliver))],
    leasesOf: (sliver) => leases.filter((l) => l.sliver === sliver),
  };
}

test('a guest\'s stop and destroy fail with "libvirt unreachable", remove nothing, and never reach the unix runtime', async (t) => {
  const guestDir = await mkdtemp(join(tmpdir(), 'nodemgr-guests-'));
  t.teardown(() => rm(guestDir, { recursive: true, force: true }));
  await mkdir(join(guestDir, 'web'), { mode: 0o700 });
  await writeFile(join(guestDir, 'web', 'runtime'), 'qemu\n');
  const addresses = heldAddresses([{ mac: '52:54:00:00:00:01', ip: '192.0.2.1', prefix: 24, sliver: 'web', iface: 0, since: '2026-01-01T00:00:00.000Z' }]);
  const guests = createLibvirtRuntime({
    hypervisors: { qemu: unreachable('qemu:///system'), lxc: unreachable('lxc:///system') },
    guestDir, bridge: null, readyMarker: 'ready', readyTimeoutMs: 1000, accel: 'qemu',
    images: { resolve: () => Promise.reject(new Error('no images here')) }, addresses, now: () => new Date(),
  }, memoryLogger());
  const unixCalls: string[] = [];
  const unix: AccountRuntime = {
    observe: async () => ({ owned: [], foreign: new Set() }),
    create: async () => ({ uid: 1 }), configure: async () => undefined, start: async () => undefined,
    stop: async (name) => void unixCalls.push(`stop ${name}`),
    destroy: async (name) => void unixCalls.push(`destroy ${name}`),
  };
  const runtime = dispatchRuntime(unix, guests);

  await t.throwsAsync(runtime.stop('web', 'sliver', 'qemu'), { message: /^libvirt unreachable: the stop of qemu guest web waits for qemu:\/\/\/system: cannot connect/ });
  await t.throwsAsync(runtime.destroy('web', 'sliver', 'qemu'), { message: /^libvirt unreachable: the destroy of qemu guest web waits for qemu:\/\/\/system/ });
  t.deepEqual(unixCalls, [], 'the unix runtime was never asked');
  t.true((await stat(join(guestDir, 'web'))).isDirectory(), 'the guest\'s files are kept');
  t.deepEqual(addresses.released, [], 'its addresses are kept');
  // The guest's own recovery leaves it alone too: its driver did not answer.
  await guests.observe();
  t.true((await stat(join(guestDir, 'web'))).isDirectory());
  await guests.close();
});

test('a guest its slice cannot make (no disk image or kernel, an image not in the cache, an impossible size) fails permanently', async (t) => {
  const guestDir = await mkdtemp(join(tmpdir(), 'nodemgr-guests-'));
  t.teardown(() => rm(guestDir, { recursive: true, force: true }));
  await chmod(guestDir, 0o711); // the hypervisor's user must reach the guests' files
  const guests = createLibvirtRuntime({
    hypervisors: { qemu: empty('qemu:///system'), lxc: empty('lxc:///system') },
    guestDir, bridge: null, readyMarker: 'ready', readyTimeoutMs: 1000, accel: 'qemu',
    images: { resolve: (ref) => Promise.reject(new ImageError('not-found', `image "${ref}": no cached image of that name (add it, or give a URI)`)) },
    addresses: heldAddresses([]), now: () => new Date(),
  }, memoryLogger());
  t.teardown(() => guests.close());
  const spec = (guest: { image: string | null; kernel: string | null }, rspec: Record<string, number> = {}) => ({
    name: 'web', kind: 'sliver' as const, keys: [], initscript: null, enabled: true, rspec, runtime: 'qemu' as const,
    guest: { ...guest, initrd: null, size: 'small' as const },
  });
  const nothing = await t.throwsAsync(guests.create(spec({ image: null, kernel: null })), { instanceOf: PermanentError });
  t.is(nothing?.message, 'a qemu sliver needs a disk image (vref) or a kernel to boot');
  await t.throwsAsync(guests.create(spec({ image: 'missing.qcow2', kernel: null })), { instanceOf: PermanentError, message: /no cached image of that name/ });
  await t.throwsAsync(guests.create(spec({ image: null, kernel: 'vmlinuz' }, { mem_max: 1024 })), { instanceOf: PermanentError, message: /less than the \d+ KiB a guest needs/ });
});
