// The Unix runtime against the real host, as root: real accounts in /etc/passwd, real homes, real
// processes. Every account of a run carries a random prefix and a uid range of its own (leased
// from the tests' allocator), and whatever a test leaves behind is removed in test.after.always.
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { AccountKind } from '../../src/db/types.js';
import { memoryLogger } from '../../src/log.js';
import type { AccountSpec } from '../../src/runtimes/types.js';
import { runCommand } from '../../src/host/exec.js';
import { parseGroup, parsePasswd, parseShadow } from '../../src/host/passwd.js';
import { killProcessesOf, processesOf, readProcess } from '../../src/host/processes.js';
import { createUnixRuntime, type UnixRuntime, type UnixRuntimeOptions } from '../../src/runtimes/unix/runtime.js';
import { isRoot, leaseTestUids, waitFor as waitForCondition, type UidLease } from './support/host.js';

/** The start context of an account without cgroups (these tests run the runtime alone). */
const NO_GROUPS = { cgroupProcFiles: [] };

const prefix = `nmt_${randomBytes(4).toString('hex')}`;
const name = (suffix: string) => `${prefix}_${suffix}`;
// 200 leased uids: the runtime's range is the first 100 (UID_MIN..UID_MAX), and the rest are for
// accounts that must look foreign to it (outside its range) and that no other test may meet.
let lease: UidLease | null = null;
let UID_MIN = 0;
let UID_MAX = 0;
const projectRoot = resolve(import.meta.dirname, '../..');

if (!isRoot) test.skip('unix runtime system tests: need root (real accounts, homes and processes)', () => undefined);
const serial = isRoot ? test.serial : test.skip;

/** The lines of an account file for the named accounts and for any account of this run's prefix. */
async function linesOfAccounts(file: string, names: string[]): Promise<string> {
  const text = await readFile(file, 'utf8');
  return text
    .split('\n')
    .filter((line) => {
      const account = line.split(':', 1)[0]!;
      return names.includes(account) || account.startsWith(`${prefix}_`);
    })
    .join('\n');
}

let base = '';
let options: UnixRuntimeOptions;
const log = memoryLogger();
let runtime: UnixRuntime;

test.before(async () => {
  if (!isRoot) return;
  lease = await leaseTestUids(200, 'test/system/unix-runtime.test.ts');
  UID_MIN = lease.min;
  UID_MAX = lease.min + 99;
  base = await mkdtemp(join(tmpdir(), 'nodemgr-unix-'));
  await chmod(base, 0o755);
  const homeBase = join(base, 'home');
  const runDir = join(base, 'run');
  await mkdir(homeBase, { mode: 0o755 });
  await mkdir(runDir, { mode: 0o755 });
  options = {
    uidMin: UID_MIN,
    uidMax: UID_MAX,
    homeBase,
    sliverShell: '/bin/bash',
    delegateShell: join(base, 'forward_api_calls'), // does not exist, as before native/ is built
    disabledShell: '/usr/sbin/nologin',
    runDir,
  };
  runtime = createUnixRuntime(options, log);
});

test.after.always(async () => {
  if (!isRoot) return;
  for (const entry of parsePasswd(await readFile('/etc/passwd', 'utf8'))) {
    if (!entry.name.startsWith(prefix)) continue;
    if (entry.uid !== 0) await killProcessesOf(entry.uid, entry.gid).catch(() => undefined);
    await runCommand('userdel', ['-r', entry.name]).catch(() => undefined);
    if (entry.home.includes(prefix)) await rm(entry.home, { recursive: true, force: true });
  }
  for (const group of parseGroup(await readFile('/etc/group', 'utf8'))) {
    if (group.name.startsWith(prefix)) await runCommand('groupdel', [group.name]).catch(() => undefined);
  }
  if (base) await rm(base, { recursive: true, force: true });
  await lease?.release();
});

