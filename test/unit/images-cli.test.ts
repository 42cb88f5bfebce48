// `nodemgr image add|ls|rm` as a separate process against an API server on a Unix socket in a
// temporary directory, serving a real cache; the server takes every caller for root, except in
// the test of a refusal.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type { Caller } from '../../src/api/identity.js';
import { createApiMethods } from '../../src/api/methods.js';
import { startApiServer } from '../../src/api/server.js';
import { openDatabase } from '../../src/db/store.js';
import { openImageCache } from '../../src/images/cache.js';
import { memoryLogger } from '../../src/log.js';
import { recordWriter } from '../../src/db/record-writer.js';

const run = promisify(execFile);
const MAIN = join(import.meta.dirname, '..', '..', 'src', 'cli', 'main.ts');
// The image commands alone, without the daemon's modules that main.ts loads: a quicker start.
const IMAGE_ONLY = [
  '--input-type=module', '-e',
  `import { runImage } from ${JSON.stringify(join(import.meta.dirname, '..', '..', 'src', 'cli', 'image.ts'))};
   process.exitCode = await runImage(process.argv.slice(1));`,
  '--',
];

async function nodemgrIn(entry: string[], args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', ...entry, ...args]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function daemon(t: ExecutionContext, caller: Caller = { uid: 0, kind: 'root', name: null }) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-images-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: join(dir, 'db.json'), lockPath: join(dir, 'db.lock'), logger });
  t.teardown(() => store.close());
  const images = await openImageCache({ dir: join(dir, 'images'), maxBytes: 1 << 20, inUse: () => new Set(), logger });
  t.teardown(() => images.close());
  const unused = async () => {
    throw new Error('not used here');
  };
  const methods = createApiMethods({
    store, records: recordWriter(store, logger), logger, now: () => new Date(), authorityDelegate: null, defaultRuntime: 'unix',
    converge: unused, submit: unused, observe: unused, verifyTicket: () => unused() as never, verifyPush: unused, acceptDocument: unused, images,
  });
  const socket = join(dir, 'api.sock');
  const server = await startApiServer({
    port: null, host: '127.0.0.1', socketPath: socket, maxRequestBytes: 1 << 20,
    identify: async () => caller, call: (c, method, params) => methods.call(c, method, params), logger,
  });
  t.teardown(() => server.close());
  const config = join(dir, 'nodemgr.conf');
  await writeFile(config, `api_socket = ${socket}\n`);
  const nodemgr = (...args: string[]) => nodemgrIn(IMAGE_ONLY, ['--config', config, ...args]);
  return { dir, config, nodemgr };
}

test('add, ls and rm print what the cache holds; errors exit 1 with the reason', async (t) => {
  const { dir, nodemgr } = await daemon(t);
  await writeFile(join(dir, 'vmlinuz'), 'a kernel');
  const uri = pathToFileURL(join(dir, 'vmlinuz')).href;
  const added = await nodemgr('image', 'add', uri, '--type', 'kernel', '--desc', 'Debian 12 kernel');
  t.is(added.code, 0, added.stderr);
  t.regex(added.stdout, /^vmlinuz: kernel, 8 B, sha256 [0-9a-f]{64}\n {2}from file:\/\/.*\/vmlinuz\n {2}at .*\/images\/vmlinuz\n$/);

  const listed = await nodemgr('image', 'ls');
  t.is(listed.code, 0, listed.stderr);
  const lines = listed.stdout.trimEnd().split('\n');
  t.regex(lines[0]!, /^NAME +TYPE +FORMAT +SIZE +LAST USED +URI +DESCRIPTION$/);
  t.regex(lines[1]!, /^vmlinuz +kernel +raw +8 B +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +file:\S+ +Debian 12 kernel$/);
  t.is(lines[2], '1 entry, 8 B');
  const json = JSON.parse((await nodemgr('image', 'ls', '--json')).stdout) as { name: string; bytes: number }[];
  t.deepEqual(json.map((e) => [e.name, e.bytes]), [['vmlinuz', 8]]);

  const bad = await nodemgr('image', 'add', uri, '--type', 'image', '--desc', 'x', '--sha256', '0'.repeat(64), '--name', 'other');
  t.is(bad.code, 1);
  t.regex(bad.stderr, /^nodemgr: image add: image file:.*: cached already as type kernel \(name vmlinuz\), not image \(fault 102\)\n$/);

  const removed = await nodemgr('image', 'rm', 'vmlinuz');
  t.is(removed.code, 0, removed.stderr);
  t.is(removed.stdout, `removed vmlinuz (${uri}), 8 B\n`);
  t.is((await nodemgr('image', 'ls')).stdout, 'no cached images\n');
  const again = await nodemgr('image', 'rm', 'vmlinuz');
  t.deepEqual([again.code, again.stderr], [1, 'nodemgr: image rm: image "vmlinuz": no cached image of that name or URI (fault 102)\n']);
});

