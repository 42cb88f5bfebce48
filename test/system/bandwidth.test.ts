// Bandwidth limits with real traffic: slivers (uids with no account, started with setpriv) send
// with iperf3 from one network namespace to a peer namespace through the shaped veth, and the
// receiver's figures are compared with the classes' rates. The HTB tree and the uid classifier
// are put in place by the same adapter and enforcer the daemon uses.
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/log.js';
import { createEnforcer, type LimitInput } from '../../src/limits/enforcer.js';
import { readLimitsInForce } from '../../src/limits/in-force.js';
import { withDefaults } from '../../src/rspec/resources.js';
import { createTrafficShaper, type TrafficShaper } from '../../src/limits/tc.js';
import type { ShapingLayout } from '../../src/limits/shaping.js';
import { isRoot, leaseTestUids, run, waitFor } from './support/host.js';

const ns = `nmbw${randomBytes(3).toString('hex')}`;
const peer = `${ns}p`;
const PEER = '10.96.0.2';
const EXEMPT_PEER = '10.95.0.2';
// The senders' uids, leased so that no daemon's account has one (a daemon sweeps the processes of
// its accounts' uids); the slivers' class numbers count from the range's start.
const uids = isRoot ? await leaseTestUids(100, 'test/system/bandwidth.test.ts') : null;
const uidAt = (n: number) => (uids?.min ?? 70_000) + n;
const layout: ShapingLayout = {
  device: 'nmv0', major: '4e4d', uidMin: uidAt(0), uidMax: uids?.max ?? 79_999, linkRateKbit: 1_000_000, nodeCapKbit: 1_000_000,
  exemptCapKbit: 1_000_000, exemptPrefixes: ['10.95.0.0/24'],
};
const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('bandwidth with real traffic: needs root (network namespaces, tc, processes as other uids)', () => undefined);
let workDir = '';

test.before(async () => {
  if (!isRoot) return;
  workDir = await mkdtemp(join(tmpdir(), 'nodemgr-bw-'));
  await run('ip', ['netns', 'add', ns]);
  await run('ip', ['netns', 'add', peer]);
  await run('ip', ['-n', ns, 'link', 'add', 'nmv0', 'type', 'veth', 'peer', 'name', 'nmv1', 'netns', peer]);
  await run('ip', ['-n', ns, 'addr', 'add', '10.96.0.1/24', 'dev', 'nmv0']);
  await run('ip', ['-n', ns, 'addr', 'add', '10.95.0.1/24', 'dev', 'nmv0']);
  await run('ip', ['-n', peer, 'addr', 'add', `${PEER}/24`, 'dev', 'nmv1']);
  await run('ip', ['-n', peer, 'addr', 'add', `${EXEMPT_PEER}/24`, 'dev', 'nmv1']);
  for (const [space, dev] of [[ns, 'nmv0'], [peer, 'nmv1']] as const) {
    await run('ip', ['-n', space, 'link', 'set', dev, 'up']);
    await run('ip', ['-n', space, 'link', 'set', 'lo', 'up']);
  }
});

test.after.always(async () => {
  if (!isRoot) return;
  await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  await run('ip', ['netns', 'del', peer]).catch(() => undefined);
  await rm(workDir, { recursive: true, force: true });
  await uids?.release();
});

let nextPort = 5301;

/** Resolves once something listens on the port in the peer namespace. */
async function listening(port: number): Promise<void> {
  await waitFor(`the iperf3 server on port ${port} to listen`, async () =>
    (await run('ip', ['netns', 'exec', peer, 'ss', '-Hltn', `sport = :${port}`])).stdout.trim() !== '', { timeoutMs: 10_000, intervalMs: 50 });
}

/** One iperf3 run as `uid`; the receiver's figure in Mbit/s, or the reason iperf3 gives for none. */
async function sendOnce(uid: number, to: string, seconds: number): Promise<number | string> {
  const port = nextPort++;
  const server = spawn('ip', ['netns', 'exec', peer, 'iperf3', '-s', '-1', '-p', String(port)], { stdio: 'ignore' });
  try {
    await listening(port);
    const result = await run('ip', [
      'netns', 'exec', ns, 'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups',
      'iperf3', '-c', to, '-p', String(port), '-t', String(seconds), '-O', '1', '-J',
    ], { maxBuffer: 16 * 1024 * 1024 }).catch((error: { stdout?: string; message: string }) => ({ stdout: error.stdout ?? '', error: error.message }));
    const report = JSON.parse(result.stdout || '{}') as { error?: string; end?: { sum_received?: { bits_per_second: number } } };
    const received = report.end?.sum_received?.bits_per_second;
    return received === undefined ? (report.error ?? ('error' in result ? result.error : 'no receiver figures')) : received / 1e6;
  } finally {
    server.kill('SIGKILL');
  }
}

/**
 * Sends for `seconds` as `uid` to `to`; resolves with what the receiver got, in Mbit/s. A run that
 * iperf3 itself reports as failed (a control connection lost on a loaded machine) is repeated.
 */
