// How the container agent finds a container's init: from libvirt's state of the running container,
// and, when libvirt never learnt the init's pid (its controller's event lost under load: the domain
// runs, the state has no <init/>), as the child of the container's controller. Real processes in a
// pid namespace of their own (`unshare`), standing in for libvirt_lxc and the container's init.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { containerInit } from '../../src/runtimes/libvirt/lxc-agent.js';

const reason = process.getuid?.() !== 0 ? 'needs root (a pid namespace)' : null;
const serial = reason === null ? test.serial : test.serial.skip;
if (reason !== null) test.skip(`lxc init lookup: ${reason}`, () => undefined);

/** A stand-in controller: `unshare` with the container's name in its arguments, and its child, pid 1 of a new namespace. */
async function controllerOf(t: import('ava').ExecutionContext, name: string): Promise<{ controller: number; init: number }> {
  const child: ChildProcess = spawn('unshare', ['--pid', '--fork', '--kill-child', '--', 'sh', '-c', 'exec sleep 300', '--name', name], { stdio: 'ignore' });
  t.teardown(() => void child.kill('SIGKILL'));
  const controller = child.pid!;
  for (let i = 0; i < 100; i++) {
    const children = await readFile(`/proc/${controller}/task/${controller}/children`, 'latin1').catch(() => '');
    const init = Number(children.trim().split(' ')[0]);
    if (init > 0 && /^NSpid:.*\s1$/m.test(await readFile(`/proc/${init}/status`, 'utf8').catch(() => ''))) return { controller, init };
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error('the stand-in container did not start');
}

const stateFile = (controller: number, init: number | null) =>
  `<domstatus state='running' reason='booted' pid='${controller}'>\n${init === null ? '' : `  <init pid='${init}'/>\n`}  <domain type='lxc' id='${controller}'/>\n</domstatus>\n`;

serial('the init is the one libvirt recorded, or the controller\'s child when it recorded none; never another container\'s', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-lxc-init-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { controller, init } = await controllerOf(t, 'ct.one');
  await writeFile(join(dir, 'ct.one.xml'), stateFile(controller, init));
  t.is(await containerInit('ct.one', dir), init, 'as libvirt recorded it');
  await writeFile(join(dir, 'ct.one.xml'), stateFile(controller, null));
  t.is(await containerInit('ct.one', dir), init, 'libvirt missed it: the controller\'s child');
  await writeFile(join(dir, 'ct.one.xml'), stateFile(controller, controller));
  t.is(await containerInit('ct.one', dir), init, 'a recorded pid that is no namespace\'s init is not taken');
  // A state file naming a controller of another container (a reused pid) gives nothing.
  await writeFile(join(dir, 'ct.two.xml'), stateFile(controller, null));
  t.is(await containerInit('ct.two', dir), null);
  t.is(await containerInit('ct.none', dir), null, 'no state: not running');
});
