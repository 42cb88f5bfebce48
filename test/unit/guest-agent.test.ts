// The guest agent's pure parts: what a request may hold, how libvirt's failures read, how a
// container's program is started and into which groups, and paths resolved inside a root.
import test from 'ava';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentError, execRequestProblem, killRequest } from '../../src/runtimes/libvirt/guest-agent.js';
import { cgroupProcsFiles } from '../../src/runtimes/libvirt/lxc-agent.js';
import { keeperCommand } from '../../src/runtimes/libvirt/lxc-exec-keeper.js';
import { resolveInRoot } from '../../src/runtimes/libvirt/lxc-guest-paths.js';
import { agentFailure } from '../../src/runtimes/libvirt/qemu-agent.js';

test('a request runs an absolute path with NAME=value entries only', (t) => {
  t.is(execRequestProblem({ path: '/bin/sh', args: ['-c', 'x'], env: ['A=1', 'B='] }), null);
  t.regex(execRequestProblem({ path: 'sh', args: [], env: [] })!, /not an absolute path/);
  t.regex(execRequestProblem({ path: '/bin/sh', args: ['a\0b'], env: [] })!, /NUL/);
  t.regex(execRequestProblem({ path: '/bin/sh', args: [], env: ['=x'] })!, /not NAME=value/);
  t.regex(execRequestProblem({ path: '/bin/sh', args: [], env: ['PATH'] })!, /not NAME=value/);
  t.deepEqual(killRequest(42), { path: '/bin/kill', args: ['-KILL', '42'], env: [] });
});

test('what libvirt says of a failed agent command, without virsh\'s prefixes', (t) => {
  t.is(agentFailure("error: internal error: unable to execute QEMU agent command 'guest-exec': Guest agent command failed, error was 'Failed to execute child process \u201c/x\u201d (No such file or directory)'\n"),
    'Failed to execute child process \u201c/x\u201d (No such file or directory)');
  t.is(agentFailure("error: internal error: unable to execute QEMU agent command 'guest-exec-status': Invalid parameter 'pid'\n"), "Invalid parameter 'pid'");
  t.is(agentFailure('error: Guest agent is not responding: QEMU guest agent is not connected\n'), 'Guest agent is not responding: QEMU guest agent is not connected');
});

test('a container\'s program joins the groups of its init, then its namespaces, with exactly its environment', (t) => {
  const mountinfo = [
    '30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory',
    '31 25 0:27 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu',
    '32 25 0:28 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw',
    '33 25 0:29 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids',
  ].join('\n');
  const procCgroup = '4:memory:/machine/lxc-1-c.libvirt-lxc\n1:cpu:/machine/lxc-1-c.libvirt-lxc\n8:pids:/\n0::/\n';
  t.deepEqual(cgroupProcsFiles(procCgroup, mountinfo), [
    '/sys/fs/cgroup/memory/machine/lxc-1-c.libvirt-lxc/cgroup.procs',
    '/sys/fs/cgroup/cpu/machine/lxc-1-c.libvirt-lxc/cgroup.procs',
  ]);
  const args = keeperCommand({ init: 77, cgroupProcs: ['/g/cgroup.procs'], path: '/bin/job', args: ['-x'], env: ['A=1'], recordsDir: '/r' });
  t.deepEqual(args.slice(0, 4), ['--target', '77', '--pid', '--']);
  const envAt = args.indexOf('/usr/bin/env');
  t.deepEqual(args.slice(envAt, envAt + 5), ['/usr/bin/env', '-i', '--', 'A=1', '/usr/bin/nsenter']);
  t.deepEqual(args.slice(-3), ['--', '/bin/job', '-x']);
  t.false(args.slice(envAt).includes('--pid'), 'the pid namespace is entered once, by the outer nsenter');
});

test('paths inside a container\'s root: links followed as the container sees them, never out of it', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'nodemgr-root-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await mkdir(join(root, 'etc'));
  await mkdir(join(root, 'tmp'));
  await writeFile(join(root, 'etc', 'hostname'), 'c\n');
  await symlink('/etc', join(root, 'tmp', 'abs'));
  await symlink('../../../../..', join(root, 'tmp', 'up'));
  await symlink('loop', join(root, 'tmp', 'loop'));
  await symlink('hostname', join(root, 'etc', 'name'));
  const resolve = (path: string, followLast = true, makeParents = false) => resolveInRoot('c', root, path, { followLast, makeParents });
  t.is(await resolve('/tmp/abs/hostname'), join(root, 'etc', 'hostname'), 'an absolute link from the container\'s root');
  t.is(await resolve('/etc/name'), join(root, 'etc', 'hostname'));
  t.is(await resolve('/etc/name', false), join(root, 'etc', 'name'), 'the link itself, to be replaced');
  t.is(await resolve('/tmp/../etc/./hostname'), join(root, 'etc', 'hostname'));
  await t.throwsAsync(resolve('/tmp/up/etc/passwd'), { instanceOf: AgentError, message: /above the container's root/ });
  await t.throwsAsync(resolve('/../etc/passwd'), { instanceOf: AgentError, message: /above the container's root/ });
  await t.throwsAsync(resolve('/tmp/loop/x'), { instanceOf: AgentError, message: /too many links/ });
  await t.throwsAsync(resolve('/no/such/file'), { instanceOf: AgentError, message: /does not exist/ });
  await t.throwsAsync(resolve('/etc/hostname/x'), { instanceOf: AgentError, message: /not a directory/ });
  t.is(await resolve('/new/dirs/file', false, true), join(root, 'new', 'dirs', 'file'), 'parents made on the way');
});
