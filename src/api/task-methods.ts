// The API methods of the on-demand work: XenBEE's verbs for tasks (Reserve, Confirm, Submit,
// TaskStatus, Terminate), Condor Cloud's for instances (LaunchInstances, ListInstances,
// TerminateInstances), and GetNodeInfo, the capacity budget and the cached images. Every local
// user but nobody and every allowed certificate subject may call them; what a caller starts is its
// own, and only it or root sees it, terminates it or removes it (the engine checks).
import type { TaskRecord } from '../db/types.js';
import type { ImageCache } from '../images/cache.js';
import { cachedImagesClassad } from '../images/classad.js';
import { INSTANCE_SIZES, type InstanceSize } from '../slices/types.js';
import { invalidImageRef } from '../slices/values.js';
import { describeNeed, type BudgetView } from '../tasks/budget.js';
import { TaskRequestError, type Requester, type TaskEngine } from '../tasks/engine.js';
import { describeError } from '../util/errors.js';
import { ApiFault, FaultCode, invalidArgument } from './faults.js';
import { ownerOf, type Caller } from './identity.js';
import type { MethodDef } from './method-types.js';

const FAULT_OF: Readonly<Record<TaskRequestError['problem'], number>> = {
  invalid: FaultCode.invalidArgument,
  unknown: FaultCode.unknownTask,
  state: FaultCode.taskState,
  capacity: FaultCode.noCapacity,
  owner: FaultCode.permissionDenied,
};

/** The fault of an on-demand request refused (tasks, instances, clusters), or of a failure of the node. */
export function onDemandFault(error: unknown): ApiFault {
  if (error instanceof ApiFault) return error;
  if (error instanceof TaskRequestError) return new ApiFault(FAULT_OF[error.problem], error.message);
  return new ApiFault(FaultCode.internal, describeError(error));
}

/**
 * A method of the on-demand work: for every user (access 'user'), run as its owner, its refusals
 * turned into faults.
 */
export function onDemandMethod(
  name: string, params: MethodDef['params'], returns: MethodDef['returns'], help: string,
  work: (who: Requester, args: readonly unknown[]) => unknown,
): MethodDef {
  return {
    name, params, returns, access: 'user', help,
    async run({ caller, args }) {
      try {
        return await work(requesterOf(caller), args);
      } catch (error) {
        throw onDemandFault(error);
      }
    },
  };
}

export function requesterOf(caller: Caller): Requester {
  return { owner: ownerOf(caller), root: caller.kind === 'root' };
}

/** A task as TaskStatus answers: every field named by XenBEE's status, null where it has none (nil). */
export function taskStatusOf(task: TaskRecord): Record<string, unknown> {
  return {
    task_id: task.task_id, kind: task.kind, state: task.state, times: { ...task.times }, exit_code: task.exit_code, signal: task.signal,
    reason: task.reason, address: task.address, vnc: task.vnc, owner: task.owner,
  };
}

/** An instance as ListInstances answers: Condor Cloud's columns. */
export function instanceRowOf(task: TaskRecord, now: Date): Record<string, unknown> {
  const since = Date.parse(task.times.submit ?? now.toISOString());
  return {
    id: task.task_id, owner: task.owner, image: task.image, size: task.size, state: task.state, address: task.address, vnc: task.vnc,
    age_seconds: Math.max(0, Math.round((now.getTime() - since) / 1000)), reason: task.reason,
  };
}

function budgetOf(view: BudgetView): Record<string, unknown> {
  const need = (n: { vcpus: number; memoryBytes: number }) => ({ vcpus: n.vcpus, memory_bytes: n.memoryBytes, text: describeNeed(n) });
  return {
    total: need(view.total), used: need(view.used), free: need(view.free),
    uses: view.uses.map((u) => ({ holder: u.holder, ...need(u) })),
  };
}

const text = (value: unknown, position: number, name: string): string => {
  if (typeof value !== 'string') throw invalidArgument(position, name, 'expected a string');
  return value;
};

