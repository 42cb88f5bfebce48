// Bringing the fleet up and taking it down: the rehearsal's directory (one at a time on a host),
// the leftovers of a run that was killed before its cleanup, and the nodes, started in waves.
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { removeCgroupParent } from '../../test/system/support/host.js';
import { sliversOf, timestampOf } from './fleet-document.js';
import { bridgeExists, createNodeNetwork, leftoverNamespaces, removeBridge, removeNodeNetwork } from './fleet-net.js';
import { cgroupParentOf, consoleTail, prepareNode, startNode, viewNode, type NodeSettings, type RunningNode } from './fleet-nodes.js';
import type { UndoStack } from './undo-stack.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The processes whose command line names `needle` (the daemons of a node directory, say). */
async function processesNaming(needle: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').some((arg) => arg.includes(needle))) found.push(Number(entry));
  }
  return found;
}

/** Removes what a killed run left: its daemons, nginx, namespaces, bridge, cgroups and directory. */
export async function removeLeftovers(dir: string, log: (line: string) => void): Promise<void> {
  const daemons = await processesNaming(join(dir, 'nodes') + '/');
  for (const pid of daemons) process.kill(pid, 'SIGKILL');
  const nginxPid = Number((await readFile(join(dir, 'nginx', 'nginx.pid'), 'utf8').catch(() => '')).trim());
  if (nginxPid > 0 && alive(nginxPid)) process.kill(nginxPid, 'SIGQUIT');
  const namespaces = await leftoverNamespaces();
  for (const id of namespaces) await removeNodeNetwork(id).catch(() => undefined);
  if (await bridgeExists()) await removeBridge();
  let cgroups = 0;
  for (const name of await readdir('/sys/fs/cgroup/cpu').catch(async () => readdir('/sys/fs/cgroup'))) {
    if (!/^nodemgr-fleet-\d+$/.test(name)) continue;
    await removeCgroupParent(name);
    cgroups++;
  }
  await rm(dir, { recursive: true, force: true });
  if (daemons.length + namespaces.length + cgroups > 0) {
    log(`removed the leftovers of an earlier run: ${daemons.length} daemons, ${namespaces.length} namespaces, ${cgroups} cgroup parents`);
  }
}

/**
 * Takes the rehearsal's directory for this process: refused while another live run holds it;
 * what a dead one left is removed first.
 */
export async function takeRehearsalDir(dir: string, undo: UndoStack, log: (line: string) => void): Promise<void> {
  const holder = Number((await readFile(join(dir, 'fleet.pid'), 'utf8').catch(() => '')).trim());
  if (holder > 0 && holder !== process.pid && alive(holder)) {
    throw new Error(`another fleet rehearsal (pid ${holder}) is running with ${dir}; one at a time on a host`);
  }
  await removeLeftovers(dir, log);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await writeFile(join(dir, 'fleet.pid'), `${process.pid}\n`);
  undo.push('the rehearsal directory', () => rm(dir, { recursive: true, force: true }));
}

/** How a node counts as up: the first version in force and its slivers and delegate running. */
async function nodeUp(settings: NodeSettings): Promise<boolean> {
  const view = await viewNode(settings.dir);
  return view?.documentTimestamp === timestampOf(1) && view.running === sliversOf(settings.id).length + 1;
}

/**
 * Starts the nodes `parallel` at a time (each wave waits for its nodes to be up: a hundred Node
 * processes loading at once would only queue on the cores), registering each one's undoing.
 */
export async function startFleet(all: readonly NodeSettings[], parallel: number, undo: UndoStack, log: (line: string) => void): Promise<RunningNode[]> {
  const made: number[] = [];
  const nodes: RunningNode[] = [];
  // Two steps for all the nodes, not three for each: the daemons stop together, then their
  // namespaces and cgroups go (a namespace goes with its veth once no process holds it).
  undo.push('the nodes\' network namespaces and cgroups', async () => {
    const failures: string[] = [];
    for (const id of made.reverse()) {
      await removeCgroupParent(cgroupParentOf(id)).catch((e: Error) => failures.push(`node ${id}'s cgroups: ${e.message}`));
      await removeNodeNetwork(id).catch((e: Error) => failures.push(e.message));
    }
    if (failures.length > 0) throw new Error(failures.join('; '));
  });
  undo.push('the node daemons', () => Promise.all(nodes.map((n) => n.stop())));
  for (let first = 0; first < all.length; first += parallel) {
    const wave = all.slice(first, first + parallel);
    for (const settings of wave) {
      made.push(settings.id);
      await createNodeNetwork(settings.id);
      await prepareNode(settings);
      nodes.push(startNode(settings));
    }
    const deadline = Date.now() + 120_000;
    for (const settings of wave) {
      const node = nodes.find((n) => n.id === settings.id)!;
      while (!(await nodeUp(settings))) {
        const ended = await Promise.race([node.exited.then(() => true), sleep(100).then(() => false)]);
        if (ended || Date.now() > deadline) {
          throw new Error(`node ${settings.id} ${ended ? 'ended' : 'was not up within 120 s'}; its console:\n${await consoleTail(settings.dir)}`);
        }
      }
    }
    if ((first + wave.length) % 20 === 0 || first + wave.length === all.length) log(`  ${first + wave.length} of ${all.length} nodes up`);
  }
  return nodes;
}

/** The OpenSSH key pair of the authority's delegate; the private key's path. */
export async function makeDelegateKey(dir: string): Promise<{ identity: string; publicKey: string }> {
  const identity = join(dir, 'delegate_ed25519');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fleet-authority', '-f', identity]);
  return { identity, publicKey: (await readFile(`${identity}.pub`, 'utf8')).trim() };
}