async function send(uid: number, to: string, seconds: number): Promise<number> {
  const failures: string[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const outcome = await sendOnce(uid, to, seconds);
    if (typeof outcome === 'number') return outcome;
    failures.push(outcome);
  }
  throw new Error(`iperf3 as uid ${uid} to ${to} failed 3 times: ${failures.join('; ')}`);
}

const rspec = (overrides: Record<string, number>) => withDefaults(overrides);

async function enforcerFor(slivers: LimitInput['slivers'], options: { bwcapKbit?: number; now?: () => Date; period?: number; shaper?: TrafficShaper } = {}) {
  const shaper = options.shaper ?? createTrafficShaper({ layout, netns: ns });
  const enforcer = await createEnforcer({
    cgroups: null, shaper, disk: null, cpuCount: 2,
    byteCapFile: join(workDir, 'byte-caps.json'),
    byteCapPeriodSeconds: options.period ?? 86_400,
    input: async () => ({ slivers, present: new Set(slivers.map((s) => s.name)), others: new Set<string>(), bwcapKbit: options.bwcapKbit ?? null }),
    logger: createLogger({ console: false }),
    now: options.now ?? (() => new Date()),
  });
  return { enforcer, shaper };
}

const within = (measured: number, expected: number, fraction: number) => Math.abs(measured - expected) <= expected * fraction;

serial('two slivers with ceilings of 5 and 20 Mbit/s each get their ceiling, within 10%', async (t) => {
  const { enforcer, shaper } = await enforcerFor([
    { name: 'slow', uid: uidAt(10), rspec: rspec({ net_max_rate: 5_000 }) },
    { name: 'fast', uid: uidAt(11), rspec: rspec({ net_max_rate: 20_000 }) },
  ]);
  await enforcer.refresh();
  t.deepEqual(enforcer.problems().size, 0, JSON.stringify([...enforcer.problems()]));
  const [slow, fast] = await Promise.all([send(uidAt(10), PEER, 5), send(uidAt(11), PEER, 5)]);
  t.log(`measured: ${slow.toFixed(2)} and ${fast.toFixed(2)} Mbit/s for ceilings of 5 and 20`);
  t.true(within(slow, 5, 0.1), `slow sliver: ${slow} Mbit/s`);
  t.true(within(fast, 20, 0.1), `fast sliver: ${fast} Mbit/s`);
  // A uid that is no sliver's is not shaped by a sliver's class.
  const other = await send(uidAt(99), PEER, 2);
  t.log(`unclassified uid: ${other.toFixed(1)} Mbit/s`);
  t.true(other > 40, `an unclassified sender is held to ${other} Mbit/s`);
  await shaper.remove();
});

serial('under a shared node cap every sliver keeps its guaranteed minimum', async (t) => {
  // 20 Mbit/s for the node; one sliver is guaranteed 12, the other 4, both may use it all.
  const { enforcer, shaper } = await enforcerFor([
    { name: 'big', uid: uidAt(20), rspec: rspec({ net_min_rate: 12_000, net_max_rate: 20_000 }) },
    { name: 'small', uid: uidAt(21), rspec: rspec({ net_min_rate: 4_000, net_max_rate: 20_000 }) },
  ], { bwcapKbit: 20_000 });
  await enforcer.refresh();
  const [big, small] = await Promise.all([send(uidAt(20), PEER, 5), send(uidAt(21), PEER, 5)]);
  t.log(`measured: ${big.toFixed(2)} (guaranteed 12) and ${small.toFixed(2)} (guaranteed 4) Mbit/s, node cap 20`);
  t.true(big >= 12 * 0.9, `big sliver below its minimum: ${big}`);
  t.true(small >= 4 * 0.9, `small sliver below its minimum: ${small}`);
  t.true(big + small <= 20 * 1.1, `together above the node cap: ${big + small}`);
  await shaper.remove();
});

serial('traffic to an exempt prefix is held to the exempt ceiling, not the ordinary one', async (t) => {
  const { enforcer, shaper } = await enforcerFor([
    { name: 'mixed', uid: uidAt(30), rspec: rspec({ net_max_rate: 4_000, net_i2_max_rate: 12_000 }) },
  ]);
  await enforcer.refresh();
  const ordinary = await send(uidAt(30), PEER, 3);
  const exempt = await send(uidAt(30), EXEMPT_PEER, 3);
  t.log(`measured: ordinary ${ordinary.toFixed(2)} (ceiling 4), exempt ${exempt.toFixed(2)} (ceiling 12) Mbit/s`);
  t.true(within(ordinary, 4, 0.1));
  t.true(within(exempt, 12, 0.1));
  await shaper.remove();
});

