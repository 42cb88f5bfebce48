// Validation of the database's on-demand sections (TaskRecord, ClusterRecord), as strictly as the
// records: a task or cluster read back after a restart is what the engines go on with, so a field of
// the wrong kind is named here rather than met halfway through a stage-out or a rollback.
import type { InstanceSize } from '../slices/types.js';
import type { ClusterNodeRecord, ClusterRecord, ClusterState, TaskKind, TaskRecord, TaskState, TaskTime, TaskTimes } from './types.js';
import {
  array, dictionary, exactly, field, integer, isoTime, member, name, object, optionalInteger, optionalString, string, type Fields,
} from './validators.js';

const TASK_FIELDS: Fields<TaskRecord> = {
  task_id: true, ticket: true, kind: true, owner: true, state: true, times: true, reason: true, exit_code: true, signal: true,
  runtime: true, guest: true, xsdl: true, image: true, kernel: true, initrd: true, size: true, ssh_key: true, vcpus: true, memory_bytes: true,
  address: true, vnc: true, expires: true, job_pid: true, terminating: true,
};
const TASK_KINDS: Record<TaskKind, true> = { task: true, instance: true };
const TASK_STATE_VALUES: Record<TaskState, true> = {
  'Pending:Reserved': true, 'Pending:Confirmed': true, 'Running:Stage-In': true, 'Running:Instance-Starting': true,
  'Running:Executing': true, 'Running:Instance-Stopping': true, 'Running:Stage-Out': true, Finished: true, Failed: true, Terminated: true,
};
const TASK_TIME_FIELDS: Fields<Required<TaskTimes>> = {
  submit: true, confirm: true, 'stage-in-start': true, 'instance-start': true, 'execution-start': true, 'execution-done': true,
  'instance-stop': true, 'stage-out-start': true, finished: true, failed: true, terminated: true,
};
const GUEST_RUNTIMES: Record<TaskRecord['runtime'], true> = { qemu: true, lxc: true };
const SIZES: Record<InstanceSize, true> = { small: true, medium: true, large: true };

function taskTimes(value: unknown, path: string): TaskTimes {
  const times = dictionary(value, path, isoTime);
  for (const key of Object.keys(times)) member(key, field(path, key), TASK_TIME_FIELDS as Record<TaskTime, true>);
  return times;
}

export function taskRecord(value: unknown, path: string, key: string): TaskRecord {
  const o = object(value, path, TASK_FIELDS);
  const at = (k: keyof TaskRecord) => field(path, k);
  return {
    task_id: exactly(name(o.task_id, at('task_id')), at('task_id'), key, ' (its key in tasks)'),
    ticket: name(o.ticket, at('ticket')),
    kind: member(o.kind, at('kind'), TASK_KINDS),
    owner: name(o.owner, at('owner')),
    state: member(o.state, at('state'), TASK_STATE_VALUES),
    times: taskTimes(o.times, at('times')),
    reason: optionalString(o.reason, at('reason')),
    exit_code: optionalInteger(o.exit_code, at('exit_code')),
    signal: optionalString(o.signal, at('signal')),
    runtime: member(o.runtime, at('runtime'), GUEST_RUNTIMES),
    guest: name(o.guest, at('guest')),
    xsdl: optionalString(o.xsdl, at('xsdl')),
    image: optionalString(o.image, at('image')),
    kernel: optionalString(o.kernel, at('kernel')),
    initrd: optionalString(o.initrd, at('initrd')),
    size: o.size === null ? null : member(o.size, at('size'), SIZES),
    ssh_key: optionalString(o.ssh_key, at('ssh_key')),
    vcpus: integer(o.vcpus, at('vcpus')),
    memory_bytes: integer(o.memory_bytes, at('memory_bytes')),
    address: optionalString(o.address, at('address')),
    vnc: optionalString(o.vnc, at('vnc')),
    expires: o.expires === null ? null : isoTime(o.expires, at('expires')),
    job_pid: optionalInteger(o.job_pid, at('job_pid')),
    terminating: optionalString(o.terminating, at('terminating')),
  };
}

const CLUSTER_FIELDS: Fields<ClusterRecord> = {
  name: true, owner: true, image: true, base_image: true, state: true, created: true, reason: true, network: true, nodes: true,
};
const CLUSTER_STATES: Record<ClusterState, true> = { booting: true, running: true, stopped: true };
const NODE_FIELDS: Fields<ClusterNodeRecord> = {
  name: true, role: true, guest: true, vcpus: true, memory_kib: true, private_ip: true, private_mac: true, public_ip: true,
};
const ROLES: Record<ClusterNodeRecord['role'], true> = { frontend: true, compute: true };

function clusterNode(value: unknown, path: string): ClusterNodeRecord {
  const o = object(value, path, NODE_FIELDS);
  const at = (k: keyof ClusterNodeRecord) => field(path, k);
  return {
    name: name(o.name, at('name')), role: member(o.role, at('role'), ROLES), guest: name(o.guest, at('guest')),
    vcpus: integer(o.vcpus, at('vcpus')), memory_kib: integer(o.memory_kib, at('memory_kib')),
    private_ip: string(o.private_ip, at('private_ip')), private_mac: string(o.private_mac, at('private_mac')),
    public_ip: optionalString(o.public_ip, at('public_ip')),
  };
}

export function clusterRecord(value: unknown, path: string, key: string): ClusterRecord {
  const o = object(value, path, CLUSTER_FIELDS);
  const at = (k: keyof ClusterRecord) => field(path, k);
  const network = object(o.network, at('network'), { name: true, bridge: true, subnet: true, mtu: true });
  const net = (k: string) => field(at('network'), k);
  return {
    name: exactly(name(o.name, at('name')), at('name'), key, ' (its key in clusters)'),
    owner: name(o.owner, at('owner')), image: name(o.image, at('image')), base_image: name(o.base_image, at('base_image')),
    state: member(o.state, at('state'), CLUSTER_STATES), created: isoTime(o.created, at('created')), reason: optionalString(o.reason, at('reason')),
    network: { name: name(network.name, net('name')), bridge: name(network.bridge, net('bridge')), subnet: string(network.subnet, net('subnet')), mtu: integer(network.mtu, net('mtu')) },
    nodes: array(o.nodes, at('nodes'), clusterNode),
  };
}
