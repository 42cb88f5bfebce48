// A XenBEE task in a container (<xsdl:Instance runtime="lxc">) for real: the real libvirtd
// (lxc:///system), a busybox root archive from the image cache, the job run in the container's
// namespaces and its files through the container's root, an instance launched as a container.
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import test from 'ava';
import { xsdlJob } from '../support/xsdl.js';
import { cli, run, waitFor } from './support/host.js';
import { fileUri, guestNode, lxcUnavailable, virshOn } from './support/libvirt.js';
import { buildTestRootfs, type TestRootfs } from './support/rootfs.js';

const URI = 'lxc:///system';
const { domainState } = virshOn(URI);
const reason = await lxcUnavailable();
const serial = reason === null ? test.serial : test.serial.skip;
if (reason !== null) test.skip(`lxc task system tests: ${reason}`, () => undefined);

let rootfs: TestRootfs | null = null;
test.before(async () => {
  if (reason === null) rootfs = await buildTestRootfs('nodemgr-ready');
});
test.after.always(async () => {
  await rootfs?.remove();
});

serial('a task in a container stages in, runs in its namespaces, stages out; a container instance is launched and terminated', async (t) => {
  t.timeout(5 * 60_000);
  const n = await guestNode(t, { settings: { task_start_timeout: 60 }, pool: [['52:54:00:4e:4c:41', '192.0.2.61/24'], ['52:54:00:4e:4c:42', '192.0.2.62/24']] });
  n.start();
  await waitFor('the API', async () => (await n.call('Help')).length > 0, 60_000);
  await n.call('AddImage', fileUri(rootfs!.ready), 'data', 'a busybox root', '', 'busybox-root');
  const server = createServer((_req, res) => res.end('inside a container\n'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const target = join(n.box.dir, 'lxc-result.txt');
  const job = join(n.box.dir, 'job.xsdl');
  await writeFile(job, xsdlJob({
    runtime: 'lxc', image: 'busybox-root', executable: '/bin/sh', args: ['-c', 'tr a-z A-Z < in.txt; hostname >&2; exit 4'], output: 'out.txt',
    stageIn: [{ name: 'in.txt', uri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/in.txt` }],
    stageOut: [{ name: 'out.txt', uri: fileUri(target) }],
  }));
  const command = async (...args: string[]) => JSON.parse((await run(process.execPath, [cli, ...args, '--json', '--config', n.box.config])).stdout) as unknown;
  const { ticket } = (await command('task', 'submit', job)) as { ticket: string };
  const done = await waitFor('the container task to end', async () => {
    const [status] = (await command('task', 'status', ticket)) as Array<{ state: string; exit_code: number; reason: string | null; task_id: string }>;
    return ['Finished', 'Failed', 'Terminated'].includes(status!.state) ? status : null;
  }, { timeoutMs: 180_000, intervalMs: 500 });
  t.like(done, { state: 'Finished', exit_code: 4 }, done.reason ?? '');
  t.is(await readFile(target, 'utf8'), 'INSIDE A CONTAINER\n');
  t.is(await domainState(`task.${done.task_id}`), null, 'the container is gone');

  const [instance] = (await command('instance', 'launch', 'busybox-root', '--runtime', 'lxc')) as Array<{ id: string }>;
  await waitFor('the container instance to run', async () =>
    ((await command('instance', 'ls')) as Array<{ id: string; state: string }>).find((r) => r.id === instance!.id)?.state === 'Running:Executing', { timeoutMs: 120_000, intervalMs: 500 });
  t.is(await domainState(`instance.${instance!.id}`), 'running');
  await command('instance', 'terminate', instance!.id);
  t.is(await domainState(`instance.${instance!.id}`), null);
  t.deepEqual(await command('instance', 'ls'), []);
});
