// XenBEE's tasks and Condor Cloud's instances for real: a daemon with the real libvirtd (software
// emulation), the test guest (Debian's kernel, a busybox initramfs with QEMU's guest agent) booted
// from the image cache, files staged in from a loopback HTTP server and out to file: targets, the
// command line (`nodemgr task`, `nodemgr instance`) as a user runs it.
import { access, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { xsdlJob, type JobParts } from '../support/xsdl.js';
import { buildTestGuest, type TestGuest } from './support/guest.js';
import { accountPrefix, cli, run, startDaemonProcess, waitFor } from './support/host.js';
import { fileUri, guestNode, libvirtUnavailable, virshOn, type GuestNode } from './support/libvirt.js';

const URI = 'qemu:///system';
const { virsh, domainState } = virshOn(URI);
const reason = await libvirtUnavailable(URI);
const serial = reason === null ? test.serial : test.serial.skip;
if (reason !== null) test.skip(`task system tests: ${reason}`, () => undefined);

const prefix = accountPrefix();
const MACS = ['52:54:00:4e:54:01', '52:54:00:4e:54:02', '52:54:00:4e:54:03', '52:54:00:4e:54:04'];
const IPS = ['192.0.2.41', '192.0.2.42', '192.0.2.43', '192.0.2.44'];
let guest: TestGuest;

test.before(async (t) => {
  t.timeout(10 * 60_000, 'building the test guest (apt-get download of a kernel and the guest agent)');
  if (reason === null) guest = await buildTestGuest();
});

const exists = (path: string) => access(path).then(() => true, () => false);

interface TaskNode extends GuestNode {
  /** `nodemgr task|instance ... --json`, as root; the parsed answer. */
  cli(...args: string[]): Promise<unknown>;
  /** The same, expected to fail: its stderr. */
  refused(...args: string[]): Promise<string>;
  taskDir: string;
}

/** Our task domains left by a failed test: the daemon's own are in its task_dir's guests. */
async function removeTaskDomains(n: GuestNode): Promise<void> {
  const { stdout } = await run('virsh', ['-c', URI, 'list', '--all', '--name']).catch(() => ({ stdout: '' }));
  for (const name of stdout.split('\n').map((l) => l.trim()).filter((l) => /^(task|instance)\.[0-9a-f]{8}$/.test(l))) {
    const xml = await virsh('dumpxml', name).catch(() => '');
    if (!xml.includes(n.box.dir)) continue;
    await run('virsh', ['-c', URI, 'destroy', name]).catch(() => undefined);
    await run('virsh', ['-c', URI, 'undefine', name]).catch(() => undefined);
  }
}

async function taskNode(t: ExecutionContext, settings: Record<string, string | number> = {}): Promise<TaskNode> {
  const n = await guestNode(t, {
    settings: { guest_accel: 'qemu', task_start_timeout: 180, ...settings },
    pool: MACS.map((mac, i) => [mac, `${IPS[i]}/24`] as const),
    beforeCleanup: removeTaskDomains,
  });
  n.start();
  await waitFor('the API', async () => (await n.call('Help')).length > 0, 60_000);
  for (const [file, type, name] of [[guest.kernel, 'kernel', 'test-kernel'], [guest.initrd, 'initrd', 'test-initrd'],
    [guest.agentlessInitrd, 'initrd', 'agentless-initrd'], [guest.disk, 'image', 'test-disk']] as const) {
    await n.call('AddImage', fileUri(file), type, `the test guest's ${name}`, '', name);
  }
  const command = (args: string[]) => run(process.execPath, [cli, ...args, '--json', '--config', n.box.config]);
  // The node itself, extended: its teardown stops whichever daemon it runs by then.
  return Object.assign(n, {
    taskDir: join(n.box.stateDir, 'tasks'),
    cli: async (...args: string[]) => JSON.parse((await command(args)).stdout) as unknown,
    refused: async (...args: string[]) => {
      try {
        await command(args);
      } catch (error) {
        return (error as { stderr: string }).stderr;
      }
      throw new Error(`nodemgr ${args.join(' ')} did not fail`);
    },
  });
}

interface Status {
  task_id: string;
  ticket?: string;
  state: string;
  times: Record<string, string>;
  exit_code: number | null;
  signal: string | null;
  reason: string | null;
  address: string | null;
  vnc: string | null;
  owner: string;
}

/** Submits a job booting the test guest; its ticket. */
async function submit(t: ExecutionContext, n: TaskNode, parts: JobParts, initrd = 'test-initrd'): Promise<string> {
  const file = join(n.box.dir, `job-${Math.random().toString(16).slice(2)}.xsdl`);
  await writeFile(file, xsdlJob({ kernel: 'test-kernel', initrd, ...parts }));
  const answer = (await n.cli('task', 'submit', file)) as Status;
  t.is(answer.owner, 'root');
  return answer.ticket!;
}

const statusOf = async (n: TaskNode, ticket: string) => ((await n.cli('task', 'status', ticket)) as Status[])[0]!;

async function waitForState(n: TaskNode, ticket: string, states: readonly string[], timeoutMs = 300_000): Promise<Status> {
  return waitFor(`task in ${states.join(' or ')}`, async () => {
    const status = await statusOf(n, ticket);
    return states.includes(status.state) ? status : null;
  }, { timeoutMs, intervalMs: 500 });
}

const DONE = ['Finished', 'Failed', 'Terminated'];

/** Nothing of the task is left: no domain, no guest files, no lease. */
async function nothingLeft(t: ExecutionContext, n: TaskNode, status: Status): Promise<void> {
  t.is(await domainState(`task.${status.task_id}`), null, 'no domain');
  t.deepEqual(await readdir(join(n.taskDir, 'guests')).then((names) => names.filter((x) => x.endsWith(status.task_id)), () => []), [], 'no guest files');
  t.false(Object.values((await n.db()).addresses).some((l) => l.sliver.endsWith(status.task_id)), 'no lease');
}

async function serve(t: ExecutionContext, body: string, stall = false): Promise<string> {
  const server: Server = createServer((req, res) => {
    if (stall) {
      res.writeHead(200, { 'content-length': String(1 << 30) });
      res.write('x'.repeat(1 << 16));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/input.txt`;
}

serial('a task stages in over HTTP, runs in its guest, stages out to a file; exit 3 and a signal are reported', async (t) => {
  t.timeout(20 * 60_000, 'three guests booted under software emulation');
  const n = await taskNode(t);
  const input = await serve(t, 'the quick brown fox\n');
  const target = join(n.box.dir, 'result.txt');
  const started = Date.now();
  const ticket = await submit(t, n, {
    executable: '/bin/sh', args: ['-c', 'tr a-z A-Z < in.txt; echo "$GREETING" >&2'], output: 'out.txt', env: { GREETING: 'hello' },
    stageIn: [{ name: 'in.txt', uri: input }], stageOut: [{ name: 'out.txt', uri: fileUri(target) }],
  });
  const three = await submit(t, n, { executable: '/bin/sh', args: ['-c', 'exit 3'] });
  const killed = await submit(t, n, { executable: '/bin/sh', args: ['-c', 'kill -9 $$'] });

  const running = await waitForState(n, ticket, ['Running:Executing', ...DONE]);
  if (running.state === 'Running:Executing') {
    t.true(IPS.includes(running.address!), `address ${running.address}`);
    t.regex(running.vnc!, /^127\.0\.0\.1:\d+$/);
  }
  const done = await waitForState(n, ticket, DONE);
  t.log(`submit to Finished: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  t.is(done.state, 'Finished', done.reason ?? '');
  t.is(done.exit_code, 0);
  t.is(await readFile(target, 'utf8'), 'THE QUICK BROWN FOX\n');
  for (const time of ['submit', 'confirm', 'stage-in-start', 'instance-start', 'execution-start', 'execution-done', 'instance-stop', 'stage-out-start', 'finished']) {
    t.truthy(done.times[time], `${time} is stamped`);
  }
  t.like(await waitForState(n, three, DONE), { state: 'Finished', exit_code: 3, signal: null });
  t.like(await waitForState(n, killed, DONE), { state: 'Finished', exit_code: null, signal: 'SIGKILL' });
  await nothingLeft(t, n, done);

  // The output stays in the spool until the owner removes the task.
  t.true(await exists(join(n.taskDir, 'spool', done.task_id, 'out', '0')));
  const removed = (await n.cli('task', 'status', ticket, '--remove')) as Status[];
  t.is(removed[0]!.state, 'Finished');
  t.false(await exists(join(n.taskDir, 'spool', done.task_id)));
  t.regex(await n.refused('task', 'status', ticket), /no ticket .* on this node \(fault 103\)/);
});

serial('a guest without the agent fails within the start timeout and leaves nothing', async (t) => {
  t.timeout(10 * 60_000, 'a boot under software emulation');
  const n = await taskNode(t, { task_start_timeout: 20 });
  const ticket = await submit(t, n, { executable: '/bin/true' }, 'agentless-initrd');
  const failed = await waitForState(n, ticket, DONE);
  t.like(failed, { state: 'Failed', reason: 'instance agent did not answer within 20 s' });
  t.truthy(failed.times['instance-stop'], 'through Running:Instance-Stopping');
  await nothingLeft(t, n, failed);
});

serial('terminate in Running:Stage-In and in Running:Executing ends the task Terminated, leaving nothing', async (t) => {
  t.timeout(10 * 60_000, 'a boot under software emulation');
  const n = await taskNode(t);
  const stalled = await serve(t, '', true);
  const staging = await submit(t, n, { executable: '/bin/true', stageIn: [{ name: 'big', uri: stalled }] });
  await waitForState(n, staging, ['Running:Stage-In']);
  await n.cli('task', 'terminate', staging, '--reason', 'not needed any more');
  const ended = await waitForState(n, staging, DONE, 60_000);
  t.like(ended, { state: 'Terminated', reason: 'not needed any more' });
  t.deepEqual(await readdir(join(n.taskDir, 'spool', ended.task_id, 'in')).catch(() => []), [], 'the download is gone');

  const sleeper = await submit(t, n, { executable: '/bin/sleep', args: ['600'] });
  await waitForState(n, sleeper, ['Running:Executing']);
  await n.cli('task', 'terminate', sleeper);
  const stopped = await waitForState(n, sleeper, DONE, 120_000);
  t.like(stopped, { state: 'Terminated', reason: 'terminated by root' });
  await nothingLeft(t, n, stopped);
});

serial('kill -9 of the daemon while a job runs: after a restart the task still finishes', async (t) => {
  t.timeout(10 * 60_000, 'a boot under software emulation');
  const n = await taskNode(t);
  const target = join(n.box.dir, 'after-restart.txt');
  const ticket = await submit(t, n, {
    executable: '/bin/sh', args: ['-c', 'sleep 20; echo survived'], output: 'out.txt', stageOut: [{ name: 'out.txt', uri: fileUri(target) }],
  });
  await waitForState(n, ticket, ['Running:Executing']);
  // Killed once the job's pid is on record: before that, a restart fails the task "interrupted by a
  // restart" (the job may have started; it is never started twice).
  await waitFor('the job to be recorded as started', async () => Object.values((await n.db()).tasks).some((task) => task.job_pid !== null), 60_000);
  n.daemon!.child.kill('SIGKILL');
  await n.daemon!.exited;
  n.daemon = startDaemonProcess(n.box.config);
  const done = await waitForState(n, ticket, DONE);
  t.like(done, { state: 'Finished', exit_code: 0 });
  t.is(await readFile(target, 'utf8'), 'survived\n');
  await nothingLeft(t, n, done);
});

interface InstanceRow {
  id: string;
  owner: string;
  image: string;
  size: string;
  state: string;
  address: string | null;
  vnc: string | null;
}

serial('instances: three launched with addresses and VNC ports, one powered off from inside goes, the rest terminated; too many are refused', async (t) => {
  t.timeout(15 * 60_000, 'three boots under software emulation');
  const n = await taskNode(t);
  const keyFile = join(n.box.dir, 'id.pub');
  const key = `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd0ZXN0a2V5Zm9ybm9kZW1ncmluc3RhbmNlc3Rlc3Q= ${prefix}@test`;
  await writeFile(keyFile, `${key}\n`);
  const launched = (await n.cli('instance', 'launch', 'test-disk', '--kernel', 'test-kernel', '--initrd', 'test-initrd', '--count', '3', '--key', keyFile)) as InstanceRow[];
  t.is(launched.length, 3);
  const rows = await waitFor('three running instances', async () => {
    const list = (await n.cli('instance', 'ls')) as InstanceRow[];
    return list.length === 3 && list.every((r) => r.state === 'Running:Executing') ? list : null;
  }, { timeoutMs: 600_000, intervalMs: 1000 });
  t.deepEqual(new Set(rows.map((r) => r.address)).size, 3, 'each its own address');
  t.true(rows.every((r) => IPS.includes(r.address!) && /^127\.0\.0\.1:\d+$/.test(r.vnc!) && r.owner === 'root' && r.size === 'small'));
  const table = (await run(process.execPath, [cli, 'instance', 'ls', '--config', n.box.config])).stdout;
  t.regex(table, /^ID\s+OWNER\s+IMAGE\s+SIZE\s+STATE\s+ADDRESS\s+VNC\s+AGE$/m);
  // The capacity budget in nodemgr status: what the three hold, each on a line of its own.
  const status = (await run(process.execPath, [cli, 'status', '--config', n.box.config])).stdout;
  t.regex(status, /^capacity: \d+ vCPU \/ [\d.]+ \w+ in all, 3 vCPU \/ 1\.5 GiB used, \d+ vCPU \/ [\d.]+ \w+ free$/m);
  for (const r of rows) t.regex(status, new RegExp(`^  instance ${r.id}\\s+1 vCPU / 512 MiB$`, 'm'));
  t.regex(status, /^CACHED_IMAGES = "agentless-initrd,test-disk,test-initrd,test-kernel"$/m);

  // The key is in the guest, put there through its agent.
  const [first, ...others] = rows;
  const domain = `instance.${first!.id}`;
  const exec = JSON.parse(await virsh('qemu-agent-command', domain, JSON.stringify({
    execute: 'guest-exec', arguments: { path: '/bin/cat', arg: ['/root/.ssh/authorized_keys'], 'capture-output': true },
  }))) as { return: { pid: number } };
  const output = await waitFor('cat to end', async () => {
    const status = JSON.parse(await virsh('qemu-agent-command', domain, JSON.stringify({ execute: 'guest-exec-status', arguments: { pid: exec.return.pid } }))) as { return: { exited: boolean; 'out-data'?: string } };
    return status.return.exited ? Buffer.from(status.return['out-data'] ?? '', 'base64').toString() : null;
  }, 30_000);
  t.is(output, `${key}\n`);

  // Powered off from inside: it ends, and its disk goes with it.
  await virsh('qemu-agent-command', domain, JSON.stringify({ execute: 'guest-exec', arguments: { path: '/bin/poweroff', arg: ['-f'] } })).catch(() => '');
  await waitFor('the powered-off instance to end', async () => {
    const list = (await n.cli('instance', 'ls')) as InstanceRow[];
    return list.find((r) => r.id === first!.id)?.state === 'Finished';
  }, 120_000);
  t.is(await domainState(domain), null);
  t.false(await exists(join(n.taskDir, 'guests', domain)), 'its overlay is removed');

  // Too many at once: refused whole, with the numbers.
  t.regex(await n.refused('instance', 'launch', 'test-disk', '--kernel', 'test-kernel', '--count', '100'),
    /does not fit on this node: needs 100 vCPU \/ 50 GiB, free \d+ vCPU \/ [\d.]+ \w+ \(of \d+ vCPU .*\) \(fault 105\)/);

  const ended = (await n.cli('instance', 'terminate', ...others.map((r) => r.id))) as InstanceRow[];
  t.is(ended.length, 2);
  for (const r of others) t.is(await domainState(`instance.${r.id}`), null);
  t.deepEqual(((await n.cli('instance', 'ls')) as InstanceRow[]).map((r) => r.id), [first!.id]);
  t.deepEqual(Object.values((await n.db()).addresses).filter((l) => l.sliver.startsWith('instance.')), [], 'every lease released');
});
