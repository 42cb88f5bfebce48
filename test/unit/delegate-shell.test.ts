// The delegates' shell installer on files of its own: a copy where delegates can run it, replaced
// only when the built program changes, and one line in the shells file, appended.
import test from 'ava';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installDelegateShell } from '../../src/runtimes/unix/delegate-shell.js';

async function place(t: import('ava').ExecutionContext) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-shell-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await chmod(dir, 0o755);
  const built = join(dir, 'package', 'native', 'build', 'forward_api_calls');
  await mkdir(join(dir, 'package', 'native', 'build'), { recursive: true });
  await writeFile(built, '#!/bin/sh\necho v1\n', { mode: 0o755 });
  const shellsFile = join(dir, 'shells');
  await writeFile(shellsFile, '# /etc/shells: valid login shells\n/bin/sh\n/usr/bin/bash');
  return { dir, built, shellsFile, target: join(dir, 'libexec', 'nodemgr', 'forward_api_calls') };
}

test('the built shell is copied, made executable for all and listed once; a second start changes nothing', async (t) => {
  const { built, shellsFile, target } = await place(t);
  t.like(await installDelegateShell({ target, built, shellsFile }), { installed: true, listed: true });
  t.is(await readFile(target, 'utf8'), '#!/bin/sh\necho v1\n');
  t.is((await stat(target)).mode & 0o777, 0o755);
  // the file had no final newline: the line is not glued to the last shell
  t.is(await readFile(shellsFile, 'utf8'), `# /etc/shells: valid login shells\n/bin/sh\n/usr/bin/bash\n${target}\n`);

  const before = await stat(target);
  t.like(await installDelegateShell({ target, built, shellsFile }), { installed: false, listed: false });
  t.is((await stat(target)).mtimeMs, before.mtimeMs, 'an identical copy is not rewritten');
  t.is((await readFile(shellsFile, 'utf8')).split('\n').filter((l) => l === target).length, 1);
});

test('a changed build replaces the copy', async (t) => {
  const { built, shellsFile, target } = await place(t);
  await installDelegateShell({ target, built, shellsFile });
  await writeFile(built, '#!/bin/sh\necho v2\n');
  t.like(await installDelegateShell({ target, built, shellsFile }), { installed: true, listed: false });
  t.is(await readFile(target, 'utf8'), '#!/bin/sh\necho v2\n');
});

test('the shell used in place is only listed; a missing build is a clear error', async (t) => {
  const { dir, built, shellsFile, target } = await place(t);
  t.like(await installDelegateShell({ target: built, built, shellsFile }), { installed: false, listed: true });
  const missing = join(dir, 'nothing-built');
  await t.throwsAsync(installDelegateShell({ target, built: missing, shellsFile }), { message: new RegExp(`${missing} has not been built: run \`npm run build:native\``) });
});

test('directories that keep delegates out are named', async (t) => {
  const { dir, built, shellsFile } = await place(t);
  const closed = join(dir, 'closed');
  await mkdir(join(closed, 'inner'), { recursive: true });
  await chmod(closed, 0o700);
  const result = await installDelegateShell({ target: join(closed, 'inner', 'forward_api_calls'), built, shellsFile });
  t.deepEqual(result.unreachableBy.filter((d) => d.startsWith(dir)), [closed]);
});
