// The MAC/IP pool: what the file's lines become, how leases are handed out and given back, and how
// the file on disk is followed as it changes.
import test from 'ava';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAddressPoolFile } from '../../src/addresses/pool-file.js';
import {
  allocateAddresses, parseAddressPool, reclaimAddresses, releaseAddresses, staleLeases, type AddressLease, type PoolEntry,
} from '../../src/addresses/pool.js';
import { memoryLogger } from '../../src/log.js';

const NOW = '2024-05-01T12:00:00.000Z';
const LATER = '2024-05-02T08:00:00.000Z';

function pool(lines: string[]): PoolEntry[] {
  const { entries, problems } = parseAddressPool(lines.join('\n'), 'pool');
  if (problems.length > 0) throw new Error(problems.join('; '));
  return entries;
}

const FOUR = pool([
  '52:54:00:00:00:01 192.0.2.1/24',
  '52:54:00:00:00:02 192.0.2.2/24',
  '52:54:00:00:00:03 192.0.2.3/24',
  '52:54:00:00:00:04 192.0.2.4/24',
]);

function allocated(result: ReturnType<typeof allocateAddresses>): AddressLease[] {
  if (!result.ok) throw new Error(result.reason);
  return result.leases;
}

test('the XenBEE format: MAC IP [# comment], blank and comment lines ignored, IPv4 and IPv6, optional prefix', (t) => {
  const text = [
    '# the pool of this node',
    '',
    '52:54:00:AB:cd:01   192.0.2.10/24   # web front',
    '   # indented comment',
    '52-54-00-ab-cd-02\t2001:DB8:0:0::0:1/64',
    '52:54:00:ab:cd:03 192.0.2.12#no space before the comment',
    '\t  ',
  ].join('\r\n');
  const { entries, problems } = parseAddressPool(text, '/etc/nodemgr/mac-addresses');
  t.deepEqual(problems, []);
  t.deepEqual(entries, [
    { mac: '52:54:00:ab:cd:01', ip: '192.0.2.10', prefix: 24, comment: 'web front', line: 3 },
    { mac: '52:54:00:ab:cd:02', ip: '2001:db8::1', prefix: 64, comment: '', line: 5 },
    { mac: '52:54:00:ab:cd:03', ip: '192.0.2.12', prefix: null, comment: 'no space before the comment', line: 6 },
  ]);
});

test('bad lines and duplicates are reported with file and line and left out; the rest still work', (t) => {
  const text = [
    '52:54:00:00:00:01 192.0.2.1', // 1 good
    '53:54:00:00:00:02 192.0.2.2', // 2 multicast MAC (low bit of 0x53)
    '52:54:00:00:00 192.0.2.3', // 3 short MAC
    '52:54:00:00:00:04 192.0.2.300', // 4 bad IPv4
    '52:54:00:00:00:05 192.0.2.5 extra', // 5 extra field
    '52:54:00:00:00:06', // 6 no IP
    '52:54:00:00:00:01 192.0.2.7', // 7 duplicate MAC of line 1
    '52:54:00:00:00:08 192.0.2.1/25', // 8 duplicate IP of line 1
    '52:54:00:00:00:09 192.0.2.9/33', // 9 prefix too long
    '52:54:00:00:00:0a fe80::1%eth0', // 10 zone
    '52:54:00:00:00:0b 2001:db8::b/64', // 11 good
    '52:54:00:00:00:0c 2001:0db8:0000::000b', // 12 same IPv6 as line 11, written differently
    'ff:ff:ff:ff:ff:ff 192.0.2.13', // 13 broadcast
  ].join('\n');
  const { entries, problems } = parseAddressPool(text, 'pool.txt');
  t.deepEqual(entries.map((e) => e.line), [1, 11]);
  t.is(problems.length, 11);
  const at = (line: number) => problems.find((p) => p.startsWith(`pool.txt:${line}: `)) ?? `(nothing for line ${line})`;
  t.regex(at(2), /multicast/);
  t.regex(at(3), /not a MAC address/);
  t.regex(at(4), /"192\.0\.2\.300" is not an IPv4 or IPv6 address/);
  t.regex(at(5), /found 3 fields/);
  t.regex(at(6), /found 1 field$/);
  t.regex(at(7), /MAC 52:54:00:00:00:01 is already given on line 1/);
  t.regex(at(8), /IP 192\.0\.2\.1 is already given on line 1/);
  t.regex(at(9), /prefix length .*0-32/);
  t.regex(at(10), /fe80::1%eth0/);
  t.regex(at(12), /IP 2001:db8::b is already given on line 11/);
  t.regex(at(13), /multicast/);
});

