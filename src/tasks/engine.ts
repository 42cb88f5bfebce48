// The on-demand work of the node: XenBEE's tasks (reserve, confirm an XSDL job, watch, terminate,
// remove) and Condor Cloud's instances (launch, list, terminate). Requests are checked and answered
// here, every one of them: who may (the owner, or root), what the state allows, what fits in the
// capacity budget. Each admitted task is then run by its runner (runner.ts), one at a time per
// task, all tasks at once; a periodic tick expires reservations and goes on with tasks a restart or
// a failed teardown left unfinished.
import type { TaskRecord } from '../db/types.js';
import { describeError } from '../util/errors.js';
import { budgetView, shortfall, type BudgetFactors, type BudgetUse, type BudgetView, type Need } from './budget.js';
import { DaemonStopping, runTask } from './runner.js';
import { removeSpool, spoolOf } from './spool.js';
import { advance, isDone } from './states.js';
import { definitionOf } from './steps.js';
import { describeTask, type TaskContext } from './task-context.js';
import { guestNameOf, newTaskId, newTicket, SIZE_NEEDS } from './task-guest.js';
import { recoverTasks } from './task-recovery.js';
import { parseXsdl } from './xsdl.js';
import { XsdlError, type XsdlJob } from './xsdl-types.js';
import type { InstanceSize } from '../slices/types.js';

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