test('ls --classad prints the HTCondor CACHED_IMAGES line of every entry, sorted', async (t) => {
  const { dir, nodemgr } = await daemon(t);
  t.deepEqual(await nodemgr('image', 'ls', '--classad'), { code: 0, stdout: 'CACHED_IMAGES = ""\n', stderr: '' });
  for (const [name, type] of [['vmlinuz', 'kernel'], ['debian.img', 'image']] as const) {
    await writeFile(join(dir, name), `the ${type}`);
    const added = await nodemgr('image', 'add', pathToFileURL(join(dir, name)).href, '--type', type, '--desc', name);
    t.is(added.code, 0, added.stderr);
  }
  t.deepEqual(await nodemgr('image', 'ls', '--classad'), { code: 0, stdout: 'CACHED_IMAGES = "debian.img,vmlinuz"\n', stderr: '' });
  const both = await nodemgr('image', 'ls', '--classad', '--json');
  t.is(both.code, 2);
  t.regex(both.stderr, /^nodemgr: image ls takes --json or --classad, not both\n/);
  t.regex((await nodemgr('image', 'rm', 'vmlinuz', '--classad')).stderr, /--classad does not apply to image rm/);
  t.regex((await nodemgr('image', 'help')).stdout, /ls \[--json \| --classad\]/);
});

test('usage errors exit 2 with the usage', async (t) => {
  const { nodemgr } = await daemon(t);
  const noType = await nodemgr('image', 'add', 'http://example.org/a.img', '--desc', 'x');
  t.is(noType.code, 2);
  t.regex(noType.stderr, /^nodemgr: image add needs --type image\|kernel\|initrd\|data\n\nusage: nodemgr image/);
  t.regex((await nodemgr('image', 'rm')).stderr, /image rm needs the name or URI of an entry/);
  t.regex((await nodemgr('image', 'ls', '--type', 'image')).stderr, /--type does not apply to image ls/);
  t.regex((await nodemgr('image', 'frobnicate')).stderr, /unknown image command "frobnicate"/);
  const help = await nodemgr('image', 'help');
  t.is(help.code, 0);
  t.regex(help.stdout, /add URI --type image\|kernel\|initrd\|data --desc TEXT \[--sha256 HEX\] \[--name NAME\]/);
});

test('a caller who is not root is told that adding needs root', async (t) => {
  const { nodemgr } = await daemon(t, { uid: 70001, kind: 'sliver', name: 'pl_web' });
  const refused = await nodemgr('image', 'add', 'http://example.org/a.img', '--type', 'image', '--desc', 'x');
  t.is(refused.code, 1);
  t.regex(refused.stderr, /Permission denied for AddImage\. \(adding and removing images needs root\)/);
  t.is((await nodemgr('image', 'ls')).stdout, 'no cached images\n', 'a known caller may list');
});

test('nodemgr routes image commands, with --config before or after them; without a daemon the socket is named', async (t) => {
  const { config, dir } = await daemon(t);
  await writeFile(config, `api_socket = ${join(dir, 'elsewhere.sock')}\n`);
  for (const args of [['--config', config, 'image', 'ls'], ['image', 'ls', '--config', config]]) {
    const result = await nodemgrIn([MAIN], args);
    t.is(result.code, 1);
    t.regex(result.stderr, /^nodemgr: image ls: the daemon's API socket .*elsewhere\.sock is not answering \(ENOENT\); is the daemon running\?\n$/);
  }
  t.regex((await nodemgrIn([MAIN], ['help'])).stdout, /image add\|ls\|rm +the node's image cache/);
});
