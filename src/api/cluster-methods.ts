// The API methods of virtual clusters (pragma_boot's verbs): VcRepository, VcBoot, VcList,
// VcShutdown, VcClean. The same callers as tasks and instances may use them; a cluster is its
// owner's and root's. Refusals get the on-demand faults (102 invalid, 103 unknown, 104 state,
// 105 capacity, 108 another owner's).
import type { ClusterEngine, ClusterView } from '../clusters/engine.js';
import { ApiFault, FaultCode, invalidArgument } from './faults.js';
import type { MethodDef } from './method-types.js';
import { onDemandMethod } from './task-methods.js';

/** A cluster as VcList answers: its record, each node with whether it runs. */
export function clusterStatusOf(cluster: ClusterView): Record<string, unknown> {
  return {
    name: cluster.name, image: cluster.image, owner: cluster.owner, state: cluster.state, created: cluster.created, reason: cluster.reason,
    network: cluster.network.subnet,
    vcpus: cluster.nodes.reduce((sum, n) => sum + n.vcpus, 0),
    nodes: cluster.nodes.map((n) => ({
      name: n.name, role: n.role, vcpus: n.vcpus, memory_kib: n.memory_kib, private_ip: n.private_ip, private_mac: n.private_mac,
      public_ip: n.public_ip, running: cluster.running[n.name] ?? false,
    })),
  };
}

const text = (value: unknown, position: number, what: string): string => {
  if (typeof value !== 'string' || value.trim() === '') throw invalidArgument(position, what, 'expected a non-empty string');
  return value.trim();
};

function bootOptions(value: unknown): { name: string | null; key: string; mem: string | null } {
  const o = (value ?? {}) as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !['name', 'key', 'mem'].includes(k));
  if (unknown.length > 0) throw invalidArgument(3, 'options', `unknown member ${unknown.map((k) => JSON.stringify(k)).join(', ')} (one of name, key, mem)`);
  const optional = (k: string) => (o[k] === undefined || o[k] === '' ? null : text(o[k], 3, `options.${k}`));
  const key = optional('key');
  if (key === null) throw invalidArgument(3, 'options.key', 'the ssh public key to put into vc-out.xml is missing');
  return { name: optional('name'), key, mem: optional('mem') };
}

export function clusterMethods(engine: ClusterEngine | undefined): MethodDef[] {
  const clusters = (): ClusterEngine => {
    if (!engine) throw new ApiFault(FaultCode.internal, 'virtual clusters are not served on this node');
    return engine;
  };
  const method = onDemandMethod;
  const CLUSTER = { name: 'cluster', type: 'string' } as const;
  return [
    method('VcRepository', [], 'array', "The virtual cluster images of the node's repository: name and description file.",
      async () => clusters().repository()),
    method('VcBoot', [{ name: 'image', type: 'string' }, { name: 'num_cpus', type: 'int' }, { name: 'options', type: 'struct', optional: true }], 'struct',
      'Boots a virtual cluster of the repository image: a frontend and computes with num_cpus vCPUs together (0: a frontend alone); options {name, key (required: an ssh public key), mem ("MiB" or "FE:COMPUTE")}. Returns once every node is started; a failure removes everything made for it.',
      async (who, args) => {
        const cpus = args[1];
        if (typeof cpus !== 'number' || !Number.isSafeInteger(cpus) || cpus < 0) throw invalidArgument(2, 'num_cpus', 'expected a whole number >= 0');
        const cluster = await clusters().boot(who, { image: text(args[0], 1, 'image'), cpus, ...bootOptions(args[2]) });
        return clusterStatusOf({ ...cluster, running: {} });
      }),
    method('VcList', [{ ...CLUSTER, optional: true }], 'array', "The caller's clusters (root: every one), or the one named: image, owner, state, nodes with their addresses and vCPUs.",
      async (who, args) => (await clusters().list(who, args[0] === undefined || args[0] === '' ? null : text(args[0], 1, 'cluster'))).map(clusterStatusOf)),
    method('VcShutdown', [CLUSTER], 'struct', 'Shuts every node of the cluster down (ACPI, then power off after a grace); the cluster stays until VcClean.',
      async (who, args) => clusterStatusOf({ ...(await clusters().shutdown(who, text(args[0], 1, 'cluster'))), running: {} })),
    method('VcClean', [CLUSTER], 'struct', "Removes a shut-down cluster: its domains, disks, private network and addresses; refused while a node runs.",
      async (who, args) => clusterStatusOf({ ...(await clusters().clean(who, text(args[0], 1, 'cluster'))), running: {} })),
  ];
}