function spec(accountName: string, extra: Partial<AccountSpec> = {}): AccountSpec {
  return { name: accountName, kind: 'sliver', keys: [], initscript: null, enabled: true, rspec: {}, runtime: 'unix', guest: null, ...extra };
}

async function passwdOf(accountName: string) {
  return parsePasswd(await readFile('/etc/passwd', 'utf8')).filter((e) => e.name === accountName);
}
async function shadowOf(accountName: string) {
  return parseShadow(await readFile('/etc/shadow', 'utf8')).find((e) => e.name === accountName) ?? null;
}
async function groupOf(accountName: string) {
  return parseGroup(await readFile('/etc/group', 'utf8')).find((e) => e.name === accountName) ?? null;
}
async function exists(path: string): Promise<boolean> {
  return lstat(path).then(() => true, () => false);
}
/** The runtime acts at once: a check here has 10 s, polled every 50 ms, unless it says otherwise. */
function waitFor<T>(what: string, check: () => Promise<T | null | undefined | false>, timeoutMs = 10_000): Promise<T> {
  return waitForCondition(what, check, { timeoutMs, intervalMs: 50 });
}
async function observed(accountName: string) {
  const host = await runtime.observe({ readOnly: true });
  return host.owned.find((a) => a.name === accountName) ?? null;
}
/** A free uid outside the runtime's range (in the rest of the lease), for accounts that must look foreign. */
async function freeUidOutsideRange(): Promise<number> {
  const used = new Set(parsePasswd(await readFile('/etc/passwd', 'utf8')).map((e) => e.uid));
  for (let uid = UID_MAX + 1; uid <= lease!.max; uid++) if (!used.has(uid)) return uid;
  throw new Error('no free uid');
}
async function sessionOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the ")" that ends the command name: state ppid pgrp session ...
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
}

const keys = [1, 2, 3].map((i) => `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${randomBytes(24).toString('base64')} user${i}@example.org`);

serial('create makes a marked account with a private home, in the range, locked when disabled', async (t) => {
  const a = name('a');
  const started = process.hrtime.bigint();
  const { uid } = await runtime.create(spec(a, { enabled: false }));
  t.log(`one create: ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(1)} ms`);

  const entries = await passwdOf(a);
  t.is(entries.length, 1);
  const entry = entries[0]!;
  t.is(entry.gecos, 'nodemgr sliver');
  t.is(entry.uid, uid);
  t.true(uid >= UID_MIN && uid <= UID_MAX);
  t.true(entry.gid >= UID_MIN && entry.gid <= UID_MAX, 'the private group is in the range too');
  t.is((await groupOf(a))?.gid, entry.gid);
  t.is(entry.home, join(options.homeBase, a));
  t.is(entry.shell, options.disabledShell, 'no login shell before start');
  t.true((await shadowOf(a))!.locked, 'password locked before start');

  const home = await stat(entry.home);
  t.true(home.isDirectory());
  t.is(home.uid, uid);
  t.is(home.gid, entry.gid);
  t.is(home.mode & 0o777, 0o750);

  t.deepEqual(await observed(a), { name: a, kind: 'sliver', runtime: 'unix', uid, loginEnabled: false, started: false });
});

serial('an enabled account is made with its login shell and no usable password, and no keys', async (t) => {
  const e = name('e');
  const { uid } = await runtime.create(spec(e));
  const entry = (await passwdOf(e))[0]!;
  t.is(entry.shell, options.sliverShell);
  t.is((await shadowOf(e))!.hash, '*', 'no password matches "*"');
  t.false(await exists(join(entry.home, '.ssh', 'authorized_keys')), 'no key before configure: nobody can log in yet');
  t.deepEqual(await observed(e), { name: e, kind: 'sliver', runtime: 'unix', uid, loginEnabled: true, started: false });
  await runtime.destroy(e, 'sliver');
});

