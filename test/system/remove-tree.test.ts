// removeTree against a real race: while it removes a home, another user's process (here one of
// ours) swaps a directory of the home for a symlink to a directory outside it, as soon as the
// removal has begun in it. Node's fs.rm, walking by path, then deleted most of the outside
// directory; removeTree (GNU rm, walking by descriptors) must leave it whole.
import test from 'ava';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeTree } from '../../src/runtimes/unix/remove-tree.js';

const FILES = 20_000;

test('a directory swapped for a symlink while its home is removed sends no removal outside the home', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'nodemgr-remove-tree-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const home = join(base, 'home');
  const outside = join(base, 'outside');
  await mkdir(join(home, 'd'), { recursive: true });
  await mkdir(outside);
  // Synchronous: 40,000 empty files, made faster without a promise each.
  for (let i = 0; i < FILES; i++) writeFileSync(join(home, 'd', `f${i}`), '');
  for (let i = 0; i < FILES; i++) writeFileSync(join(outside, `f${i}`), '');
  // The racer: once the first entry of d is gone, d is moved aside and a symlink to outside takes its name.
  const racer = spawn(process.execPath, ['-e', `
    const fs = require('fs'); const d = ${JSON.stringify(join(home, 'd'))};
    process.stdout.write('ready');
    for (;;) {
      let n; try { n = fs.readdirSync(d).length; } catch { process.exit(1); }
      if (n < ${FILES}) { fs.renameSync(d, d + '.moved'); fs.symlinkSync(${JSON.stringify(outside)}, d); process.exit(0); }
    }`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const racerExit = new Promise<number | null>((resolve) => racer.on('exit', resolve));
  await new Promise((resolve) => racer.stdout.once('data', resolve));
  // The swap makes this removal fail (the moved directory is new to it); a destroy tries again.
  const first = await removeTree(home).then(() => null, (error: Error) => error.message);
  t.is(await racerExit, 0, 'the racer swapped the directory during the removal');
  t.is((await readdir(outside)).length, FILES, 'nothing outside the home was removed');
  t.log(first ?? 'the removal finished before the swap');
  await removeTree(home);
  t.deepEqual(await readdir(base), ['outside'], 'a second removal takes the rest of the home');
  t.is((await readdir(outside)).length, FILES);
});
