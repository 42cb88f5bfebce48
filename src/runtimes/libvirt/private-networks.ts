// Private networks of the node's own making: an isolated libvirt network per virtual cluster (no
// forwarding, no address of the host's on it, so its nodes reach each other and nothing else).
// Through virsh, as the N-API binding has no network calls. Each network is named with a prefix
// of ours and known by the record that made it; nodemgr never touches a network it did not name.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandError, runCommand } from '../../host/exec.js';

/** Every network nodemgr makes is named with this prefix. */
export const PRIVATE_NETWORK_PREFIX = 'nodemgr-';

export interface PrivateNetwork {
  /** The libvirt network's name: PRIVATE_NETWORK_PREFIX and the owner's id. */
  readonly name: string;
  /** The host's bridge device: 1 to 15 characters. */
  readonly bridge: string;
  readonly mtu: number;
}

export interface PrivateNetworks {
  /** Defines and starts it; one that exists already (an earlier attempt's, made from the same record) is started if need be. */
  create(network: PrivateNetwork): Promise<void>;
  /** Stops and removes it; one that is not there is no error. */
  remove(name: string): Promise<void>;
  /** The names of the networks of ours that exist. */
  list(): Promise<string[]>;
}

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const BRIDGE = /^[A-Za-z0-9_.-]{1,15}$/;

/** The network's libvirt XML. Pure. */
export function privateNetworkXml(network: PrivateNetwork): string {
  if (!network.name.startsWith(PRIVATE_NETWORK_PREFIX) || !NAME.test(network.name)) throw new Error(`network name "${network.name}" is not one of ours`);
  if (!BRIDGE.test(network.bridge)) throw new Error(`bridge "${network.bridge}" must be 1 to 15 of [A-Za-z0-9_.-]`);
  if (!Number.isInteger(network.mtu) || network.mtu < 576 || network.mtu > 9216) throw new Error(`mtu ${network.mtu} must be from 576 to 9216`);
  // No <forward>: isolated; no <ip>: the host has no address on it and serves no DHCP.
  return `<network>\n  <name>${network.name}</name>\n  <bridge name="${network.bridge}" stp="off" delay="0"/>\n  <mtu size="${network.mtu}"/>\n</network>\n`;
}

export function privateNetworks(uri: string): PrivateNetworks {
  const virsh = (...args: string[]) => runCommand('virsh', ['-q', '-c', uri, ...args], { timeoutMs: 60_000 });
  const names = async (...flags: string[]) => (await virsh('net-list', ...flags, '--name')).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const missing = (error: unknown) => error instanceof CommandError && /not found|no network with matching name/i.test(error.message);
  const define = async (network: PrivateNetwork) => {
    const dir = await mkdtemp(join(tmpdir(), 'nodemgr-net-'));
    try {
      const file = join(dir, 'network.xml');
      await writeFile(file, privateNetworkXml(network));
      await virsh('net-define', file);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
  return {
    async create(network) {
      if (!(await names('--all')).includes(network.name)) await define(network);
      if (!(await names()).includes(network.name)) await virsh('net-start', network.name);
    },
    async remove(name) {
      if (!name.startsWith(PRIVATE_NETWORK_PREFIX)) throw new Error(`network "${name}" is not one of ours`);
      await virsh('net-destroy', name).catch((error: unknown) => {
        if (!missing(error) && !/not active/i.test((error as Error).message)) throw error;
      });
      await virsh('net-undefine', name).catch((error: unknown) => {
        if (!missing(error)) throw error;
      });
    },
    list: async () => (await names('--all')).filter((name) => name.startsWith(PRIVATE_NETWORK_PREFIX)),
  };
}
