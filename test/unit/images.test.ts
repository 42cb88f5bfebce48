import test from 'ava';
import {
  automaticImageName, checkAddRequest, formatIndex, formatOfHeader, ImageError, parseIndex, planEviction, type ImageEntry,
} from '../../src/images/index.js';
import { formatBytes } from '../../src/util/text.js';

const SHA = 'ab'.repeat(32);

function entry(name: string, bytes: number, lastUsed: string, added = '2026-01-01T00:00:00.000Z'): ImageEntry {
  return {
    name, uri: `http://images.example.org/${name}`, type: 'image', description: '', sha256: SHA, bytes,
    path: `/cache/${name}`, format: 'raw', added, lastUsed,
  };
}

const at = (minute: number) => `2026-01-01T00:${String(minute).padStart(2, '0')}:00.000Z`;

function refusal(req: Parameters<typeof checkAddRequest>[0]): string {
  const error = (() => {
    try {
      checkAddRequest(req);
    } catch (e) {
      return e;
    }
    throw new Error(`accepted: ${JSON.stringify(req)}`);
  })();
  if (!(error instanceof ImageError) || error.kind !== 'invalid') throw error;
  return error.message;
}

test('an add request takes its name from the URI and keeps the normalised URI and a lower-case checksum', (t) => {
  const req = checkAddRequest({ uri: 'https://mirror.example.org/debian/debian-12%2Bnocloud.qcow2?sig=1', type: 'image', description: 'Debian 12', sha256: SHA.toUpperCase() });
  t.is(req.name, 'debian-12+nocloud.qcow2');
  t.is(req.uri, 'https://mirror.example.org/debian/debian-12%2Bnocloud.qcow2?sig=1');
  t.is(req.sha256, SHA);
  t.is(req.description, 'Debian 12');
  t.is(checkAddRequest({ uri: 'file:///srv/images/vmlinuz', type: 'kernel' }).name, 'vmlinuz');
  t.is(checkAddRequest({ uri: 'file:///srv/images/vmlinuz', type: 'kernel', name: 'kernel-6.1' }).name, 'kernel-6.1');
  t.is(checkAddRequest({ uri: 'file://localhost/srv/initrd.img', type: 'initrd', sha256: '' }).sha256, null);
});

test('an add request with a bad URI, type, name, checksum or description is refused, naming the URI and the reason', (t) => {
  t.is(refusal({ uri: 'ftp://example.org/a.img', type: 'image' }), 'image "ftp://example.org/a.img": scheme "ftp:" is not supported; use http:, https: or file:');
  t.regex(refusal({ uri: 'debian.qcow2', type: 'image' }), /^image "debian.qcow2": not a valid URI/);
  t.regex(refusal({ uri: 'http://user:secret@example.org/a.img', type: 'image' }), /credentials in the URI are not accepted/);
  t.regex(refusal({ uri: 'http://example.org/a b.img', type: 'image' }), /space or a control character/);
  t.regex(refusal({ uri: 'http://example.org/images/', type: 'image' }), /names a directory/);
  t.regex(refusal({ uri: 'file://otherhost/srv/a.img', type: 'image' }), /file of this host, not of "otherhost"/);
  t.regex(refusal({ uri: 'file:///srv/a.img?x=1', type: 'image' }), /no query or fragment/);
  t.regex(refusal({ uri: 'http://example.org/a.img', type: 'disk' as never }), /type "disk" is not one of image, kernel, initrd, data/);
  t.regex(refusal({ uri: 'http://example.org/a.img', type: 'image', sha256: 'abc' }), /sha256 "abc" is not 64 hexadecimal digits/);
  t.regex(refusal({ uri: 'http://example.org/a.img', type: 'image', name: '../etc/passwd' }), /vref "..\/etc\/passwd" is not an image name/);
  t.regex(refusal({ uri: 'http://example.org/a.img', type: 'image', name: 'index.json' }), /reserved/);
  t.regex(refusal({ uri: 'http://example.org/.hidden', type: 'image' }), /no name can be taken from the URI .*give a name/);
  t.regex(refusal({ uri: 'http://example.org/a.img', type: 'image', description: 'two\nlines' }), /line break/);
  t.regex(refusal({ uri: 'http://example.org/' + 'x'.repeat(3000), type: 'image' }), /more than 2048/);
});

test('eviction takes the least recently used entries that no sliver uses, as few as needed', (t) => {
  const entries = [entry('a', 400, at(3)), entry('b', 400, at(1)), entry('c', 400, at(2)), entry('d', 400, at(4))];
  const names = (plan: ReturnType<typeof planEviction>) => ('evict' in plan ? plan.evict.map((e) => e.name) : plan.refused);
  t.deepEqual(names(planEviction(entries, { name: 'new', bytes: 400 }, 2000, new Set())), [], 'fits without eviction');
  t.deepEqual(names(planEviction(entries, { name: 'new', bytes: 400 }, 1600, new Set())), ['b']);
  t.deepEqual(names(planEviction(entries, { name: 'new', bytes: 900 }, 1600, new Set())), ['b', 'c', 'a']);
  t.deepEqual(names(planEviction(entries, { name: 'new', bytes: 400 }, 1600, new Set(['b']))), ['c'], 'b is in use: the next oldest goes');
  t.deepEqual(names(planEviction(entries, { name: 'new', bytes: 900 }, 1800, new Set(['b', 'c']))), ['a', 'd']);
});