serial('a sliver past its daily threshold is throttled to the computed rate, across a restart, until the period resets', async (t) => {
  // A controlled clock: the period and the seconds left in it decide the throttled rate, and the
  // test cannot wait a day. The traffic and the kernel's counters are real.
  let clock = 1_000_000;
  const now = () => new Date(clock * 1000);
  const period = 3_600;
  // Throttled from 1 MiB; the allowance leaves room for 2 Mbit/s over the rest of the period.
  const threshKbyte = 1_024;
  const sliver = { name: 'capped', uid: uidAt(40), rspec: rspec({ net_max_rate: 20_000, net_thresh_kbyte: threshKbyte, net_max_kbyte: 0 }) };
  const { enforcer, shaper } = await enforcerFor([sliver], { now, period });
  await enforcer.refresh();
  await enforcer.sampleBytes(); // the baseline
  const before = await send(sliver.uid, PEER, 2);
  t.true(within(before, 20, 0.1), `before the threshold: ${before}`);

  clock += 600; // 3,000 s of the period left
  await enforcer.sampleBytes();
  const used = enforcer.byteCaps()['capped']!.main.usedBytes;
  t.true(used >= threshKbyte * 1024, `counted ${used} bytes`);
  // Set the allowance so that what is left spreads to 2 Mbit/s over the 3,000 s left.
  const maxKbyte = Math.round((used + (2_000_000 / 8) * 3_000) / 1024);
  const expectedKbit = Math.floor(((maxKbyte * 1024 - used) * 8) / 3_000 / 1000);
  const capped = { ...sliver, rspec: { ...sliver.rspec, net_max_kbyte: maxKbyte } };
  // A restart: a new enforcer reads the saved counts, and the next sample throttles.
  const restarted = await enforcerFor([capped], { now, period, shaper });
  await restarted.enforcer.refresh();
  t.is(restarted.enforcer.byteCaps()['capped']!.main.usedBytes, used, 'the count survived the restart');
  await restarted.enforcer.sampleBytes();
  const classes = await shaper.read();
  const ceilKbit = classes.get(0x100 + 2 * 40)!.ceilBit / 1000;
  t.log(`throttled: expected ${expectedKbit} kbit/s, class ceiling ${ceilKbit} kbit/s`);
  t.true(within(ceilKbit, expectedKbit, 0.01));
  const throttled = await send(sliver.uid, PEER, 4);
  t.log(`measured while throttled: ${throttled.toFixed(2)} Mbit/s`);
  t.true(within(throttled, expectedKbit / 1000, 0.1));

  clock += 3_000; // the period is over
  await restarted.enforcer.sampleBytes();
  t.is(restarted.enforcer.byteCaps()['capped']!.main.usedBytes, 0);
  t.is((await shaper.read()).get(0x100 + 2 * 40)!.ceilBit, 20_000_000);
  const after = await send(sliver.uid, PEER, 2);
  t.log(`after the reset: ${after.toFixed(2)} Mbit/s`);
  t.true(within(after, 20, 0.1));
  const saved = JSON.parse(await readFile(join(workDir, 'byte-caps.json'), 'utf8')) as { slivers: Record<string, unknown> };
  t.truthy(saved.slivers['capped']);
  await shaper.remove();
});

serial('the limits in force say "bandwidth: not enforced" with the reason when the classifier or nft is missing, and show no rates then', async (t) => {
  const sliver = { name: 'honest', uid: uidAt(50), rspec: rspec({ net_max_rate: 5_000 }) };
  const { enforcer, shaper } = await enforcerFor([sliver]);
  t.teardown(() => shaper.remove().catch(() => undefined));
  await enforcer.refresh();
  const readBack = async (via: TrafficShaper) => (await readLimitsInForce({
    cgroups: null, shaper: via, disk: null, byteCaps: {}, byteCapPeriodSeconds: 86_400, homeBase: workDir, unavailable: new Map(),
  }, [sliver])).get('honest')!;

  const shaped = await readBack(shaper);
  t.is(shaped['net_max_rate'], 5_000);
  t.notRegex(String(shaped['not_enforced']), /bandwidth/);

  // The classes are there but nothing sends traffic into them: not enforced, and no rates shown.
  // The host's nft by its path: npm puts node_modules/.bin, where a package ships a program of that name, first.
  await run('ip', ['netns', 'exec', ns, '/usr/sbin/nft', 'delete', 'table', 'inet', 'nodemgr']);
  const unclassified = await readBack(shaper);
  t.is(unclassified['net_max_rate'], undefined);
  t.regex(String(unclassified['not_enforced']), /bandwidth: not enforced: the nftables classifier \(table inet nodemgr\) is not loaded/);

  // A host without nftables: the same tools but nft. Applying fails naming the package, and the
  // read-back says so.
  const bare = join(workDir, 'no-nft');
  await mkdir(bare, { recursive: true });
  for (const tool of ['ip', 'tc']) await symlink(join('/usr/sbin', tool), join(bare, tool)).catch(() => undefined);
  const withoutNft = createTrafficShaper({ layout, netns: ns, path: bare });
  const refused = await t.throwsAsync(withoutNft.apply([], new Map(), null));
  t.regex(refused?.message ?? '', /nft is not installed \(Debian package nftables\)/);
  const missing = await readBack(withoutNft);
  t.is(missing['net_max_rate'], undefined);
  t.regex(String(missing['not_enforced']), /bandwidth: not enforced: .*nft is not installed \(Debian package nftables\)/);
});