serial('create of an existing account of ours returns it and makes no second one', async (t) => {
  const a = name('a');
  const first = (await passwdOf(a))[0]!;
  t.deepEqual(await runtime.create(spec(a)), { uid: first.uid });
  t.is((await passwdOf(a)).length, 1);
  // The other kind under the same name is not quietly accepted.
  await t.throwsAsync(runtime.create(spec(a, { kind: 'delegate' })), { message: /is a sliver|a sliver of that name/ });
});

serial('creates running side by side get distinct accounts', async (t) => {
  const names = [1, 2, 3, 4, 5].map((i) => name(`p${i}`));
  const started = process.hrtime.bigint();
  const uids = await Promise.all(names.map((n) => runtime.create(spec(n)).then((r) => r.uid)));
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  t.log(`5 parallel creates: ${ms.toFixed(0)} ms (${(ms / 5).toFixed(1)} ms each)`);
  t.is(new Set(uids).size, 5);
  for (const n of names) t.is((await passwdOf(n)).length, 1);
  const destroyStarted = process.hrtime.bigint();
  for (const n of names) await runtime.destroy(n, 'sliver');
  t.log(`5 destroys: ${(Number(process.hrtime.bigint() - destroyStarted) / 1e6 / 5).toFixed(1)} ms each`);
  for (const n of names) t.deepEqual(await passwdOf(n), []);
});

serial('foreign accounts and invalid names are refused and left untouched', async (t) => {
  const plain = name('fplain'); // in the range, but without the marker
  const outside = name('fout'); // with the marker, but outside the range
  await runCommand('useradd', ['-m', '-d', join(options.homeBase, plain), '-u', String(UID_MIN + 90), '-U', plain]);
  await runCommand('useradd', ['-M', '-c', 'nodemgr sliver', '-u', String(await freeUidOutsideRange()), '-U', outside]);
  // Other test files create accounts concurrently, so compare only the lines this test could touch.
  const touched = (file: string) => linesOfAccounts(file, [plain, outside, 'root']);
  const before = await touched('/etc/passwd');
  const shadowBefore = await touched('/etc/shadow');

  for (const foreign of [plain, outside]) {
    await t.throwsAsync(runtime.create(spec(foreign)), { message: /not managed by nodemgr/ });
    await t.throwsAsync(runtime.configure(spec(foreign, { keys })), { message: /not managed by nodemgr/ });
    await t.throwsAsync(runtime.start(spec(foreign, { initscript: 'touch "$HOME/never"' }), NO_GROUPS), { message: /not managed by nodemgr/ });
    await t.throwsAsync(runtime.stop(foreign, 'sliver'), { message: /not managed by nodemgr/ });
    await t.throwsAsync(runtime.destroy(foreign, 'sliver'), { message: /not managed by nodemgr/ });
  }
  for (const bad of ['root', 'Bad', 'x;rm -rf /', '-rf', 'a'.repeat(40)]) {
    await t.throwsAsync(runtime.create(spec(bad)), { message: /refusing account/ });
    await t.throwsAsync(runtime.destroy(bad, 'sliver'), { message: /refusing account/ });
  }
  t.is(await touched('/etc/passwd'), before);
  t.is(await touched('/etc/shadow'), shadowBefore);
  t.false((await readFile('/etc/passwd', 'utf8')).split('\n').some((line) => /^(Bad|-rf|x;|a{33})/.test(line)));
  t.false(await exists(join(options.homeBase, plain, '.ssh')));

  const host = await runtime.observe();
  t.true(host.foreign.has(plain));
  t.true(host.foreign.has(outside));
  t.true(host.foreign.has('root'));
  t.false(host.owned.some((o) => o.name === plain || o.name === outside));
  t.true(await exists(join(options.homeBase, plain)), 'a home in the range whose uid has an account is kept');
});