test('addresses are handed out in file order, one per interface', (t) => {
  const leases = allocated(allocateAddresses(FOUR, [], 'alice', 2, NOW));
  t.deepEqual(leases, [
    { mac: '52:54:00:00:00:01', ip: '192.0.2.1', prefix: 24, sliver: 'alice', iface: 0, since: NOW },
    { mac: '52:54:00:00:00:02', ip: '192.0.2.2', prefix: 24, sliver: 'alice', iface: 1, since: NOW },
  ]);
  const bob = allocated(allocateAddresses(FOUR, leases, 'bob', 1, NOW));
  t.deepEqual(bob.map((l) => [l.mac, l.iface]), [['52:54:00:00:00:03', 0]]);
});

test('asking again keeps the leases a sliver holds, and adds only the missing interfaces', (t) => {
  const first = allocated(allocateAddresses(FOUR, [], 'alice', 1, NOW));
  const all = [...first, ...allocated(allocateAddresses(FOUR, first, 'bob', 1, NOW))];
  t.deepEqual(allocated(allocateAddresses(FOUR, all, 'alice', 1, LATER)), first, 'same lease, same time');
  const grown = allocated(allocateAddresses(FOUR, all, 'alice', 2, LATER));
  t.deepEqual(grown[0], first[0]);
  t.deepEqual(grown[1], { mac: '52:54:00:00:00:03', ip: '192.0.2.3', prefix: 24, sliver: 'alice', iface: 1, since: LATER });
});

test('an exhausted pool is a clear error for that sliver and hands out nothing', (t) => {
  let leases: AddressLease[] = [];
  for (const s of ['a', 'b', 'c']) leases = [...leases, ...allocated(allocateAddresses(FOUR, leases, s, 1, NOW))];
  const partly = allocateAddresses(FOUR, leases, 'd', 2, NOW, '/etc/nodemgr/mac-addresses');
  t.false(partly.ok);
  if (!partly.ok) t.is(partly.reason, 'address pool exhausted: d needs 2 more addresses but only 1 of the 4 in /etc/nodemgr/mac-addresses are free; the others are leased (to a, b, c)');
  leases = [...leases, ...allocated(allocateAddresses(FOUR, leases, 'd', 1, NOW))];
  const full = allocateAddresses(FOUR, leases, 'e', 1, NOW, '/etc/nodemgr/mac-addresses');
  t.deepEqual(full, { ok: false, reason: 'address pool exhausted: all 4 addresses of /etc/nodemgr/mac-addresses are leased (to a, b, c, d)' });
  t.deepEqual(allocateAddresses([], [], 'e', 1, NOW, 'P'), { ok: false, reason: 'address pool P has no usable addresses' });
});

test('the list of holders in the reason is capped', (t) => {
  const big = pool(Array.from({ length: 8 }, (_, i) => `52:54:00:00:01:0${i} 192.0.2.${20 + i}`));
  let leases: AddressLease[] = [];
  for (let i = 0; i < 8; i++) leases = [...leases, ...allocated(allocateAddresses(big, leases, `s${i}`, 1, NOW))];
  const result = allocateAddresses(big, leases, 'late', 1, NOW, 'P');
  t.deepEqual(result, { ok: false, reason: 'address pool exhausted: all 8 addresses of P are leased (to s0, s1, s2, s3, s4 and 3 others)' });
});

test('release frees the addresses for the next sliver', (t) => {
  const a = allocated(allocateAddresses(FOUR, [], 'a', 4, NOW));
  t.false(allocateAddresses(FOUR, a, 'b', 1, NOW).ok);
  const left = releaseAddresses(a, 'a');
  t.deepEqual(left, []);
  t.is(allocated(allocateAddresses(FOUR, left, 'b', 1, NOW))[0]!.mac, '52:54:00:00:00:01');
});

test('a lease whose pair left the pool is reported stale, is kept, and its IP is not handed out again', (t) => {
  const leases = allocated(allocateAddresses(FOUR, [], 'a', 2, NOW));
  // The operator gave the first IP another MAC and dropped the second line.
  const edited = pool(['52:54:00:00:00:99 192.0.2.1/24', '52:54:00:00:00:03 192.0.2.3/24']);
  t.deepEqual(staleLeases(edited, leases), leases);
  t.deepEqual(staleLeases(FOUR, leases), []);
  const b = allocateAddresses(edited, leases, 'b', 1, NOW);
  t.deepEqual(allocated(b).map((l) => l.ip), ['192.0.2.3'], 'the IP still held by a is skipped');
  t.deepEqual(allocated(allocateAddresses(edited, leases, 'a', 2, LATER)), leases, 'a keeps what it holds');
});

