// The fleet's network: one bridge on the host carrying the authority's address, and per node a
// network namespace whose eth0 is one end of a veth pair, the other end on the bridge. Addresses
// come from one /16: the bridge is .0.1, node i is the (i + 1)th address after the network's.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Names and addresses the rehearsal owns: a fixed prefix, so that a crashed run's leftovers are found. */
export const FLEET_NET = {
  bridge: 'nmfleet0',
  prefix: '10.213',
  /** The node namespaces are nmfleet-<id> (under /run/netns), the host ends of the veths nmfv<id>. */
  namespacePrefix: 'nmfleet-',
} as const;

export const MAX_NODES = 65_000;

export function authorityAddress(): string {
  return `${FLEET_NET.prefix}.0.1`;
}

export function nodeAddress(node: number): string {
  if (!Number.isInteger(node) || node < 1 || node > MAX_NODES) throw new Error(`node id ${node} is outside 1..${MAX_NODES}`);
  const index = node + 1;
  return `${FLEET_NET.prefix}.${index >> 8}.${index & 255}`;
}

export function namespaceOf(node: number): string {
  return `${FLEET_NET.namespacePrefix}${node}`;
}

const hostEnd = (node: number) => `nmfv${node}`;

async function ip(...args: string[]): Promise<void> {
  try {
    await run('ip', args, { timeout: 30_000 });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`ip ${args.join(' ')}: ${stderr || (error as Error).message}`);
  }
}

export async function createBridge(): Promise<void> {
  await ip('link', 'add', FLEET_NET.bridge, 'type', 'bridge');
  await ip('addr', 'add', `${authorityAddress()}/16`, 'dev', FLEET_NET.bridge);
  await ip('link', 'set', FLEET_NET.bridge, 'up');
}

export async function removeBridge(): Promise<void> {
  await ip('link', 'del', FLEET_NET.bridge);
}

/** The node's namespace, with lo and eth0 up and a default route through the authority's bridge. */
export async function createNodeNetwork(node: number): Promise<void> {
  const ns = namespaceOf(node);
  await ip('netns', 'add', ns);
  await ip('link', 'add', hostEnd(node), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
  await ip('link', 'set', hostEnd(node), 'master', FLEET_NET.bridge, 'up');
  await ip('-n', ns, 'addr', 'add', `${nodeAddress(node)}/16`, 'dev', 'eth0');
  await ip('-n', ns, 'link', 'set', 'lo', 'up');
  await ip('-n', ns, 'link', 'set', 'eth0', 'up');
  await ip('-n', ns, 'route', 'add', 'default', 'via', authorityAddress());
}

/** Deleting the namespace takes its end of the veth, and with it the host's end. */
export async function removeNodeNetwork(node: number): Promise<void> {
  await ip('netns', 'del', namespaceOf(node));
}

/** The node ids of the namespaces a run (this one or a crashed one) left. */
export async function leftoverNamespaces(): Promise<number[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout.split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name.startsWith(FLEET_NET.namespacePrefix))
    .map((name) => Number(name.slice(FLEET_NET.namespacePrefix.length)))
    .filter((id) => Number.isInteger(id) && id >= 1);
}

export async function bridgeExists(): Promise<boolean> {
  return run('ip', ['link', 'show', FLEET_NET.bridge]).then(() => true, () => false);
}