serial('configure writes exactly the keys, and rewrites them when they change', async (t) => {
  const a = name('a');
  const entry = (await passwdOf(a))[0]!;
  const sshDir = join(entry.home, '.ssh');
  const file = join(sshDir, 'authorized_keys');

  await runtime.configure(spec(a, { keys: [keys[0]!, keys[1]!] }));
  t.is(await readFile(file, 'utf8'), `${keys[0]}\n${keys[1]}\n`);
  const dirStat = await lstat(sshDir);
  t.true(dirStat.isDirectory());
  t.is(dirStat.uid, entry.uid);
  t.is(dirStat.mode & 0o777, 0o700);
  const fileStat = await lstat(file);
  t.true(fileStat.isFile());
  t.is(fileStat.uid, entry.uid);
  t.is(fileStat.gid, entry.gid);
  t.is(fileStat.mode & 0o777, 0o600);

  await runtime.configure(spec(a, { keys: [keys[1]!, keys[2]!] }));
  t.is(await readFile(file, 'utf8'), `${keys[1]}\n${keys[2]}\n`);
  await runtime.configure(spec(a, { keys: [] }));
  t.is(await readFile(file, 'utf8'), '');
  t.deepEqual((await readdir(sshDir)).sort(), ['authorized_keys'], 'no temp files left in ~/.ssh');

  await t.throwsAsync(runtime.configure(spec(a, { keys: [`${keys[0]}\n${keys[1]}`] })), { message: /line break/ });
  t.is(await readFile(file, 'utf8'), '', 'a refused key changes nothing');
});

serial('configure finishes the home of a create that was killed before it: missing, or an empty one of root\'s', async (t) => {
  // What a kill -9 between the batch's entry and the home leaves; a restart sees the account and
  // goes straight on with configure.
  const k = name('k');
  await runtime.create(spec(k));
  const entry = (await passwdOf(k))[0]!;
  for (const leftover of ['missing', 'root-owned'] as const) {
    await rm(entry.home, { recursive: true, force: true });
    if (leftover === 'root-owned') await mkdir(entry.home, { mode: 0o700 });
    await runtime.configure(spec(k, { keys: [keys[0]!] }));
    const home = await lstat(entry.home);
    t.is(home.uid, entry.uid, `${leftover}: the home is the account's`);
    t.is(home.mode & 0o777, 0o750, `${leftover}: with the home's mode`);
    t.is(await readFile(join(entry.home, '.ssh', 'authorized_keys'), 'utf8'), `${keys[0]}\n`, `${leftover}: keys written`);
  }
  // A home of root's with something in it is not a leftover of ours: configure refuses it.
  await rm(entry.home, { recursive: true, force: true });
  await mkdir(entry.home, { mode: 0o700 });
  await writeFile(join(entry.home, 'somebody-elses'), 'x');
  await t.throwsAsync(runtime.configure(spec(k, { keys: [keys[0]!] })), { message: /belongs to uid 0, not to the account/ });
  t.is(await readFile(join(entry.home, 'somebody-elses'), 'utf8'), 'x', 'nothing of it was touched');
  await rm(entry.home, { recursive: true, force: true });
  await runtime.destroy(k, 'sliver');
});

serial('symlinks planted in the home do not make configure write outside it', async (t) => {
  const a = name('a');
  const entry = (await passwdOf(a))[0]!;
  const outside = join(base, 'outside');
  await mkdir(outside, { mode: 0o755 });
  const victim = join(base, 'victim');
  await writeFile(victim, 'precious\n');

  // ~/.ssh itself a symlink to a directory elsewhere.
  const sshDir = join(entry.home, '.ssh');
  await rm(sshDir, { recursive: true, force: true });
  await symlink(outside, sshDir);
  await chown(sshDir, entry.uid, entry.gid).catch(() => undefined);
  await runtime.configure(spec(a, { keys: [keys[0]!] }));
  t.deepEqual(await readdir(outside), [], 'nothing written through the symlink');
  t.true((await lstat(sshDir)).isDirectory(), '~/.ssh replaced by a real directory');
  t.is(await readFile(join(sshDir, 'authorized_keys'), 'utf8'), `${keys[0]}\n`);

  // authorized_keys a symlink to a file elsewhere.
  await rm(join(sshDir, 'authorized_keys'));
  await symlink(victim, join(sshDir, 'authorized_keys'));
  await runtime.configure(spec(a, { keys: [keys[1]!] }));
  t.is(await readFile(victim, 'utf8'), 'precious\n', 'the symlink target is untouched');
  t.true((await lstat(join(sshDir, 'authorized_keys'))).isFile());
  t.is(await readFile(join(sshDir, 'authorized_keys'), 'utf8'), `${keys[1]}\n`);

  // ~/.ssh a symlink to root's own .ssh would be the attack that matters; any directory stands in for it.
  await rm(sshDir, { recursive: true, force: true });
  await symlink(outside, sshDir);
  await runtime.configure(spec(a, { keys: [keys[2]!] }));
  t.deepEqual(await readdir(outside), []);
  t.true(log.lines.some((l) => l.includes('~/.ssh is a symlink')), 'the replacement is logged');
});