test('an invalid interface count is refused', (t) => {
  t.false(allocateAddresses(FOUR, [], 'a', -1, NOW).ok);
  t.false(allocateAddresses(FOUR, [], 'a', 1.5, NOW).ok);
  t.deepEqual(allocateAddresses(FOUR, [], 'a', 0, NOW), { ok: true, leases: [] });
});

async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-pool-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('the pool file is read again when it changes, and its problems are logged once per version', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'mac-addresses');
  await writeFile(path, '52:54:00:00:00:01 192.0.2.1\nnot a line\n');
  const logger = memoryLogger();
  const file = createAddressPoolFile(path, logger);
  const first = await file.entries();
  t.deepEqual(first.entries.map((e) => e.mac), ['52:54:00:00:00:01']);
  t.deepEqual(first.problems, [`${path}:2: expected "MAC IP [# comment]", found 3 fields`]);
  await file.entries();
  t.is(logger.lines.filter((l) => l.includes('ignored')).length, 1, 'an unchanged file is not logged again');

  // Appended in place: the size changes.
  await writeFile(path, '52:54:00:00:00:01 192.0.2.1\nnot a line\n52:54:00:00:00:02 192.0.2.2\n');
  t.deepEqual((await file.entries()).entries.map((e) => e.mac), ['52:54:00:00:00:01', '52:54:00:00:00:02']);
  t.is(logger.lines.filter((l) => l.includes('ignored')).length, 2);

  // Replaced by rename with a file of the same size: the inode changes.
  await writeFile(join(dir, 'new'), '52:54:00:00:00:03 192.0.2.3\n# nothing wrong here\n52:54:00:00:00:04 192.0.2.4\n');
  await rename(join(dir, 'new'), path);
  const allocation = allocateAddresses((await file.entries()).entries, [], 'a', 1, NOW);
  t.deepEqual(allocated(allocation).map((l) => l.mac), ['52:54:00:00:00:03'], 'the next allocation uses the new file');
});

test('a missing pool file is a clear error, and the pool works again once the file is back', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'mac-addresses');
  const logger = memoryLogger();
  const file = createAddressPoolFile(path, logger);
  const message = `address pool file ${path} not found: libvirt slivers cannot get addresses`;
  await t.throwsAsync(file.entries(), { message });
  await t.throwsAsync(file.entries(), { message });
  t.is(logger.lines.filter((l) => l.startsWith('error')).length, 1, 'logged once, not per request');
  await writeFile(path, '52:54:00:00:00:01 192.0.2.1\n');
  t.is((await file.entries()).entries.length, 1);
  await rm(path);
  await t.throwsAsync(file.entries(), { message });
});

test('requests that arrive together share one read', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'mac-addresses');
  await writeFile(path, '52:54:00:00:00:01 192.0.2.1\n');
  const logger = memoryLogger();
  const file = createAddressPoolFile(path, logger);
  const results = await Promise.all([file.entries(), file.entries(), file.entries()]);
  t.is(results[0], results[2]);
  t.is(logger.lines.filter((l) => l.includes('address pool loaded')).length, 1);
});

test('the example pool file parses without problems', async (t) => {
  const text = await readFile(new URL('../../etc/mac-addresses.example', import.meta.url), 'utf8');
  const { entries, problems } = parseAddressPool(text, 'etc/mac-addresses.example');
  t.deepEqual(problems, []);
  t.true(entries.length >= 3);
});

test('a guest whose leases the records lost gets its own MACs back; another holder or an unlisted MAC is reported', (t) => {
  const other = allocated(allocateAddresses(FOUR, [], 'other', 1, NOW)); // 52:54:00:00:00:01
  const result = reclaimAddresses(FOUR, other, 'web', ['52:54:00:00:00:03', '52:54:00:00:00:01', '52:54:00:00:00:99'], LATER);
  t.deepEqual(result.leases, [{ mac: '52:54:00:00:00:03', ip: '192.0.2.3', prefix: 24, sliver: 'web', iface: 0, since: LATER }]);
  t.deepEqual(result.problems, [
    'web interface 1 uses 52:54:00:00:00:01, which is leased to other',
    'web interface 2 uses 52:54:00:00:00:99, which the address pool does not list',
  ]);
  // Reclaimed, the address is no longer free for anyone else.
  const next = allocated(allocateAddresses(FOUR, [...other, ...result.leases], 'new', 1, LATER));
  t.is(next[0]!.mac, '52:54:00:00:00:02');
  t.deepEqual(reclaimAddresses(FOUR, [...other, ...result.leases], 'web', ['52:54:00:00:00:03'], LATER).leases, [], 'asking again changes nothing');
});
