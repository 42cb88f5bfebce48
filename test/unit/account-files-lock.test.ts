// The account files' locks against other processes, in a temporary directory (no root needed): the
// lckpwdf lock is an fcntl lock (Python's fcntl.lockf takes the same kind as glibc's lckpwdf), and
// the per-file locks follow shadow-utils' pid files, stale ones included. Needs the native addon
// (npm run build:native) and python3.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { lockAccountFiles } from '../../src/host/account-files/lock.js';
import { nativeBuildDir } from '../../src/native/peercred.js';

const addonBuilt = existsSync(join(nativeBuildDir(), 'fcntl_lock.node'));
const python = ['/usr/bin/python3', '/bin/python3'].find((p) => existsSync(p));
const run = addonBuilt && python ? test.serial : test.skip;
if (!addonBuilt) test.skip('account file locks: the fcntl addon is not built (npm run build:native)', () => undefined);
if (!python) test.skip('account file locks: python3 is not installed (it holds the other side of the locks)', () => undefined);

// Holds an fcntl write lock (kind "lockf") or a flock lock on the file until its stdin closes.
const HOLDER = `
import fcntl, sys
f = open(sys.argv[1], 'a')
if sys.argv[2] == 'lockf':
    fcntl.lockf(f, fcntl.LOCK_EX)
else:
    fcntl.flock(f, fcntl.LOCK_EX)
print('held', flush=True)
sys.stdin.read()
`;

async function holdLock(file: string, kind: 'lockf' | 'flock'): Promise<{ child: ChildProcess; exited: Promise<unknown> }> {
  const child = spawn(python!, ['-c', HOLDER, file, kind], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  await once(child.stdout!, 'data');
  return { child, exited };
}

/** Whether another process can take the fcntl lock right now (it tries without waiting). */
async function othersCanLock(file: string): Promise<boolean> {
  const child = spawn(python!, ['-c', `import fcntl,sys\nf=open(sys.argv[1],'a')\ntry:\n  fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB)\nexcept OSError:\n  sys.exit(3)`, file]);
  const [code] = await once(child, 'exit');
  return code === 0;
}

let dir = '';
test.beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nodemgr-lock-'));
  for (const f of ['passwd', 'group']) await writeFile(join(dir, f), 'root:x:0:0::/root:/bin/sh\n');
});
test.afterEach.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});
const options = (timeoutMs = 2000) => ({ lockFile: join(dir, '.pwd.lock'), files: [join(dir, 'passwd'), join(dir, 'group')], timeoutMs });

run('while held, the lckpwdf lock and the per-file locks keep other writers out; released, they are gone', async (t) => {
  const lock = await lockAccountFiles(options());
  t.false(await othersCanLock(join(dir, '.pwd.lock')), 'an fcntl lock of another process is refused');
  t.is(await readFile(join(dir, 'passwd.lock'), 'utf8'), String(process.pid), 'the pid file, as shadow-utils writes it');
  t.false(existsSync(join(dir, `passwd.${process.pid}`)), 'the pid file linked to the lock is removed');
  await lock.release();
  t.true(await othersCanLock(join(dir, '.pwd.lock')));
  t.false(existsSync(join(dir, 'passwd.lock')));
  t.false(existsSync(join(dir, 'group.lock')));
});

run('another process fcntl lock is waited for; a flock lock is a different kind and does not hold it up', async (t) => {
  const holder = await holdLock(join(dir, '.pwd.lock'), 'lockf');
  const started = Date.now();
  const waiting = lockAccountFiles(options(5000));
  await new Promise((resolve) => setTimeout(resolve, 300));
  holder.child.stdin!.end();
  const lock = await waiting;
  t.true(Date.now() - started >= 300, 'it waited for the holder');
  await lock.release();
  await holder.exited;

  const flocker = await holdLock(join(dir, '.pwd.lock'), 'flock');
  const second = await lockAccountFiles(options(500));
  t.false(await othersCanLock(join(dir, '.pwd.lock')), 'taken although another process holds a flock lock on the same file');
  await second.release();
  flocker.child.stdin!.end();
  await flocker.exited;
});

run('a per-file lock of a live process is waited for until the deadline, naming it', async (t) => {
  const sleeper = spawn('sleep', ['30']);
  await writeFile(join(dir, 'group.lock'), String(sleeper.pid));
  const error = await t.throwsAsync(lockAccountFiles(options(300)));
  t.regex(error!.message, new RegExp(`group\\.lock \\(pid ${sleeper.pid}\\) is held by another process`));
  t.false(existsSync(join(dir, 'passwd.lock')), 'what was taken while waiting was let go');
  t.true(await othersCanLock(join(dir, '.pwd.lock')));
  sleeper.kill();
});

run('a per-file lock whose process is gone is stale and taken over', async (t) => {
  const gone = spawn('true');
  await once(gone, 'exit'); // added in the same turn as the spawn, so the exit is not missed
  await writeFile(join(dir, 'passwd.lock'), String(gone.pid));
  const lock = await lockAccountFiles(options());
  t.is(await readFile(join(dir, 'passwd.lock'), 'utf8'), String(process.pid));
  await lock.release();
});
