// `nodemgr vc …`: pragma_boot's commands for virtual clusters, through the daemon's API as the
// calling user. As pragma's: 0 on success, 1 with one `Error: …` line on a refused or failed
// request, 2 on a usage error.
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../config/config.js';
import { describeError } from '../util/errors.js';
import { ApiCallFault, callApi, CommandUsageError, parseCommandLine } from './api-client.js';
import { formatColumns } from './tasks.js';

export const VC_USAGE = `usage: nodemgr vc <command> [options]

commands:
  repository                        the images of the node's cluster repository
  boot IMAGE NUM_CPUS [--name NAME] [--key FILE] [--mem FE:COMPUTE]
                                    boot a frontend and computes of NUM_CPUS vCPUs together
                                    (0: a frontend alone); prints the cluster's name.
                                    --key: the ssh public key for vc-out.xml (default
                                    ~/.ssh/id_ed25519.pub, else ~/.ssh/id_rsa.pub);
                                    --mem: MiB of every node, or of the frontend and of each compute
  list [CLUSTER]                    each cluster: image, owner, nodes, vCPUs, state, addresses
  shutdown CLUSTER                  stop every node (ACPI, then power off)
  clean CLUSTER                     remove a shut-down cluster: domains, disks, network, addresses

options: --json (what the API answered), --config FILE
`;

const VcUsageError = CommandUsageError;

function parse(argv: string[]) {
  return parseCommandLine(argv, {
    config: { type: 'string' }, json: { type: 'boolean', default: false }, name: { type: 'string' }, key: { type: 'string' },
    mem: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false },
  });
}

async function defaultKey(): Promise<string> {
  for (const file of ['id_ed25519.pub', 'id_rsa.pub']) {
    const text = await readFile(join(homedir(), '.ssh', file), 'utf8').catch(() => null);
    if (text !== null) return text.trim();
  }
  throw new Error('no ssh public key given (--key FILE) and none in ~/.ssh (id_ed25519.pub, id_rsa.pub)');
}

interface Node { name: string; role: string; vcpus: number; private_ip: string; public_ip: string | null; running: boolean }
interface Cluster { name: string; image: string; owner: string; state: string; vcpus: number; nodes: Node[]; reason: string | null }

export function formatClusters(clusters: readonly Cluster[]): string {
  if (clusters.length === 0) return 'no clusters';
  return formatColumns(['CLUSTER', 'IMAGE', 'OWNER', 'NODE', 'VCPUS', 'STATE', 'ADDRESSES'], clusters.flatMap((c) => [
    [c.name, c.image, c.owner, '-', String(c.vcpus), c.state, '-'],
    ...c.nodes.map((n) => ['', '', '', n.name, String(n.vcpus), n.running ? 'running' : 'off', [n.private_ip, n.public_ip].filter(Boolean).join(' ')]),
  ]));
}

async function command(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv);
  const [, sub, ...rest] = positionals;
  if (values.help || sub === undefined || sub === 'help') {
    process.stdout.write(VC_USAGE);
    return sub === undefined && !values.help ? 2 : 0;
  }
  const arity = (n: number, what: string) => {
    if (rest.length !== n) throw new VcUsageError(rest.length < n ? `vc ${sub} needs ${what}` : `unexpected argument "${rest[n]}"`);
  };
  const config = await loadConfig(values.config ?? null);
  const print = (answer: unknown, text: () => string) => process.stdout.write(`${values.json ? JSON.stringify(answer, null, 2) : text()}\n`);
  switch (sub) {
    case 'repository': {
      arity(0, '');
      const images = (await callApi(config, 'VcRepository', [])) as Array<{ name: string; description: string }>;
      print(images, () => (images.length === 0 ? 'no images' : formatColumns(['IMAGE', 'DESCRIPTION'], images.map((i) => [i.name, i.description]))));
      return 0;
    }
    case 'boot': {
      arity(2, 'IMAGE and NUM_CPUS');
      const cpus = Number(rest[1]);
      if (!/^\d+$/.test(rest[1]!)) throw new VcUsageError(`NUM_CPUS must be a whole number >= 0, got "${rest[1]}"`);
      const key = values.key === undefined ? await defaultKey() : (await readFile(values.key, 'utf8')).trim();
      const options = { key, ...(values.name === undefined ? {} : { name: values.name }), ...(values.mem === undefined ? {} : { mem: values.mem }) };
      const cluster = (await callApi(config, 'VcBoot', [rest[0], cpus, options], null)) as Cluster;
      print(cluster, () => cluster.name);
      return 0;
    }
    case 'list': {
      if (rest.length > 1) throw new VcUsageError(`unexpected argument "${rest[1]}"`);
      const clusters = (await callApi(config, 'VcList', rest.length === 1 ? [rest[0]] : [])) as Cluster[];
      print(clusters, () => formatClusters(clusters));
      return 0;
    }
    case 'shutdown':
    case 'clean': {
      arity(1, 'a CLUSTER name');
      const cluster = (await callApi(config, sub === 'shutdown' ? 'VcShutdown' : 'VcClean', [rest[0]], null)) as Cluster;
      print(cluster, () => `${cluster.name}: ${sub === 'shutdown' ? 'shut down' : 'removed'}`);
      return 0;
    }
    default:
      throw new VcUsageError(`unknown vc command "${sub}"`);
  }
}

/** Runs `nodemgr [--config FILE] vc ...`. */
export async function runVc(argv: string[]): Promise<number> {
  try {
    return await command(argv);
  } catch (error) {
    if (error instanceof VcUsageError) {
      process.stderr.write(`nodemgr: ${error.message}\n\n${VC_USAGE}`);
      return 2;
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`Error: configuration: ${error.message}\n`);
      return 2;
    }
    process.stderr.write(`Error: ${describeError(error)}${error instanceof ApiCallFault ? ` (fault ${error.code})` : ''}\n`);
    return 1;
  }
}