serial('start runs the initscript as the account, detached, and enables login', async (t) => {
  const a = name('a');
  const entry = (await passwdOf(a))[0]!;
  const script = [
    '#!/bin/sh',
    'id -u > "$HOME/uid.txt"',
    'echo "$HOME $USER $LOGNAME $SHELL $(pwd)" > "$HOME/env.txt"',
    'echo run >> "$HOME/runs.txt"',
    'echo hello-from-initscript',
    'sleep 300 &',
    'echo $! > "$HOME/sleep.pid"',
  ].join('\n');
  await runtime.start(spec(a, { initscript: script }), NO_GROUPS);

  const uidText = await waitFor('the initscript to write its uid', () => readFile(join(entry.home, 'uid.txt'), 'utf8').catch(() => null));
  t.is(uidText.trim(), String(entry.uid));
  const pid = Number(await waitFor('sleep.pid', () => readFile(join(entry.home, 'sleep.pid'), 'utf8').catch(() => null)));
  t.is(
    (await readFile(join(entry.home, 'env.txt'), 'utf8')).trim(),
    `${entry.home} ${a} ${a} /bin/bash ${entry.home}`,
  );

  // The script's child lives on as a real process of the account, in a session of its own and
  // without root's supplementary groups.
  const info = await readProcess(pid);
  t.truthy(info);
  t.deepEqual(info!.uids, [entry.uid, entry.uid, entry.uid, entry.uid]);
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  t.regex(status, new RegExp(`^Gid:\\s+${entry.gid}\\s+${entry.gid}\\s+${entry.gid}\\s+${entry.gid}$`, 'm'));
  t.regex(status, /^Groups:\s*$/m);
  t.not(await sessionOf(pid), await sessionOf(process.pid));
  t.true((await processesOf(entry.uid)).includes(pid));

  const logFile = join(entry.home, '.nodemgr-initscript.log');
  await waitFor('the initscript output in its log', async () => (await readFile(logFile, 'utf8').catch(() => '')).includes('hello-from-initscript'));
  t.is((await stat(logFile)).uid, entry.uid);

  const stored = await stat(join(options.runDir, 'initscripts', a));
  t.is(stored.uid, 0, 'the stored script is root-owned: the account cannot change it');
  t.is(stored.gid, entry.gid);
  t.is(stored.mode & 0o777, 0o750);

  t.is((await passwdOf(a))[0]!.shell, '/bin/bash');
  t.is((await shadowOf(a))!.hash, '*');
  t.true((await observed(a))!.loginEnabled);
  t.true((await observed(a))!.started, 'the start is recorded for this boot');
});