test('eviction ties are broken by age, then name', (t) => {
  const entries = [entry('z', 100, at(1), at(0)), entry('y', 100, at(1), at(0)), entry('x', 100, at(1), '2025-12-31T00:00:00.000Z')];
  const plan = planEviction(entries, { name: 'new', bytes: 100 }, 200, new Set());
  t.deepEqual('evict' in plan ? plan.evict.map((e) => e.name) : plan, ['x', 'y']);
});

test('an entry in use is never evicted: an add that would need it is refused and nothing is evicted', (t) => {
  const entries = [entry('a', 600, at(1)), entry('b', 600, at(2))];
  const plan = planEviction(entries, { name: 'new', bytes: 600 }, 1000, new Set(['a']));
  t.deepEqual(plan, { refused: 'it is 600 B and the images in use by slivers hold 600 B of the 1000 B the cache may hold (image_cache_max_bytes)' });
  t.deepEqual(planEviction([], { name: 'huge', bytes: 3 * 1024 ** 3 }, 2 * 1024 ** 3, new Set()), {
    refused: 'it is 3 GiB, more than the cache may hold (2 GiB, image_cache_max_bytes)',
  });
});

test('an entry of the same name as the one added does not count against it', (t) => {
  const plan = planEviction([entry('a', 900, at(1))], { name: 'a', bytes: 900 }, 1000, new Set());
  t.deepEqual(plan, { evict: [] });
});

function qcow2(version: number, backingOffset = 0n, incompatible = 0n): Buffer {
  const b = Buffer.alloc(104);
  b.write('QFI\xfb', 0, 'latin1');
  b.writeUInt32BE(version, 4);
  b.writeBigUInt64BE(backingOffset, 8);
  b.writeBigUInt64BE(incompatible, 72);
  return b;
}

test('the header tells qcow2 from raw, and a qcow2 that names another file is refused', (t) => {
  t.deepEqual(formatOfHeader(qcow2(3)), { format: 'qcow2' });
  t.deepEqual(formatOfHeader(qcow2(2)), { format: 'qcow2' });
  t.deepEqual(formatOfHeader(Buffer.from('\x7fELF\x02\x01\x01', 'latin1')), { format: 'raw' });
  t.deepEqual(formatOfHeader(Buffer.alloc(0)), { format: 'raw' });
  t.regex((formatOfHeader(qcow2(3, 0x200n)) as { refused: string }).refused, /backing file/);
  t.regex((formatOfHeader(qcow2(3, 0n, 4n)) as { refused: string }).refused, /external data file/);
  t.regex((formatOfHeader(qcow2(1)) as { refused: string }).refused, /version 1/);
  t.regex((formatOfHeader(qcow2(3).subarray(0, 20)) as { refused: string }).refused, /cut short/);
});

test('the index is written without paths and read back with them; bad entries are dropped with a reason', (t) => {
  const entries = [entry('b', 10, at(2)), entry('a', 5, at(1))];
  const text = formatIndex(entries);
  t.false(text.includes('/cache/'));
  const back = parseIndex(text, '/var/cache/images/');
  t.deepEqual(back.dropped, []);
  t.deepEqual(back.entries.map((e) => [e.name, e.path]), [['a', '/var/cache/images/a'], ['b', '/var/cache/images/b']]);
  const stored = JSON.parse(text) as { entries: Record<string, unknown>[] };
  stored.entries.push({ ...stored.entries[0], uri: 'http://x/other' }, { ...stored.entries[0], name: 'c', sha256: 'nope' }, { ...stored.entries[0], name: 'd', type: 'floppy' });
  const damaged = parseIndex(JSON.stringify({ version: 1, entries: stored.entries }), '/c');
  t.deepEqual(damaged.entries.map((e) => e.name), ['a', 'b']);
  t.deepEqual(damaged.dropped, [
    'entry 3: name a listed twice',
    'entry 4: sha256 is not 64 lower-case hexadecimal digits',
    'entry 5: type "floppy" is not one of image, kernel, initrd, data',
  ]);
  t.throws(() => parseIndex('{"version": 2, "entries": []}', '/c'), { message: /not an image index of version 1/ });
  t.throws(() => parseIndex('{', '/c'), { message: /^not JSON/ });
});

test('sizes are shown in binary units', (t) => {
  t.is(formatBytes(0), '0 B');
  t.is(formatBytes(1023), '1023 B');
  t.is(formatBytes(1536), '1.5 KiB');
  t.is(formatBytes(200 * 1024 * 1024), '200 MiB');
  t.is(formatBytes(20 * 1024 ** 3), '20 GiB');
});

test('an entry fetched for a sliver takes the URI\'s last part, tagged with its hash when another URI has that name', (t) => {
  const url = new URL('http://mirror-b.example.org/debian/rootfs.img.gz');
  t.is(automaticImageName(url, () => false), 'rootfs.img.gz');
  t.regex(automaticImageName(url, (n) => n === 'rootfs.img.gz'), /^rootfs-[0-9a-f]{8}\.img\.gz$/);
  t.is(automaticImageName(url, (n) => n === 'rootfs.img.gz'), automaticImageName(url, (n) => n === 'rootfs.img.gz'), 'the same each time');
  t.regex(automaticImageName(new URL('http://example.org/'), () => false), /^image-[0-9a-f]{8}$/);
  t.regex(automaticImageName(new URL(`http://example.org/${'x'.repeat(128)}`), () => true), /^x{110,}-[0-9a-f]{8}$/);
});
