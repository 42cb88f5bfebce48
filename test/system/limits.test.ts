// Limits end to end, as root: a real daemon applies the document's CPU shares to the slivers'
// cgroups, starts their initscripts inside them, moves a stray process of a sliver's uid into its
// group, re-applies a loan before SetLoans returns, shows the limits in force as the kernel holds
// them, and kills every process of the group at Stop. The CPU figures are measured, not planned.
import test from 'ava';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import {
  accountPrefix, isRoot, nodemgr, removeAccounts, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess, waitFor,
  type DaemonProcess, type DocumentServer, type Sandbox,
} from './support/host.js';
import { slicesXml, type TestSlice } from './support/slices.js';

const prefix = accountPrefix();
const name = (suffix: string) => `${prefix}_${suffix}`;
const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('limits end to end: needs root (real accounts, cgroups and a real daemon)', () => undefined);
// Busy loops pinned to CPU 0, so that the two slivers compete for one CPU.
const BURN = '#!/bin/sh\nexec taskset -c 0 /bin/sh -c "while :; do :; done"\n';

let server: DocumentServer;
let box: Sandbox;
let daemon: DaemonProcess;
let parent = '';
let slices: TestSlice[] = [];
let timestamp = 1000;

const db = () => readDatabaseSnapshot(join(box.stateDir, 'nodemgr.json'));
const stateOf = async (account: string) => (await db()).accounts[account]?.state ?? 'absent';
const uidOf = async (account: string) => (await db()).accounts[account]?.uid ?? null;
const cpuDir = (sliver: string) => join('/sys/fs/cgroup/cpu', parent, sliver);
const cpuacct = async (sliver: string) => Number(await readFile(join('/sys/fs/cgroup/cpuacct', parent, sliver, 'cpuacct.usage'), 'utf8'));
const shares = async (sliver: string) => Number(await readFile(join(cpuDir(sliver), 'cpu.shares'), 'utf8'));
const tasks = async (sliver: string) =>
  (await readFile(join(cpuDir(sliver), 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number);

async function call(method: string, ...args: unknown[]): Promise<unknown> {
  const result = await nodemgr(['call', '--config', box.config, method, ...args.map((a) => JSON.stringify(a))]);
  if (result.code !== 0) throw new Error(`nodemgr call ${method}: ${result.stderr}`);
  return JSON.parse(result.stdout) as unknown;
}

/** CPU time each sliver's group gets over `seconds`, as a ratio second/first. */
async function cpuRatio(first: string, second: string, seconds: number): Promise<{ ratio: number; a: number; b: number }> {
  const [a0, b0] = [await cpuacct(first), await cpuacct(second)];
  // Not a wait for something to happen: the window over which CPU time is measured.
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const [a1, b1] = [await cpuacct(first), await cpuacct(second)];
  const a = (a1 - a0) / 1e9;
  const b = (b1 - b0) / 1e9;
  return { ratio: b / a, a, b };
}

test.before(async () => {
  if (!isRoot) return;
  slices = [
    { name: name('one'), resources: { cpu_share: 1, initscript: BURN } },
    { name: name('three'), resources: { cpu_share: 3, initscript: BURN, mem_max: 262_144, proc_max: 64 } },
  ];
  server = await serveDocument(slicesXml(timestamp, slices));
  box = await sandbox({ authority_url: server.url, stray_sweep_interval: 1 });
  parent = /^cgroup_parent = (.*)$/m.exec(await readFile(box.config, 'utf8'))![1]!;
  daemon = startDaemonProcess(box.config);
  await waitFor(`the slivers to run\n${daemon.output().slice(-2000)}`, async () =>
    (await stateOf(name('one'))) === 'running' && (await stateOf(name('three'))) === 'running');
});

test.after.always(async () => {
  if (!isRoot) return;
  if (daemon) await stopDaemonProcess(daemon);
  await removeAccounts(prefix);
  await box?.cleanup();
  await server?.close();
});

serial('initscripts run inside their slivers\' cgroups, with the document\'s shares, and 1:3 holds under contention', async (t) => {
  const one = name('one');
  const three = name('three');
  await waitFor('the initscripts in their groups', async () => (await tasks(one)).length > 0 && (await tasks(three)).length > 0);
  for (const sliver of [one, three]) {
    const uid = await uidOf(sliver);
    for (const pid of await tasks(sliver)) {
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      t.regex(status, new RegExp(`^Uid:\\s+${uid}\\s`, 'm'), `pid ${pid} in ${sliver}'s group runs as the sliver`);
    }
  }
  t.is((await shares(three)) / (await shares(one)), 3);
  const { ratio, a, b } = await cpuRatio(one, three, 5);
  t.log(`CPU seconds over 5 s on one CPU: ${a.toFixed(2)} (share 1) and ${b.toFixed(2)} (share 3): ratio ${ratio.toFixed(2)}`);
  t.true(ratio >= 3 * 0.85 && ratio <= 3 * 1.15, `ratio ${ratio}`);
});

serial('a loan of CPU share is in the kernel when SetLoans returns, and the measured ratio follows it', async (t) => {
  const one = name('one');
  const three = name('three');
  // three lends 2 of its 3 shares to one: 3:1 the other way round
  t.is(await call('SetLoans', three, [[one, 'cpu_share', 2]]), 1);
  t.is((await shares(one)) / (await shares(three)), 3);
  const { ratio, a, b } = await cpuRatio(three, one, 5);
  t.log(`after the loan: ${b.toFixed(2)} (share 1+2) and ${a.toFixed(2)} (share 3-2) CPU seconds: ratio ${ratio.toFixed(2)}`);
  t.true(ratio >= 3 * 0.85 && ratio <= 3 * 1.15, `ratio ${ratio}`);
  t.is(await call('SetLoans', three, []), 1);
  t.is((await shares(three)) / (await shares(one)), 3);
});

serial('GetSliverStatus and nodemgr status show the limits in force as the kernel holds them', async (t) => {
  const three = name('three');
  const status = (await call('GetSliverStatus', three)) as { limits_in_force: Record<string, unknown> };
  const inForce = status.limits_in_force;
  t.is(inForce['cpu_shares'], await shares(three));
  t.is(inForce['mem_max'], 262_144);
  t.is(inForce['proc_max'], 64);
  t.true((inForce['processes'] as number) >= 1);
  t.true((inForce['cpu_used_seconds'] as number) > 0);
  t.is(typeof inForce['disk_used'], 'number');
  const text = await nodemgr(['status', '--config', box.config]);
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /limits in force on the host/);
  t.regex(text.stdout, new RegExp(`${three}\\s+${await shares(three)}\\s+-\\s+262144\\s`));
});

serial('a process of a sliver\'s uid started outside its group is moved in by the sweep', async (t) => {
  const one = name('one');
  const uid = (await uidOf(one))!;
  const stray = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', 'sleep', '600'], { stdio: 'ignore' });
  try {
    await waitFor('the stray process in its sliver\'s group', async () => (await tasks(one)).includes(stray.pid!));
    t.true((await tasks(one)).includes(stray.pid!), 'the stray process is in its sliver\'s group');
  } finally {
    stray.kill('SIGKILL');
  }
});

serial('Stop kills every process of the sliver\'s group', async (t) => {
  const three = name('three');
  t.true((await tasks(three)).length > 0);
  t.is(await call('Stop', three), 1);
  await waitFor('the sliver stopped', async () => (await stateOf(three)) === 'stopped');
  t.deepEqual(await tasks(three), []);
});
