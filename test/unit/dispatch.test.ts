// One runtime over the host's runtimes (src/runtimes/dispatch.ts): an operation goes to the runtime
// it names, the two views of the host are merged, and a guest's stop or destroy never falls
// through to the unix runtime. Over two in-memory runtimes.
import test from 'ava';
import type { LibvirtRuntime } from '../../src/runtimes/libvirt/runtime.js';
import { dispatchRuntime } from '../../src/runtimes/dispatch.js';
import type { AccountRuntime, AccountSpec, HostSnapshot } from '../../src/runtimes/types.js';
import { memoryRuntime } from './support/memory-runtime.js';

/** The libvirt runtime's extras, which dispatch does not use, around an in-memory runtime. */
function guestRuntime(runtime: AccountRuntime): LibvirtRuntime {
  return {
    ...runtime,
    status: async () => null,
    interrupt: () => undefined,
    sessionFor: async () => null,
    close: async () => undefined,
  };
}

function spec(name: string, runtime: AccountSpec['runtime']): AccountSpec {
  return {
    name, kind: 'sliver', keys: [], initscript: null, enabled: true, rspec: {}, runtime,
    guest: runtime === 'unix' ? null : { image: 'debian', kernel: null, initrd: null, size: 'small' },
  };
}

function hosts() {
  const unix = memoryRuntime(['root', 'daemon']);
  const guests = memoryRuntime(['root', 'libvirt-qemu']);
  return { unix, guests, runtime: dispatchRuntime(unix.runtime, guestRuntime(guests.runtime)) };
}

test('create, configure and start go to the runtime the spec names', async (t) => {
  const { unix, guests, runtime } = hosts();
  for (const [name, kind] of [['a_unix', 'unix'], ['a_vm', 'qemu'], ['a_ct', 'lxc']] as const) {
    await runtime.create(spec(name, kind));
    await runtime.configure(spec(name, kind));
    await runtime.start(spec(name, kind), { cgroupProcFiles: [] });
  }
  t.deepEqual(unix.calls, ['create a_unix', 'configure a_unix', 'start a_unix']);
  t.deepEqual(guests.calls, ['create a_vm', 'configure a_vm', 'start a_vm', 'create a_ct', 'configure a_ct', 'start a_ct']);
  t.deepEqual([...guests.accounts.values()].map((a) => [a.name, a.runtime]), [['a_vm', 'qemu'], ['a_ct', 'lxc']]);
});

test('stop and destroy go to the runtime the account was found on', async (t) => {
  const { unix, guests, runtime } = hosts();
  unix.add('a_unix');
  guests.add('a_vm', { runtime: 'qemu' });
  guests.add('a_ct', { runtime: 'lxc' });
  await runtime.stop('a_vm', 'sliver', 'qemu');
  await runtime.destroy('a_ct', 'sliver', 'lxc');
  await runtime.destroy('a_unix', 'sliver', 'unix');
  t.deepEqual(unix.calls, ['destroy a_unix']);
  t.deepEqual(guests.calls, ['stop a_vm', 'destroy a_ct']);
  t.deepEqual([...guests.accounts.keys()], ['a_vm']);
  t.false(guests.accounts.get('a_vm')!.loginEnabled, 'stopped');
  t.is(unix.accounts.size, 0);
});

test('a guest\'s destroy that fails (libvirt out of reach) fails, and is not handed to the unix runtime', async (t) => {
  const { unix, guests, runtime } = hosts();
  guests.add('a_vm', { runtime: 'qemu' });
  guests.failures.set('destroy:a_vm', 1);
  await t.throwsAsync(runtime.destroy('a_vm', 'sliver', 'qemu'), { message: 'simulated failure of destroy:a_vm' });
  t.deepEqual(unix.calls, [], 'the unix runtime, which would find no account and report it gone, was not asked');
  t.true(guests.accounts.has('a_vm'));
  await runtime.destroy('a_vm', 'sliver', 'qemu');
  t.false(guests.accounts.has('a_vm'), 'the retry reaches the guest');
});

test('observe merges both views of the host: every account once (the unix one first), every foreign name', async (t) => {
  const { unix, guests, runtime } = hosts();
  unix.add('a_unix');
  unix.add('a_both');
  guests.add('a_vm', { runtime: 'qemu' });
  guests.add('a_both', { runtime: 'lxc' });
  const host = await runtime.observe();
  t.deepEqual(host.owned.map((o) => `${o.name} ${o.runtime}`), ['a_unix unix', 'a_both unix', 'a_vm qemu']);
  t.deepEqual([...host.foreign].sort(), ['daemon', 'libvirt-qemu', 'root']);
});

test('observe gives the same snapshot while neither part changed, and a new one when one did', async (t) => {
  // Runtimes that, like the real ones, return the same snapshot while the host is unchanged.
  const fixed = (snapshot: HostSnapshot): AccountRuntime & { snapshot: HostSnapshot; options: unknown[] } => {
    const runtime = {
      ...memoryRuntime().runtime,
      snapshot,
      options: [] as unknown[],
      observe: async (options?: { readOnly?: boolean }) => {
        runtime.options.push(options);
        return runtime.snapshot;
      },
    };
    return runtime;
  };
  const unix = fixed({ owned: [{ name: 'a_unix', kind: 'sliver', runtime: 'unix', uid: 70_000, loginEnabled: true, started: true }], foreign: new Set(['root']) });
  const guests = fixed({ owned: [], foreign: new Set() });
  const runtime = dispatchRuntime(unix, guestRuntime(guests));
  const first = await runtime.observe({ readOnly: true });
  t.is(await runtime.observe({ readOnly: true }), first, 'the same object: an idle converge pass is cheap');
  t.deepEqual(unix.options, [{ readOnly: true }, { readOnly: true }], 'the options reach each runtime');
  t.deepEqual(guests.options, [{ readOnly: true }, { readOnly: true }]);

  guests.snapshot = { owned: [{ name: 'a_vm', kind: 'sliver', runtime: 'qemu', uid: null, loginEnabled: true, started: true }], foreign: new Set() };
  const changed = await runtime.observe();
  t.not(changed, first);
  t.deepEqual(changed.owned.map((o) => o.name), ['a_unix', 'a_vm']);
  t.is(await runtime.observe(), changed);
});