export interface EngineDeps extends TaskContext {
  /** The host's CPUs and memory, the factors, and what libvirt slivers hold of the budget. */
  readonly host: () => Need;
  readonly factors: BudgetFactors;
  readonly sliverUses: () => readonly BudgetUse[];
  /** How often reservations are expired and unfinished tasks taken up again. */
  readonly tickMs: number;
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

export interface TaskEngine {
  reserve(who: Requester): Promise<{ ticket: string; task_id: string }>;
  confirm(who: Requester, ticket: string, xsdl: string): Promise<TaskRecord>;
  submit(who: Requester, xsdl: string): Promise<TaskRecord>;
  /** The task of a ticket, or every task of the caller's (root: every task) for "all"; `remove` drops done ones and their spools. */
  status(who: Requester, ticket: string, remove: boolean): Promise<TaskRecord[]>;
  terminate(who: Requester, ticket: string, reason: string): Promise<TaskRecord>;
  launch(who: Requester, request: LaunchRequest): Promise<TaskRecord[]>;
  instances(who: Requester): TaskRecord[];
  terminateInstances(who: Requester, ids: readonly string[]): Promise<TaskRecord[]>;
  budget(): BudgetView;
  /** Wakes every runner that waits (tests; a terminate wakes its own). */
  idle(): Promise<void>;
  /** Recovery after a restart, then the tick. */
  start(): Promise<void>;
  /** Stops the runners where they are (a restart goes on from there) and the tick. */
  stop(): Promise<void>;
}

/** Holders of budget: every task or instance from its confirm or launch until it is done. */
export function taskUses(tasks: readonly TaskRecord[]): BudgetUse[] {
  return tasks
    .filter((t) => !isDone(t.state) && t.state !== 'Pending:Reserved')
    .map((t) => ({ holder: describeTask(t), vcpus: t.vcpus, memoryBytes: t.memory_bytes }));
}

export function createTaskEngine(deps: EngineDeps): TaskEngine {
  const { book, settings, logger, now } = deps;
  const runners = new Map<string, { controller: AbortController; done: Promise<void> }>();
  let tick: NodeJS.Timeout | null = null;
  let stopping = false;

  const run = (id: string) => {
    if (stopping || runners.has(id)) return;
    const controller = new AbortController();
    const done = runTask(deps, id, controller.signal)
      .catch((error: unknown) => logger.error('task runner failed', { task: id, error: describeError(error) }))
      .finally(() => runners.delete(id));
    runners.set(id, { controller, done });
  };

  const view = () => budgetView(deps.host(), deps.factors, [...deps.sliverUses(), ...taskUses(book.all())]);

  /** The task of the ticket, if `who` may act on it. */
  const owned = (who: Requester, ticket: string, what = 'ticket'): TaskRecord => {
    const task = book.byTicket(ticket) ?? (what === 'instance' ? book.get(ticket) : null);
    if (task === null) throw new TaskRequestError('unknown', `no ${what} ${JSON.stringify(ticket)} on this node`);
    if (!who.root && who.owner !== task.owner) throw new TaskRequestError('owner', `${describeTask(task)} belongs to another owner`);
    return task;
  };

  const admit = (need: Need, count: number) => {
    const total = { vcpus: need.vcpus * count, memoryBytes: need.memoryBytes * count };
    const problem = shortfall(view(), total);
    if (problem !== null) throw new TaskRequestError('capacity', `does not fit on this node: ${problem}`);
  };

  const parse = (task: TaskRecord, xsdl: string): XsdlJob => {
    try {
      return parseXsdl(xsdl, { maxBytes: settings.xsdlMaxBytes, source: `${describeTask(task)} XSDL` });
    } catch (error) {
      if (error instanceof XsdlError) throw new TaskRequestError('invalid', error.message);
      throw error;
    }
  };

  const newRecord = (who: Requester, kind: TaskRecord['kind']): TaskRecord => {
    const id = newTaskId((candidate) => book.get(candidate) !== null);
    const at = now();
    return {
      task_id: id, ticket: newTicket(), kind, owner: who.owner, state: 'Pending:Reserved', times: { submit: at.toISOString() },
      reason: null, exit_code: null, signal: null, runtime: 'qemu', guest: guestNameOf(kind, id), xsdl: null, image: null, kernel: null, initrd: null, size: null,
      ssh_key: null, vcpus: 0, memory_bytes: 0, address: null, vnc: null,
      expires: new Date(at.getTime() + settings.reservationTtlMs).toISOString(), job_pid: null, terminating: null,
    };
  };

  const engine: TaskEngine = {
    async reserve(who) {
      const task = newRecord(who, 'task');
      await book.put(task);
      logger.info('task reserved', { task: task.task_id, owner: who.owner });
      return { ticket: task.ticket, task_id: task.task_id };
    },

    async confirm(who, ticket, xsdl) {
      const task = owned(who, ticket);
      if (task.state !== 'Pending:Reserved') throw new TaskRequestError('state', `${describeTask(task)} is ${task.state}; only a Pending:Reserved task is confirmed`);
      const job = parse(task, xsdl);
      if (job.ticket !== null && job.ticket !== ticket) {
        throw new TaskRequestError('invalid', `the document's xbe:Ticket ${JSON.stringify(job.ticket)} is not the ticket confirmed`);
      }
      const need = { vcpus: job.cpuCount ?? settings.defaultVcpus, memoryBytes: job.memoryBytes ?? settings.defaultMemoryBytes };
      const confirmed = advance({
        ...task, xsdl, runtime: job.runtime, vcpus: need.vcpus, memory_bytes: need.memoryBytes, expires: null,
      }, 'Pending:Confirmed', now());
      try {
        deps.guests.check(definitionOf(deps, confirmed, job));
      } catch (error) {
        throw new TaskRequestError('invalid', `${describeTask(task)}: ${describeError(error)}`);
      }
      // No await between the budget's check and the record that takes the budget.
      admit(need, 1);
      const written = book.put(confirmed);
      if (job.ignored.length > 0) logger.info('task document: elements not honoured', { task: task.task_id, ignored: job.ignored.join(', ') });
      await written;
      run(task.task_id);
      return confirmed;
    },

    async submit(who, xsdl) {
      const { ticket } = await engine.reserve(who);
      try {
        return await engine.confirm(who, ticket, xsdl);
      } catch (error) {
        await book.remove(book.byTicket(ticket)!.task_id);
        throw error;
      }
    },

    async status(who, ticket, remove) {
      const tasks = ticket === 'all'
        ? book.all().filter((t) => t.kind === 'task' && (who.root || t.owner === who.owner))
        : [owned(who, ticket)];
      if (remove) {
        const live = tasks.filter((t) => !isDone(t.state));
        if (ticket !== 'all' && live.length > 0) throw new TaskRequestError('state', `${describeTask(live[0]!)} is ${live[0]!.state}; only a done task is removed`);
        for (const t of tasks.filter((t) => isDone(t.state))) await removeTask(deps, t);
      }
      return tasks.sort((a, b) => (a.times.submit ?? '').localeCompare(b.times.submit ?? ''));
    },

    async terminate(who, ticket, reason) {
      const task = owned(who, ticket);
      return terminateOne(task, reason.trim() === '' ? `terminated by ${who.owner}` : reason.trim());
    },

    async launch(who, request) {
      if (!Number.isSafeInteger(request.count) || request.count < 1) throw new TaskRequestError('invalid', `count must be a whole number >= 1, got ${request.count}`);
      const need = SIZE_NEEDS[request.size];
      const records = Array.from({ length: request.count }, () => {
        const record = newRecord(who, 'instance');
        return {
          ...record, runtime: request.runtime, image: request.image, kernel: request.kernel, initrd: request.initrd, size: request.size, ssh_key: request.sshKey, vcpus: need.vcpus,
          memory_bytes: need.memoryBytes, expires: null, state: 'Pending:Confirmed' as const,
          times: { ...record.times, confirm: record.times.submit! },
        };
      });
      try {
        deps.guests.check(definitionOf(deps, records[0]!, null));
      } catch (error) {
        throw new TaskRequestError('invalid', describeError(error));
      }
      // The whole launch fits, or none of it is made.
      admit(need, request.count);
      await Promise.all(records.map((r) => book.put(r)));
      logger.info('instances launched', { owner: who.owner, image: request.image, size: request.size, ids: records.map((r) => r.task_id).join(',') });
      for (const r of records) run(r.task_id);
      return records;
    },

    instances: (who) => book.all().filter((t) => t.kind === 'instance' && (who.root || t.owner === who.owner))
      .sort((a, b) => (a.times.submit ?? '').localeCompare(b.times.submit ?? '')),

    async terminateInstances(who, ids) {
      const tasks = ids.map((id) => {
        const task = book.get(id);
        if (task === null || task.kind !== 'instance') throw new TaskRequestError('unknown', `no instance ${JSON.stringify(id)} on this node`);
        if (!who.root && who.owner !== task.owner) throw new TaskRequestError('owner', `${describeTask(task)} belongs to another owner`);
        return task;
      });
      const ended: TaskRecord[] = [];
      for (const task of tasks) ended.push(isDone(task.state) ? task : await terminateOne(task, `terminated by ${who.owner}`));
      // A done instance's record goes with its terminate: an instance is stateless.
      for (const task of tasks) {
        await runners.get(task.task_id)?.done;
        const latest = book.get(task.task_id);
        if (latest !== null && isDone(latest.state)) await removeTask(deps, latest);
      }
      return ended;
    },

    budget: view,

    async idle() {
      while (runners.size > 0) await Promise.all([...runners.values()].map((r) => r.done));
    },

    async start() {
      await recoverTasks(deps);
      for (const task of book.all()) if (!isDone(task.state) && task.state !== 'Pending:Reserved') run(task.task_id);
      tick = setInterval(() => void onTick().catch((error: unknown) => logger.warn('task tick failed', { error: describeError(error) })), deps.tickMs);
      tick.unref();
    },

    async stop() {
      stopping = true;
      if (tick !== null) clearInterval(tick);
      for (const r of runners.values()) r.controller.abort(new DaemonStopping('the daemon is stopping'));
      await Promise.all([...runners.values()].map((r) => r.done));
    },
  };

  async function terminateOne(task: TaskRecord, reason: string): Promise<TaskRecord> {
    if (isDone(task.state)) throw new TaskRequestError('state', `${describeTask(task)} is already ${task.state}`);
    await book.put({ ...task, terminating: reason });
    logger.info('task terminate asked', { task: task.task_id, reason });
    const runner = runners.get(task.task_id);
    if (runner) runner.controller.abort(new Error(reason));
    else run(task.task_id);
    return book.get(task.task_id)!;
  }

  /** Reservations past their time are ended; tasks without a runner (a failed teardown) are taken up again. */
  async function onTick(): Promise<void> {
    const at = now().getTime();
    for (const task of book.all()) {
      if (isDone(task.state) || runners.has(task.task_id)) continue;
      if (task.state === 'Pending:Reserved' && task.terminating === null) {
        if (task.expires !== null && Date.parse(task.expires) <= at) await terminateOne(task, `reservation expired: not confirmed within ${Math.round(settings.reservationTtlMs / 1000)} s`);
        continue;
      }
      run(task.task_id);
    }
  }

  return engine;
}

/** A done task's record and spool, gone. */
async function removeTask(deps: TaskContext, task: TaskRecord): Promise<void> {
  await removeSpool(spoolOf(deps.settings.taskDir, task.task_id));
  await deps.book.remove(task.task_id);
  deps.logger.info('task removed', { task: task.task_id, state: task.state });
}
