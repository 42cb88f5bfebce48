// The unix runtime's view of the account files: one parsed copy for every lookup while the files
// stay the same, and one shared read when they change under thousands of waiting operations.
import test from 'ava';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createLogger } from '../../src/log.js';
import { hostAccounts } from '../../src/runtimes/unix/host-accounts.js';

const RANGE = { uidMin: 70_000, uidMax: 79_999 };

async function accountFiles(count: number) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-host-accounts-'));
  const files = { passwdFile: join(dir, 'passwd'), shadowFile: join(dir, 'shadow'), groupFile: join(dir, 'group') };
  /** Writes `count` sliver accounts as the batch writer does: a new file renamed over the old. */
  const write = async (names: string[]) => {
    const passwd = ['root:x:0:0:root:/root:/bin/bash', ...names.map((n, i) => `${n}:x:${RANGE.uidMin + i}:${RANGE.uidMin + i}:nodemgr sliver:/home/${n}:/bin/bash`)];
    const shadow = ['root:*:19000:0:99999:7:::', ...names.map((n) => `${n}:*:19000:0:99999:7:::`)];
    for (const [file, lines] of [[files.passwdFile, passwd], [files.shadowFile, shadow]] as const) {
      await writeFile(`${file}.new`, lines.join('\n') + '\n');
      await rename(`${file}.new`, file);
    }
  };
  await write(Array.from({ length: count }, (_, i) => `site_a${i}`));
  return { dir, files, write };
}

test('lookups share one parsed copy of the files while they are unchanged', async (t) => {
  const node = await accountFiles(50);
  t.teardown(() => rm(node.dir, { recursive: true, force: true }));
  const accounts = hostAccounts(node.files, RANGE, createLogger({ console: false }));
  const first = await accounts.readAll();
  t.is(first.length, 51);
  t.is(await accounts.readAll(), first, 'the same array: nothing read or parsed again');
  t.is((await accounts.find('site_a7'))?.uid, RANGE.uidMin + 7);
  t.is((await accounts.find('site_a7'))?.shadow?.hash, '*');
});

test('a rewrite of the files seen by a thousand waiting lookups at once is read once, and read whole', async (t) => {
  const node = await accountFiles(10);
  t.teardown(() => rm(node.dir, { recursive: true, force: true }));
  const accounts = hostAccounts(node.files, RANGE, createLogger({ console: false }));
  t.is((await accounts.readAll()).length, 11);

  const names = Array.from({ length: 2000 }, (_, i) => `site_b${i}`);
  await node.write(names);
  // As after a batch of creates: every operation of the batch looks its own account up.
  const views = await Promise.all(names.slice(0, 1000).map(() => accounts.readAll()));
  t.is(new Set(views).size, 1, 'one read shared by all of them');
  t.is(views[0]!.length, 2001);
  const found = await Promise.all(names.map((name) => accounts.owned(name, 'configure')));
  t.deepEqual(found.map((a) => a?.name), names);
  t.true(found.every((a) => a?.kind === 'sliver'));
});

test('the accounts kept hold strings of their own: keeping one keeps no version of the files', async (t) => {
  // Twenty versions of 10,000-account files, as a node sees them over a day of batches, and from
  // each only one account kept (as the limits and the supervisors keep an account's name).
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const node = await accountFiles(0);
  t.teardown(() => rm(node.dir, { recursive: true, force: true }));
  const accounts = hostAccounts(node.files, RANGE, createLogger({ console: false }));
  gc();
  const before = process.memoryUsage().heapUsed;
  const kept = [];
  for (let v = 0; v < 20; v++) {
    await node.write(Array.from({ length: 10_000 }, (_, i) => `site_v${v}_${i}`));
    const account = (await accounts.readAll())[1 + v * 100]!;
    kept.push({ name: account.name, home: account.home, gecos: account.gecos, shadow: account.shadow });
  }
  await node.write([]);
  await accounts.readAll();
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  t.is(kept[7]!.home, '/home/site_v7_700');
  t.is(kept[7]!.shadow?.hash, '*');
  // Each version of passwd is about 700 KB; held by views of it, twenty would be 14 MB and more.
  t.true(grown < 2 * 1024 * 1024, `the heap grew by ${(grown / 1024 / 1024).toFixed(1)} MB`);
});
