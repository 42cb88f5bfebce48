// A virtual cluster's boot, as a transaction. Everything is decided before anything is made (the
// image prepared, the CPUs packed against the budget, addresses, MACs and every vc-out.xml
// computed); then the record is written in state `booting`, listing all that may come to exist: the
// frontend's public lease, the private network, each node's domain and disk. Each step is made in
// turn; any failure removes everything the record lists and says what failed, and a restart that
// finds a record still `booting` does the same (engine.ts). pragma_boot had no rollback at all.
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import type { AddressLease, ClusterNodeRecord, ClusterRecord } from '../db/types.js';
import type { GuestDefinition, GuestReadiness } from '../runtimes/libvirt/guest-definition.js';
import { PRIVATE_NETWORK_PREFIX, type PrivateNetwork } from '../runtimes/libvirt/private-networks.js';
import { describeError, PermanentError } from '../util/errors.js';
import type { BootWait, ClusterContext, PreparedImage } from './cluster-context.js';
import { clusterMacs } from './macs.js';
import { chooseNodeMemory, packCluster, type ClusterPacking } from './packing.js';
import { computeAddress, describeSubnet, frontendAddress, parseCidr, requireRoom, subnetOfHost, usableAddress } from './subnet.js';
import { assembleVcCluster, macRequest } from './vc-plan.js';
import { normaliseSshPublicKey, vcOutFiles, type VcClusterPlan } from './vc-out.js';

export interface BootRequest {
  readonly image: string;
  /** NUM_CPUS: the computes' vCPUs together; 0: a frontend alone. */
  readonly cpus: number;
  readonly name: string | null;
  /** The ssh public key written into vc-out.xml. */
  readonly key: string;
  /** pragma's `mem` option: "MiB" or "FRONTEND:COMPUTE" in MiB; null: the description's or the default. */
  readonly mem: string | null;
}

/** Where vc-out.xml goes in each node's disk, as pragma put it. */
export const VC_OUT_PATH = '/root/vc-out.xml';

export const guestOf = (cluster: string, node: string) => `vc.${cluster}.${node}`;

/** A new cluster name: "vc-" and 6 hex digits, not one of `taken`. */
export function newClusterName(taken: (name: string) => boolean): string {
  for (;;) {
    const name = `vc-${randomBytes(3).toString('hex')}`;
    if (!taken(name)) return name;
  }
}

function networkOf(cluster: string, mtu: number): PrivateNetwork {
  return { name: `${PRIVATE_NETWORK_PREFIX}vc-${cluster}`, bridge: `nmvc${createHash('sha256').update(cluster).digest('hex').slice(0, 8)}`, mtu };
}

/** What the frontend's dependants wait for; computes are never waited for. */
function readinessOf(wait: BootWait | null, role: 'frontend' | 'compute'): GuestReadiness {
  if (role === 'compute' || wait === null || wait.type === 'clock') return { by: 'none' };
  return wait.type === 'agent' ? { by: 'agent', timeoutMs: wait.seconds * 1000 } : { by: 'marker' };
}

export function nodeDefinition(prepared: PreparedImage, record: ClusterRecord, node: ClusterNodeRecord): GuestDefinition {
  return {
    kind: 'qemu',
    boot: { image: node.role === 'frontend' ? prepared.frontendDisk : prepared.computeDisk, kernel: prepared.kernel, initrd: prepared.initrd },
    size: 'small',
    limits: { vcpus: node.vcpus, mem_max: node.memory_kib },
    interfaces: node.role === 'frontend' ? 1 : 0,
    networkInterfaces: [{ network: record.network.name, mac: node.private_mac }],
    agent: true,
    readiness: readinessOf(prepared.wait, node.role),
  };
}

interface Decided {
  readonly record: ClusterRecord;
  readonly packing: ClusterPacking;
  readonly prepared: PreparedImage;
  readonly addressing: Omit<Parameters<typeof assembleVcCluster>[1], 'publicAddress'>;
}

/** Everything decided before anything is made; throws a PermanentError naming what does not fit. */
async function decide(ctx: ClusterContext, owner: string, request: BootRequest): Promise<Decided> {
  const name = request.name ?? newClusterName((n) => ctx.book.get(n) !== null);
  if (ctx.book.get(name) !== null) throw new PermanentError(`a cluster named "${name}" exists already`);
  if (!Number.isSafeInteger(request.cpus) || request.cpus < 0) throw new PermanentError(`NUM_CPUS must be a whole number >= 0, got ${request.cpus}`);
  const key = normaliseSshPublicKey(request.key);
  const prepared = await ctx.repository.prepare(request.image);
  if (request.cpus > 0 && prepared.computeDisk === null) throw new PermanentError(`image ${request.image} describes no compute: boot it with NUM_CPUS 0`);
  const memory = chooseNodeMemory(request.mem, { frontendKiB: prepared.frontendMemoryKiB, computeKiB: prepared.computeMemoryKiB });
  const free = ctx.free();
  const packing = packCluster(
    { clusterName: name, computeCpus: request.cpus, maxComputeCpus: ctx.settings.maxComputeCpus, frontendVcpus: prepared.frontendVcpus, memory },
    { vcpus: free.vcpus, memoryKiB: Math.floor(free.memoryBytes / 1024) },
  );
  const privateSubnet = parseCidr(prepared.privateSubnet ?? ctx.settings.privateSubnet, 'private subnet');
  const mtu = prepared.privateMtu ?? ctx.settings.privateMtu;
  const macs = clusterMacs(name, macRequest(packing), ctx.macsInUse());
  const addressing = {
    fqdn: `${name}.${ctx.settings.domain}`, privateSubnet, privateMtu: mtu, sshPublicKey: key, macs,
    dns: { servers: ctx.settings.dnsServers, search: ctx.settings.domain, domain: ctx.settings.domain },
  };
  // The private side is known now (as vc-plan.ts lays it out); the public address comes with the lease.
  requireRoom(privateSubnet, 1 + packing.computes.length);
  const nodes: ClusterNodeRecord[] = [
    { name: 'frontend', role: 'frontend', guest: guestOf(name, 'frontend'), vcpus: packing.frontend.vcpus, memory_kib: packing.frontend.memoryKiB,
      private_ip: frontendAddress(privateSubnet), private_mac: macs[0]!.macs[0]!, public_ip: null },
    ...packing.computes.map((c, i) => ({
      name: c.name, role: 'compute' as const, guest: guestOf(name, c.name), vcpus: c.vcpus, memory_kib: c.memoryKiB,
      private_ip: computeAddress(privateSubnet, i), private_mac: macs[i + 1]!.macs[0]!, public_ip: null,
    })),
  ];
  const network = networkOf(name, mtu);
  const record: ClusterRecord = {
    name, owner, image: request.image, base_image: prepared.frontendDisk, state: 'booting', created: ctx.now().toISOString(), reason: null,
    network: { name: network.name, bridge: network.bridge, subnet: describeSubnet(privateSubnet), mtu }, nodes,
  };
  return { record, packing, prepared, addressing };
}

