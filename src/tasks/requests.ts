// The checks of a request to the engine, before it changes anything: who may act on a task, what
// fits in the budget, what a confirm's document and a launch's request make of the task's record.
// Pure but for reading the book; the engine (engine.ts) writes what these return.
import type { TaskRecord } from '../db/types.js';
import type { InstanceSize } from '../slices/types.js';
import { describeError } from '../util/errors.js';
import { shortfall, type BudgetView, type Need } from './budget.js';
import { localFileUrls, localFilesRefusal } from './local-files.js';
import { advance } from './states.js';
import { definitionOf } from './steps.js';
import type { TaskBook } from './task-book.js';
import { describeTask, type TaskContext } from './task-context.js';
import { guestNameOf, newTaskId, newTicket, SIZE_NEEDS } from './task-guest.js';
import { parseXsdl } from './xsdl.js';
import { XsdlError, type XsdlJob } from './xsdl-types.js';

/** Who asks: its owner name (api/identity.ts ownerOf) and whether it is root, who may act on anything. */
export interface Requester {
  readonly owner: string;
  readonly root: boolean;
}

export type RequestProblem = 'invalid' | 'unknown' | 'state' | 'capacity' | 'owner';

/** A request refused; `problem` says of which kind (the API turns it into a fault code). */
export class TaskRequestError extends Error {
  override readonly name = 'TaskRequestError';
  constructor(readonly problem: RequestProblem, message: string) {
    super(message);
  }
}

export interface LaunchRequest {
  /** A disk image of the cache (or a root archive, for lxc); null with a kernel booted alone. */
  readonly image: string | null;
  readonly kernel: string | null;
  readonly initrd: string | null;
  readonly size: InstanceSize;
  readonly count: number;
  readonly runtime: TaskRecord['runtime'];
  readonly sshKey: string | null;
}

/** The task of the ticket, if `who` may act on it. */
export function owned(book: TaskBook, who: Requester, ticket: string): TaskRecord {
  const task = book.byTicket(ticket);
  if (task === null) throw new TaskRequestError('unknown', `no ticket ${JSON.stringify(ticket)} on this node`);
  return mayAct(who, task);
}

/** The instance of the id, if `who` may act on it. */
export function ownedInstance(book: TaskBook, who: Requester, id: string): TaskRecord {
  const task = book.get(id);
  if (task === null || task.kind !== 'instance') throw new TaskRequestError('unknown', `no instance ${JSON.stringify(id)} on this node`);
  return mayAct(who, task);
}

function mayAct(who: Requester, task: TaskRecord): TaskRecord {
  if (!who.root && who.owner !== task.owner) throw new TaskRequestError('owner', `${describeTask(task)} belongs to another owner`);
  return task;
}

/** Throws with the numbers when `count` guests of `need` do not fit in what is free. */
export function admitted(view: BudgetView, need: Need, count: number): void {
  const problem = shortfall(view, { vcpus: need.vcpus * count, memoryBytes: need.memoryBytes * count });
  if (problem !== null) throw new TaskRequestError('capacity', `does not fit on this node: ${problem}`);
}

/** A new reservation of `who`: an id and a ticket of its own, expiring after task_reservation_ttl. */
export function newRecord(ctx: TaskContext, who: Requester, kind: TaskRecord['kind']): TaskRecord {
  const id = newTaskId((candidate) => ctx.book.get(candidate) !== null);
  const at = ctx.now();
  return {
    task_id: id, ticket: newTicket(), kind, owner: who.owner, state: 'Pending:Reserved', times: { submit: at.toISOString() },
    reason: null, exit_code: null, signal: null, runtime: 'qemu', guest: guestNameOf(kind, id), xsdl: null, image: null, kernel: null,
    initrd: null, size: null, ssh_key: null, vcpus: 0, memory_bytes: 0, address: null, vnc: null,
    expires: new Date(at.getTime() + ctx.settings.reservationTtlMs).toISOString(), job_pid: null, terminating: null,
  };
}

/** The guest's definition checked as its lifecycle would check it at its creation. */
function checkGuest(ctx: TaskContext, task: TaskRecord, job: XsdlJob | null): void {
  try {
    ctx.guests.check(definitionOf(ctx, task, job));
  } catch (error) {
    throw new TaskRequestError('invalid', `${describeTask(task)}: ${describeError(error)}`);
  }
}

/** A reserved task confirmed with its document: the record it becomes, the job, what it needs of the budget. */
export function confirmation(ctx: TaskContext, task: TaskRecord, ticket: string, xsdl: string): { confirmed: TaskRecord; job: XsdlJob; need: Need } {
  if (task.state !== 'Pending:Reserved') throw new TaskRequestError('state', `${describeTask(task)} is ${task.state}; only a Pending:Reserved task is confirmed`);
  let job: XsdlJob;
  try {
    job = parseXsdl(xsdl, { maxBytes: ctx.settings.xsdlMaxBytes, source: `${describeTask(task)} XSDL` });
  } catch (error) {
    if (error instanceof XsdlError) throw new TaskRequestError('invalid', error.message);
    throw error;
  }
  if (job.ticket !== null && job.ticket !== ticket) {
    throw new TaskRequestError('invalid', `the document's xbe:Ticket ${JSON.stringify(job.ticket)} is not the ticket confirmed`);
  }
  const refusal = localFilesRefusal(task.owner, localFileUrls(job));
  if (refusal !== null) throw new TaskRequestError('owner', `${describeTask(task)}: ${refusal}`);
  const need = { vcpus: job.cpuCount ?? ctx.settings.defaultVcpus, memoryBytes: job.memoryBytes ?? ctx.settings.defaultMemoryBytes };
  const confirmed = advance({
    ...task, xsdl, runtime: job.runtime, vcpus: need.vcpus, memory_bytes: need.memoryBytes, expires: null,
  }, 'Pending:Confirmed', ctx.now());
  checkGuest(ctx, confirmed, job);
  return { confirmed, job, need };
}

/** The records of a launch, confirmed at once (an instance has no document). */
export function launchRecords(ctx: TaskContext, who: Requester, request: LaunchRequest): TaskRecord[] {
  if (!Number.isSafeInteger(request.count) || request.count < 1) throw new TaskRequestError('invalid', `count must be a whole number >= 1, got ${request.count}`);
  const refusal = localFilesRefusal(who.owner, [request.image, request.kernel, request.initrd]);
  if (refusal !== null) throw new TaskRequestError('owner', refusal);
  const need = SIZE_NEEDS[request.size];
  const records: TaskRecord[] = [];
  for (let i = 0; i < request.count; i++) {
    // Each id is new against the book and the ones made before it.
    const record = newRecord({ ...ctx, book: { ...ctx.book, get: (id) => ctx.book.get(id) ?? records.find((r) => r.task_id === id) ?? null } }, who, 'instance');
    records.push(advance({
      ...record, runtime: request.runtime, image: request.image, kernel: request.kernel, initrd: request.initrd, size: request.size,
      ssh_key: request.sshKey, vcpus: need.vcpus, memory_bytes: need.memoryBytes, expires: null,
    }, 'Pending:Confirmed', ctx.now()));
  }
  checkGuest(ctx, records[0]!, null);
  return records;
}
