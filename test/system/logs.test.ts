// The daemon's log as an operator meets it: JSON lines in the file, a logrotate rename followed by
// SIGUSR1 (every line in exactly one of the two files), and the journald form under systemd. As
// root, with a real daemon process.
import test from 'ava';
import { readFile, readdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isRoot, projectRoot, run, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess, waitFor, type DaemonProcess } from './support/host.js';
import { slicesXml } from './support/slices.js';

// logrotate(8) is looked for once, before any test is declared (a host without it skips that test).
const logrotate = (await run('sh', ['-c', 'command -v logrotate || true'])).stdout.trim();
const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('the daemon log: needs root (a real daemon)', () => undefined);

const cleanups: Array<() => Promise<unknown>> = [];
test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

interface JsonLine { time: string; level: string; message: string; [key: string]: unknown }

async function linesOf(path: string): Promise<string[]> {
  return (await readFile(path, 'utf8').catch(() => '')).split('\n').filter((l) => l !== '');
}

async function node(settings: Record<string, string | number>, env: Record<string, string> = {}) {
  const server = await serveDocument(slicesXml(1000, []));
  const box = await sandbox({ authority_url: server.url, ...settings }, { uids: 10 });
  cleanups.push(() => server.close(), () => box.cleanup());
  const daemon: DaemonProcess = startDaemonProcess(box.config, [], env);
  cleanups.push(() => stopDaemonProcess(daemon, 'SIGKILL'));
  return { box, daemon, file: join(box.dir, 'log', 'nodemgr.log') };
}

serial('a rotated JSON log: lines up to SIGUSR1 in the renamed file, later ones in the new file, none lost or twice', async (t) => {
  const { daemon, file } = await node({ log_format: 'json' });
  const pid = daemon.child.pid!;
  const parsed = async (path: string) => (await linesOf(path)).map((l) => JSON.parse(l) as JsonLine);
  const count = (lines: JsonLine[], message: string) => lines.filter((l) => l.message === message).length;
  await waitFor('the first document applied', async () => count(await parsed(file), 'document applied') > 0).catch((e: unknown) => { t.log(daemon.output()); throw e; });
  for (let i = 1; i <= 3; i++) {
    process.kill(pid, 'SIGHUP');
    await waitFor(`sync request ${i} logged`, async () => count(await parsed(file), 'signal received, syncing now') === i);
  }
  // logrotate renames; until the signal the daemon goes on writing to the renamed file.
  await rename(file, `${file}.1`);
  process.kill(pid, 'SIGHUP');
  await waitFor('a line after the rename, in the renamed file', async () => count(await parsed(`${file}.1`), 'signal received, syncing now') === 4);
  process.kill(pid, 'SIGUSR1');
  await waitFor('the reopened file', async () => count(await parsed(file), 'log file reopened') === 1);
  for (let i = 1; i <= 2; i++) {
    process.kill(pid, 'SIGHUP');
    await waitFor(`sync request ${i} after the reopen`, async () => count(await parsed(file), 'signal received, syncing now') === i);
  }
  t.is(await stopDaemonProcess(daemon, 'SIGTERM'), 0);
  const before = await parsed(`${file}.1`);
  const after = await parsed(file);
  t.is(count(before, 'daemon starting'), 1);
  t.is(count(before, 'signal received, syncing now'), 4);
  t.is(count(before, 'log file reopened'), 0);
  t.is(count(after, 'daemon starting'), 0);
  t.is(count(after, 'signal received, syncing now'), 2);
  t.is(after.at(-1)!.message, 'daemon stopped');
  for (const line of [...before, ...after]) {
    t.regex(line.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    t.true(['error', 'warn', 'info', 'debug'].includes(line.level));
  }
  // The renamed file ends where the new one begins: no line in both, time never going back.
  const raw = [...(await linesOf(`${file}.1`)), ...(await linesOf(file))];
  t.is(new Set(raw).size, raw.length);
  t.true(before.at(-1)!.time <= after[0]!.time);
});

serial('under systemd the console lines carry a syslog priority and no time; the file keeps its timestamps', async (t) => {
  const { daemon, file } = await node({}, { INVOCATION_ID: '0123456789abcdef0123456789abcdef' });
  await waitFor('the first document applied', async () => (await linesOf(file)).some((l) => l.includes(' document applied')));
  t.is(await stopDaemonProcess(daemon, 'SIGTERM'), 0);
  const console = daemon.output().split('\n').filter((l) => l !== '');
  t.true(console.length > 0);
  for (const line of console) t.regex(line, /^<[3467]>[a-z]/, line);
  t.true(console.includes('<6>daemon stopped'));
  t.true(console.some((l) => l.startsWith('<6>document applied')));
  for (const line of await linesOf(file)) t.regex(line, /^\d{4}-\d\d-\d\dT\S+Z (error|warn|info|debug) /);
});

// The shipped etc/logrotate.d/nodemgr, run for real by logrotate(8) on a test daemon's file: only the
// path and the postrotate command (kill -USR1 of the test daemon instead of systemctl) differ.
(isRoot && logrotate ? test.serial : test.skip)('logrotate with the shipped configuration: rotated twice, the old file compressed a day late, every line kept once', async (t) => {
  const { box, daemon, file } = await node({});
  const pid = daemon.child.pid!;
  const shipped = await readFile(join(projectRoot, 'etc', 'logrotate.d', 'nodemgr'), 'utf8');
  const config = shipped
    .replace(/^\/var\/log\/nodemgr\/nodemgr\.log \{$/m, `${file} {`)
    .replace(/^(\s*)systemctl kill .*$/m, `$1kill -USR1 ${pid}`);
  t.not(config, shipped);
  const conf = join(box.dir, 'logrotate.conf');
  await writeFile(conf, config);
  const rotate = async () => {
    // Fails (and so the test) if logrotate exits non-zero.
    await run(logrotate, ['-f', '-s', join(box.dir, 'logrotate.state'), conf]);
  };
  const marks = (lines: string[]) => lines.filter((l) => l.includes(' signal received, syncing now')).length;
  await waitFor('the first document applied', async () => (await linesOf(file)).some((l) => l.includes(' document applied')));
  process.kill(pid, 'SIGHUP');
  await waitFor('a sync request logged', async () => marks(await linesOf(file)) === 1);
  await rotate();
  await waitFor('the reopened file', async () => (await linesOf(file)).some((l) => l.includes(' log file reopened')));
  process.kill(pid, 'SIGHUP');
  await waitFor('a sync request in the new file', async () => marks(await linesOf(file)) === 1);
  await rotate();
  await waitFor('the file reopened again', async () => (await linesOf(file)).some((l) => l.includes(' log file reopened')));
  t.is(await stopDaemonProcess(daemon, 'SIGTERM'), 0);
  const names = (await readdir(join(box.dir, 'log'))).sort();
  t.deepEqual(names, ['nodemgr.log', 'nodemgr.log.1', 'nodemgr.log.2.gz']);
  const oldest = (await run('gzip', ['-dc', `${file}.2.gz`])).stdout.split('\n').filter((l) => l !== '');
  const middle = await linesOf(`${file}.1`);
  const newest = await linesOf(file);
  t.is(marks(oldest), 1);
  t.is(marks(middle), 1);
  t.true(oldest.some((l) => l.includes(' daemon starting')));
  t.true(newest.at(-1)!.includes(' daemon stopped'));
  const all = [...oldest, ...middle, ...newest];
  t.is(new Set(all).size, all.length);
  const times = all.map((l) => l.split(' ')[0]!);
  t.deepEqual(times, [...times].sort());
});