/** The vc-out.xml of each node, with the frontend's public side from its lease. */
function vcOutOf(decided: Decided, lease: AddressLease, gateway: string | null): Map<string, string> {
  if (lease.prefix === null) throw new PermanentError(`the pool's address ${lease.ip} has no prefix length; a cluster's public address needs one (as 192.0.2.10/24)`);
  const publicGateway = gateway ?? usableAddress(subnetOfHost(lease.ip, lease.prefix, 'public address'), 0);
  const macs = decided.addressing.macs.map((m, i) => (i === 0 ? { ...m, macs: [m.macs[0]!, lease.mac] } : m));
  // Without name servers of its own, a cluster asks its public gateway.
  const dns = decided.addressing.dns.servers.length > 0 ? decided.addressing.dns : { ...decided.addressing.dns, servers: [publicGateway] };
  const plan: VcClusterPlan = assembleVcCluster(decided.packing, {
    ...decided.addressing, dns, macs, publicAddress: { ip: lease.ip, prefixLength: lease.prefix, gateway: publicGateway, mtu: 1500 },
  });
  const files = vcOutFiles(plan);
  return new Map([['frontend', files.frontend], ...files.computes.map((c) => [c.name, c.text] as const)]);
}

/** Boots the cluster; on any failure removes all it made and throws saying what failed. */
export async function bootCluster(ctx: ClusterContext, owner: string, request: BootRequest): Promise<ClusterRecord> {
  const decided = await decide(ctx, owner, request);
  let record = decided.record;
  const save = async (change: Partial<ClusterRecord>) => {
    record = { ...record, ...change };
    await ctx.book.put(record);
  };
  await save({});
  let step = 'leasing the frontend\'s public address';
  try {
    const frontend = record.nodes[0]!;
    const [lease] = await ctx.addresses.lease(frontend.guest, 1);
    const files = vcOutOf(decided, lease!, ctx.settings.publicGateway);
    await save({ nodes: record.nodes.map((n) => (n.role === 'frontend' ? { ...n, public_ip: lease!.ip } : n)) });
    step = `making the private network ${record.network.name}`;
    await ctx.networks.create({ name: record.network.name, bridge: record.network.bridge, mtu: record.network.mtu });
    for (const node of record.nodes) {
      step = `making ${node.guest}`;
      await ctx.guests.create(node.guest, nodeDefinition(decided.prepared, record, node));
      step = `writing ${VC_OUT_PATH} into the disk of ${node.guest}`;
      await ctx.inject(ctx.guests.overlayOf(node.guest), [{ path: VC_OUT_PATH, content: files.get(node.name)!, mode: 0o644 }], ctx.settings.renames);
    }
    step = `starting ${frontend.guest}`;
    const started = Date.now();
    await ctx.guests.start(frontend.guest, nodeDefinition(decided.prepared, record, frontend));
    const wait = decided.prepared.wait;
    if (wait?.type === 'clock') await delay(Math.max(0, started + wait.seconds * 1000 - Date.now()));
    step = 'starting the computes';
    await Promise.all(record.nodes.filter((n) => n.role === 'compute').map((n) => ctx.guests.start(n.guest, nodeDefinition(decided.prepared, record, n))));
    await save({ state: 'running' });
    ctx.logger.info('cluster booted', { cluster: record.name, owner, image: record.image, nodes: record.nodes.length });
    return record;
  } catch (error) {
    const reason = `${step} failed: ${describeError(error)}`;
    ctx.logger.warn('cluster boot failed; rolling back', { cluster: record.name, reason });
    await removeCluster(ctx, record, reason);
    throw new PermanentError(`cluster ${record.name} not booted: ${reason}; everything made for it was removed`);
  }
}

/** Removes all a cluster's record lists (each part that is not there is no error), then the record. */
export async function removeCluster(ctx: ClusterContext, record: ClusterRecord, reason: string): Promise<void> {
  for (const node of [...record.nodes].reverse()) {
    await ctx.guests.destroy(node.guest, 'qemu');
    await ctx.addresses.release(node.guest);
  }
  await ctx.networks.remove(record.network.name);
  await ctx.book.remove(record.name);
  ctx.logger.info('cluster removed', { cluster: record.name, reason });
}
