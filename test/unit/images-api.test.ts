// AddImage, GetImages and RemoveImage through the API's method table, with a real cache in a
// temporary directory and file: URIs.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ApiFault } from '../../src/api/faults.js';
import type { Caller } from '../../src/api/identity.js';
import { createApiMethods } from '../../src/api/methods.js';
import { openDatabase } from '../../src/db/store.js';
import { openImageCache, type ImageCache } from '../../src/images/cache.js';
import { memoryLogger } from '../../src/log.js';
import { recordWriter } from '../../src/db/record-writer.js';

const ROOT: Caller = { uid: 0, kind: 'root', name: null };
const SLIVER: Caller = { uid: 70001, kind: 'sliver', name: 'pl_web' };
const NOBODY: Caller = { uid: 65534, kind: 'nobody', name: null };

async function node(t: ExecutionContext, withCache = true) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-images-api-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: join(dir, 'db.json'), lockPath: join(dir, 'db.lock'), logger });
  t.teardown(() => store.close());
  const used = new Set<string>();
  let images: ImageCache | undefined;
  if (withCache) {
    images = await openImageCache({ dir: join(dir, 'images'), maxBytes: 1 << 20, inUse: () => used, logger });
    t.teardown(() => images!.close());
  }
  const unused = async () => {
    throw new Error('not used here');
  };
  const methods = createApiMethods({
    store, records: recordWriter(store, logger), logger, now: () => new Date(), authorityDelegate: null, defaultRuntime: 'unix',
    converge: unused, submit: unused, observe: unused, verifyTicket: () => unused() as never, verifyPush: unused, acceptDocument: unused, images,
  });
  const file = async (name: string, text: string) => {
    await writeFile(join(dir, name), text);
    return pathToFileURL(join(dir, name)).href;
  };
  return { methods, used, file, dir };
}

async function fault(promise: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ApiFault) return { code: error.code, message: error.message };
    throw error;
  }
  throw new Error('expected a fault');
}

test('root adds, lists and removes images; every known caller lists them', async (t) => {
  const { methods, file } = await node(t);
  const uri = await file('vmlinuz', 'a kernel');
  const sha = createHash('sha256').update('a kernel').digest('hex');
  const added = (await methods.call(ROOT, 'AddImage', [uri, 'kernel', 'Debian 12 kernel', sha])) as Record<string, unknown>;
  t.like(added, { name: 'vmlinuz', uri, type: 'kernel', description: 'Debian 12 kernel', sha256: sha, bytes: 8, format: 'raw' });
  const named = (await methods.call(ROOT, 'AddImage', [await file('initrd', 'an initrd'), 'initrd', '', '', 'busybox-initrd'])) as Record<string, unknown>;
  t.is(named['name'], 'busybox-initrd');
  const listed = (await methods.call(SLIVER, 'GetImages', [])) as Record<string, unknown>[];
  t.deepEqual(listed.map((e) => e['name']), ['busybox-initrd', 'vmlinuz']);
  t.deepEqual(listed[1], added);
  t.like(await methods.call(ROOT, 'RemoveImage', [uri]), { name: 'vmlinuz' });
  t.deepEqual(((await methods.call(ROOT, 'GetImages', [])) as Record<string, unknown>[]).map((e) => e['name']), ['busybox-initrd']);
});

test('only root adds and removes; nobody may not even list', async (t) => {
  const { methods, file } = await node(t);
  const uri = await file('disk.img', 'disk');
  t.is((await fault(methods.call(SLIVER, 'AddImage', [uri, 'image', 'x']))).code, 108);
  t.is((await fault(methods.call(SLIVER, 'RemoveImage', ['disk.img']))).code, 108);
  t.is((await fault(methods.call(NOBODY, 'GetImages', []))).code, 108);
});

test('bad input is fault 102 naming what is wrong; a wrong count is 101', async (t) => {
  const { methods, file, used } = await node(t);
  const uri = await file('disk.img', 'disk');
  t.deepEqual(await fault(methods.call(ROOT, 'AddImage', [uri, 'floppy', 'x'])), {
    code: 102, message: 'Invalid argument 2 (type): "floppy" is not one of image, kernel, initrd, data',
  });
  t.deepEqual(await fault(methods.call(ROOT, 'AddImage', ['ftp://example.org/a.img', 'image', 'x'])), {
    code: 102, message: 'image "ftp://example.org/a.img": scheme "ftp:" is not supported; use http:, https: or file:',
  });
  const mismatch = await fault(methods.call(ROOT, 'AddImage', [uri, 'image', 'x', '0'.repeat(64)]));
  t.is(mismatch.code, 102);
  t.regex(mismatch.message, /checksum mismatch: expected sha256 0{64}, got [0-9a-f]{64}; nothing kept$/);
  t.deepEqual(await fault(methods.call(ROOT, 'AddImage', [uri, 'image'])), { code: 101, message: 'Invalid argument count for AddImage: got 2, expecting 3 to 5.' });
  t.is((await fault(methods.call(ROOT, 'AddImage', [uri, 'image', 'x', 7]))).message, 'Invalid argument 4 (sha256): expected a string, got an integer');
  t.is((await fault(methods.call(ROOT, 'RemoveImage', ['nothing']))).message, 'image "nothing": no cached image of that name or URI');
  await methods.call(ROOT, 'AddImage', [uri, 'image', 'x']);
  used.add('disk.img');
  t.deepEqual(await fault(methods.call(ROOT, 'RemoveImage', ['disk.img'])), { code: 102, message: `image disk.img (${uri}): in use by a sliver; not removed` });
});

test('the optional arguments show in Help and in the signatures', async (t) => {
  const { methods } = await node(t);
  t.regex((await methods.call(NOBODY, 'Help', [])) as string, /AddImage\(uri, type, description, \[sha256\], \[name\]\)/);
  t.deepEqual(await methods.call(NOBODY, 'system.methodSignature', ['AddImage']), [
    ['struct', 'string', 'string', 'string'],
    ['struct', 'string', 'string', 'string', 'string'],
    ['struct', 'string', 'string', 'string', 'string', 'string'],
  ]);
  t.deepEqual(await methods.call(NOBODY, 'system.methodSignature', ['GetImages']), [['array']]);
  t.deepEqual(await methods.call(NOBODY, 'system.methodSignature', ['SetLoans']), [['int', 'string', 'array']]);
});

test('without a cache the methods say it is not configured', async (t) => {
  const { methods } = await node(t, false);
  t.deepEqual(await fault(methods.call(ROOT, 'GetImages', [])), { code: -32603, message: 'the image cache is not configured on this node' });
  t.is((await fault(methods.call(ROOT, 'AddImage', ['http://example.org/a.img', 'image', '']))).message, 'the image cache is not configured on this node');
});