function launchRequest(value: unknown) {
  const o = value as Record<string, unknown>;
  const known = new Set(['image', 'kernel', 'initrd', 'size', 'count', 'ssh_key', 'runtime']);
  const unknown = Object.keys(o).filter((k) => !known.has(k));
  if (unknown.length > 0) throw invalidArgument(1, 'request', `unknown member ${unknown.map((k) => JSON.stringify(k)).join(', ')} (one of ${[...known].join(', ')})`);
  const ref = (key: string) => {
    if (o[key] === undefined || o[key] === '') return null;
    const value = text(o[key], 1, `request.${key}`).trim();
    // A cache entry's name or a URL, never a path: the node's files are not the caller's to boot.
    const refusal = invalidImageRef('the value', value);
    if (refusal !== null) throw invalidArgument(1, `request.${key}`, refusal);
    return value;
  };
  const [image, kernel, initrd] = [ref('image'), ref('kernel'), ref('initrd')];
  if (image === null && kernel === null) throw invalidArgument(1, 'request.image', 'missing; name an entry of the image cache (or a kernel to boot)');
  const size = o.size === undefined ? 'small' : text(o.size, 1, 'request.size');
  if (!(INSTANCE_SIZES as readonly string[]).includes(size)) throw invalidArgument(1, 'request.size', `${JSON.stringify(size)} is not one of ${INSTANCE_SIZES.join(', ')}`);
  const count = o.count ?? 1;
  if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1 || count > 100) throw invalidArgument(1, 'request.count', 'expected a whole number from 1 to 100');
  const runtime = o.runtime === undefined ? 'qemu' : text(o.runtime, 1, 'request.runtime');
  if (runtime !== 'qemu' && runtime !== 'lxc') throw invalidArgument(1, 'request.runtime', `${JSON.stringify(runtime)} is not one of qemu, lxc`);
  const sshKey = o.ssh_key === undefined || o.ssh_key === '' ? null : text(o.ssh_key, 1, 'request.ssh_key');
  if (sshKey !== null && !/^(ssh|ecdsa|sk)-[\w@.-]+ [A-Za-z0-9+/=]+( [^\n]*)?\n?$/.test(sshKey)) {
    throw invalidArgument(1, 'request.ssh_key', 'not one public key in authorized_keys form ("ssh-ed25519 AAAA... comment")');
  }
  return { image, kernel, initrd, size: size as InstanceSize, count, runtime: runtime as 'qemu' | 'lxc', sshKey };
}

export function taskMethods(engine: TaskEngine | undefined, images: ImageCache | undefined, now: () => Date): MethodDef[] {
  const tasks = (): TaskEngine => {
    if (!engine) throw new ApiFault(FaultCode.internal, 'on-demand tasks are not served on this node');
    return engine;
  };
  const method = onDemandMethod;
  const TICKET = { name: 'ticket', type: 'string' } as const;
  return [
    method('Reserve', [], 'struct', 'Reserves a task: returns {ticket, task_id}. Confirm the ticket with an XSDL document within task_reservation_ttl.',
      async (who) => tasks().reserve(who)),
    method('Confirm', [TICKET, { name: 'xsdl', type: 'string' }], 'struct',
      "Starts the reserved task with its XSDL document (JSDL + XenBEE's instance definition); returns its status. 102: the document is invalid (line, element, reason); 105: it does not fit.",
      async (who, args) => taskStatusOf(await tasks().confirm(who, text(args[0], 1, 'ticket'), text(args[1], 2, 'xsdl')))),
    method('Submit', [{ name: 'xsdl', type: 'string' }], 'struct', 'Reserve and Confirm in one: returns the new task\'s status, whose ticket TaskStatus and Terminate take.',
      async (who, args) => {
        const task = await tasks().submit(who, text(args[0], 1, 'xsdl'));
        return { ...taskStatusOf(task), ticket: task.ticket };
      }),
    method('TaskStatus', [TICKET, { name: 'remove', type: 'boolean', optional: true }], 'array',
      'The status of the ticket\'s task, or of each of the caller\'s tasks for "all" (root: every task). With remove, a done task\'s entry and spool are dropped after they are returned.',
      async (who, args) => (await tasks().status(who, text(args[0], 1, 'ticket'), args[1] === true)).map(taskStatusOf)),
    method('Terminate', [TICKET, { name: 'reason', type: 'string', optional: true }], 'struct',
      'Ends the task in whatever state it is: downloads cancelled, its guest stopped and removed; it ends Terminated with the reason. Its spool stays until TaskStatus removes it.',
      async (who, args) => taskStatusOf(await tasks().terminate(who, text(args[0], 1, 'ticket'), args[1] === undefined ? '' : text(args[1], 2, 'reason')))),
    method('LaunchInstances', [{ name: 'request', type: 'struct' }], 'array',
      'Launches {image, kernel, initrd, size (small|medium|large), count, ssh_key, runtime (qemu|lxc)} stateless instances from cached images; all fit or none is launched (105 with the numbers). Returns their rows.',
      async (who, args) => (await tasks().launch(who, launchRequest(args[0]))).map((t) => instanceRowOf(t, now()))),
    method('ListInstances', [], 'array', "The caller's instances (root: every one): id, owner, image, size, state, address, vnc, age_seconds.",
      (who) => tasks().instances(who).map((t) => instanceRowOf(t, now()))),
    method('TerminateInstances', [{ name: 'ids', type: 'array' }], 'array',
      'Terminates the instances and removes them, disks and all; returns their last rows.',
      async (who, args) => {
        const ids = (args[0] as unknown[]).map((id, i) => text(id, 1, `ids[${i}]`));
        return (await tasks().terminateInstances(who, ids)).map((t) => instanceRowOf(t, now()));
      }),
    method('GetNodeInfo', [], 'struct',
      "The capacity budget (total, used, free and who uses it) and the cached images, also as an HTCondor ClassAd line (classad).",
      () => {
        const names = images?.list().map((e) => e.name) ?? [];
        return { budget: budgetOf(tasks().budget()), cached_images: names, classad: cachedImagesClassad(names) };
      }),
  ];
}