serial('start again runs the initscript only when its text changed', async (t) => {
  const a = name('a');
  const entry = (await passwdOf(a))[0]!;
  const runs = () => readFile(join(entry.home, 'runs.txt'), 'utf8').then((s) => s.trim().split('\n').length);
  const same = [
    '#!/bin/sh',
    'id -u > "$HOME/uid.txt"',
    'echo "$HOME $USER $LOGNAME $SHELL $(pwd)" > "$HOME/env.txt"',
    'echo run >> "$HOME/runs.txt"',
    'echo hello-from-initscript',
    'sleep 300 &',
    'echo $! > "$HOME/sleep.pid"',
  ].join('\n');
  await runtime.start(spec(a, { initscript: same }), NO_GROUPS);
  // Not a wait for something to happen: the time an initscript started again by mistake would
  // take to show in runs.txt (its absence cannot be polled for).
  await new Promise((r) => setTimeout(r, 500));
  t.is(await runs(), 1);

  await runtime.start(spec(a, { initscript: '#!/bin/sh\necho run >> "$HOME/runs.txt"\n' }), NO_GROUPS);
  await waitFor('the changed initscript to run', async () => (await runs()) === 2);
  t.is(await runs(), 2, 'the changed initscript ran once');
});

serial('an initscript outlives the process that started it', async (t) => {
  const a = name('a');
  const entry = (await passwdOf(a))[0]!;
  // A separate Node process starts the sliver; then its whole process group is killed, as a
  // crashing or restarted daemon would be.
  const program = `
    import { createUnixRuntime } from ${JSON.stringify(join(projectRoot, 'src/runtimes/unix/runtime.ts'))};
    import { memoryLogger } from ${JSON.stringify(join(projectRoot, 'src/log.ts'))};
    const runtime = createUnixRuntime(JSON.parse(process.env.OPTIONS), memoryLogger());
    await runtime.start(JSON.parse(process.env.SPEC), { cgroupProcFiles: [] });
    process.stdout.write('started\\n');
    setInterval(() => {}, 1000);
  `;
  const script = '#!/bin/sh\nsleep 300 &\necho $! > "$HOME/survivor.pid"\nexec sleep 301\n';
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', program], {
    cwd: projectRoot,
    env: { ...process.env, OPTIONS: JSON.stringify(options), SPEC: JSON.stringify(spec(a, { initscript: script })) },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const exited = new Promise((r) => child.once('exit', r));
  await waitFor(`the helper to start the sliver\n${output}`, async () => output.includes('started'), 30_000);
  process.kill(-child.pid!, 'SIGKILL');
  await exited;

  const pid = Number(await waitFor('survivor.pid', () => readFile(join(entry.home, 'survivor.pid'), 'utf8').catch(() => null)));
  // Not a wait for something to happen: a grace in which a process that the kill took along
  // would be gone (its survival is what is asserted).
  await new Promise((r) => setTimeout(r, 200));
  const info = await readProcess(pid);
  t.truthy(info, 'the initscript’s process is still running');
  t.is(info!.uids[0], entry.uid);
  const commands = await Promise.all(
    (await processesOf(entry.uid)).map((p) => readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')),
  );
  t.true(commands.includes('sleep\u0000301\u0000'), 'the initscript itself (exec sleep 301) is alive too');
});

serial('stop disables login and kills every process of the account, forking loops included', async (t) => {
  const a = name('a');
  const entry = (await passwdOf(a))[0]!;
  // A fork loop whose children fork again, started as the account outside the runtime.
  const forker = spawn('/bin/sh', ['-c', 'while :; do ( sh -c "sleep 5 & sleep 5" & ) ; sleep 0.01; done'], {
    uid: entry.uid,
    gid: entry.gid,
    cwd: entry.home,
    detached: true,
    stdio: 'ignore',
  });
  forker.unref();
  // A chain that forks and exits at once: its pid changes faster than /proc can be listed, so
  // it is never seen by pid. It counts its forks into a file, and gives up by itself after 20 s
  // so that a failure of this test cannot leave it running.
  const beat = join(entry.home, 'chain.beat');
  const chain = spawn('perl', ['-e', `
    my ($file, $end, $n) = ($ARGV[0], time + 20, 0);
    while (time < $end) {
      if (++$n % 50 == 0) { open(my $f, '>', $file) or die; print $f $n; close $f; }
      exit if fork;
    }`, beat], { uid: entry.uid, gid: entry.gid, cwd: entry.home, detached: true, stdio: 'ignore' });
  chain.unref();
  await waitFor('the fork loop to get going', async () => (await processesOf(entry.uid)).length > 20);
  await waitFor('the fork chain to get going', async () => Number(await readFile(beat, 'utf8').catch(() => 0)) > 200);

  await runtime.stop(a, 'sliver');
  t.deepEqual(await processesOf(entry.uid), []);
  // Not waits for something to happen: windows in which an escaped process would show (a new
  // process of the uid, a new beat of the chain); their absence cannot be polled for.
  await new Promise((r) => setTimeout(r, 500));
  t.deepEqual(await processesOf(entry.uid), [], 'nothing escaped and came back');
  const beats = await readFile(beat, 'utf8');
  await new Promise((r) => setTimeout(r, 300));
  t.is(await readFile(beat, 'utf8'), beats, 'the fork-and-exit chain is dead too');
  const killedLine = log.lines.find((l) => l.startsWith('debug account processes killed') && l.includes(`account=${a}`));
  t.log(killedLine);
  t.true(Number(/killed=(\d+)/.exec(killedLine ?? '')?.[1]) > 20, 'the count of killed processes is logged');

  t.is((await passwdOf(a))[0]!.shell, options.disabledShell);
  t.true((await shadowOf(a))!.locked);
  t.false((await observed(a))!.loginEnabled);
  t.false((await observed(a))!.started);

  await runtime.stop(a, 'sliver');
  await runtime.stop(name('never'), 'sliver');
  t.is((await shadowOf(a))!.hash, '!*', 'a second stop does not lock twice');
});

serial('start after stop runs the initscript again', async (t) => {
  const a = name('a');
  const entry = (await passwdOf(a))[0]!;
  await rm(join(entry.home, 'runs.txt'), { force: true });
  await runtime.start(spec(a, { initscript: '#!/bin/sh\necho run >> "$HOME/runs.txt"\n' }), NO_GROUPS);
  await waitFor('the initscript to run after a stop', () => readFile(join(entry.home, 'runs.txt'), 'utf8').catch(() => null));
  t.true((await observed(a))!.loginEnabled);
});

serial('delegates are marked as such and get the delegate shell when started', async (t) => {
  const d = name('d');
  const { uid } = await runtime.create(spec(d, { kind: 'delegate', enabled: false }));
  t.is((await passwdOf(d))[0]!.gecos, 'nodemgr delegate');
  t.deepEqual(await observed(d), { name: d, kind: 'delegate', runtime: 'unix', uid, loginEnabled: false, started: false });
  await runtime.configure(spec(d, { kind: 'delegate', keys: [keys[0]!] }));
  await runtime.start(spec(d, { kind: 'delegate' }), NO_GROUPS);
  t.is((await passwdOf(d))[0]!.shell, options.delegateShell);
  t.true((await observed(d))!.loginEnabled);
  await t.throwsAsync(runtime.start(spec(d, { kind: 'sliver' }), NO_GROUPS), { message: /is a delegate/ });
  await runtime.destroy(d, 'delegate');
  t.deepEqual(await passwdOf(d), []);
});

serial('destroy removes the account, its group, its home, its processes and its run files', async (t) => {
  const a = name('a');
  const entry = (await passwdOf(a))[0]!;
  await runtime.start(spec(a, { initscript: '#!/bin/sh\nexec sleep 300\n' }), NO_GROUPS);
  await waitFor('a process of the account', async () => (await processesOf(entry.uid)).length > 0);

  await runtime.destroy(a, 'sliver');
  t.deepEqual(await passwdOf(a), []);
  t.is(await shadowOf(a), null);
  t.is(await groupOf(a), null);
  t.false(await exists(entry.home));
  t.deepEqual(await processesOf(entry.uid), []);
  t.deepEqual((await readdir(join(options.runDir, 'initscripts'))).filter((f) => f.startsWith(a)), []);
  t.false((await runtime.observe({ readOnly: true })).owned.some((o) => o.name === a));

  await t.notThrowsAsync(runtime.destroy(a, 'sliver'), 'a destroy of an account already gone succeeds');
});

serial('observe removes an orphaned home in the range and leaves every other directory alone', async (t) => {
  const c = name('c');
  const { uid } = await runtime.create(spec(c));
  const home = join(options.homeBase, c);
  await writeFile(join(home, 'data'), 'x');
  await runtime.start(spec(c, { initscript: '#!/bin/sh\n:\n' }), NO_GROUPS);
  // A destroy killed between removing the entry and removing the home: userdel without -r
  // (once the initscript, which only runs ":", has exited).
  await waitFor('the initscript to exit', async () => (await processesOf(uid)).length === 0);
  await runCommand('userdel', [c]);
  t.deepEqual(await passwdOf(c), []);

  const foreignDir = join(options.homeBase, name('nobody'));
  await mkdir(foreignDir);
  await chown(foreignDir, 65534, 65534); // a uid outside the range
  const invalidNamed = join(options.homeBase, 'Not.An.Account');
  await mkdir(invalidNamed);
  await chown(invalidNamed, uid, uid);
  const symlinked = join(options.homeBase, name('link'));
  await symlink(foreignDir, symlinked);
  const keep = [foreignDir, invalidNamed, symlinked, join(options.homeBase, name('fplain'))];

  await runtime.observe({ readOnly: true });
  t.true(await exists(home), 'a read-only observe removes nothing');

  await runtime.observe();
  t.false(await exists(home), 'the orphaned home is gone');
  for (const path of keep) t.true(await exists(path), `${path} is kept`);
  t.is(await readlink(symlinked), foreignDir);
  t.true(log.lines.some((l) => l.startsWith('info orphaned home removed') && l.includes(c)));
  t.deepEqual((await readdir(join(options.runDir, 'initscripts'))).filter((f) => f.startsWith(c)), [], 'run files of the gone account removed');
  await rm(invalidNamed, { recursive: true });
});

serial('create takes over an orphaned home in its way but refuses a foreign directory', async (t) => {
  const e = name('e');
  const home = join(options.homeBase, e);
  await mkdir(home);
  await chown(home, 65534, 65534);
  await writeFile(join(home, 'theirs'), 'not ours');
  await t.throwsAsync(runtime.create(spec(e)), { message: /already exists and is not an orphan/ });
  t.deepEqual(await passwdOf(e), []);
  t.is(await readFile(join(home, 'theirs'), 'utf8'), 'not ours');
  t.is((await stat(home)).uid, 65534);

  await rm(home, { recursive: true });
  await mkdir(home);
  await chown(home, UID_MAX, UID_MAX); // in the range, and no account has that uid
  await writeFile(join(home, 'stale'), 'left by a destroy that was cut short');
  const { uid } = await runtime.create(spec(e));
  t.is((await stat(home)).uid, uid);
  t.false(await exists(join(home, 'stale')), 'the new account does not inherit the orphan\'s files');
  await runtime.destroy(e, 'sliver');
  t.false(await exists(home));
});

serial('nothing of the run is left in the account files', async (t) => {
  for (const n of ['a', 'd', 'c', 'p1', 'p5']) {
    const kind: AccountKind = n === 'd' ? 'delegate' : 'sliver';
    await runtime.destroy(name(n), kind);
  }
  const left = parsePasswd(await readFile('/etc/passwd', 'utf8')).filter(
    (e) => e.name.startsWith(prefix) && e.gecos.startsWith('nodemgr'),
  );
  // Only the foreign accounts made by the test remain, for test.after.always.
  t.deepEqual(left.map((e) => e.name), [name('fout')]);
});
