// The on-demand work of the node: XenBEE's tasks (reserve, confirm an XSDL job, watch, terminate,
// remove) and Condor Cloud's instances (launch, list, terminate). Requests are checked and answered
// here, every one of them: who may (the owner, or root), what the state allows, what fits in the
// capacity budget. Each admitted task is then run by its runner (runner.ts), one at a time per
// task, all tasks at once; a periodic tick expires reservations and goes on with tasks a restart or
// a failed teardown left unfinished.
import type { TaskRecord } from '../db/types.js';
import { describeError } from '../util/errors.js';
import { budgetView, type BudgetFactors, type BudgetUse, type BudgetView, type Need } from './budget.js';
import {
  admitted, confirmation, launchRecords, newRecord, owned, ownedInstance, TaskRequestError, type LaunchRequest, type Requester,
} from './requests.js';
import { createRunners } from './runners.js';
import { removeSpool, spoolOf } from './spool.js';
import { isDone } from './states.js';
import { describeTask, type TaskContext } from './task-context.js';
import { SIZE_NEEDS } from './task-guest.js';
import { recoverTasks } from './task-recovery.js';

export { TaskRequestError, type LaunchRequest, type RequestProblem, type Requester } from './requests.js';

export interface EngineDeps extends TaskContext {
  /** The host's CPUs and memory, the factors, and what libvirt slivers hold of the budget. */
  readonly host: () => Need;
  readonly factors: BudgetFactors;
  readonly sliverUses: () => readonly BudgetUse[];
  /** How often reservations are expired and unfinished tasks taken up again. */
  readonly tickMs: number;
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
  const runners = createRunners(deps);
  const run = (id: string) => runners.run(id);
  let tick: NodeJS.Timeout | null = null;

  const view = () => budgetView(deps.host(), deps.factors, [...deps.sliverUses(), ...taskUses(book.all())]);

  const admit = (need: Need, count: number) => admitted(view(), need, count);

  const engine: TaskEngine = {
    async reserve(who) {
      const task = newRecord(deps, who, 'task');
      await book.put(task);
      logger.info('task reserved', { task: task.task_id, owner: who.owner });
      return { ticket: task.ticket, task_id: task.task_id };
    },

    async confirm(who, ticket, xsdl) {
      const { confirmed, job, need } = confirmation(deps, owned(book, who, ticket), ticket, xsdl);
      // No await between the budget's check and the record that takes the budget.
      admit(need, 1);
      const written = book.put(confirmed);
      if (job.ignored.length > 0) logger.info('task document: elements not honoured', { task: confirmed.task_id, ignored: job.ignored.join(', ') });
      await written;
      run(confirmed.task_id);
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
        : [owned(book, who, ticket)];
      if (remove) {
        const live = tasks.filter((t) => !isDone(t.state));
        if (ticket !== 'all' && live.length > 0) throw new TaskRequestError('state', `${describeTask(live[0]!)} is ${live[0]!.state}; only a done task is removed`);
        for (const t of tasks.filter((t) => isDone(t.state))) await removeTask(deps, t);
      }
      return tasks.sort((a, b) => (a.times.submit ?? '').localeCompare(b.times.submit ?? ''));
    },

    async terminate(who, ticket, reason) {
      const task = owned(book, who, ticket);
      return runners.terminate(task, reason.trim() === '' ? `terminated by ${who.owner}` : reason.trim());
    },

    async launch(who, request) {
      const records = launchRecords(deps, who, request);
      // The whole launch fits, or none of it is made.
      admit(SIZE_NEEDS[request.size], request.count);
      await Promise.all(records.map((r) => book.put(r)));
      logger.info('instances launched', { owner: who.owner, image: request.image, size: request.size, ids: records.map((r) => r.task_id).join(',') });
      for (const r of records) run(r.task_id);
      return records;
    },

    instances: (who) => book.all().filter((t) => t.kind === 'instance' && (who.root || t.owner === who.owner))
      .sort((a, b) => (a.times.submit ?? '').localeCompare(b.times.submit ?? '')),

    async terminateInstances(who, ids) {
      const tasks = ids.map((id) => ownedInstance(book, who, id));
      const ended: TaskRecord[] = [];
      for (const task of tasks) ended.push(isDone(task.state) ? task : await runners.terminate(task, `terminated by ${who.owner}`));
      // A done instance's record goes with its terminate: an instance is stateless.
      for (const task of tasks) {
        await runners.done(task.task_id);
        const latest = book.get(task.task_id);
        if (latest !== null && isDone(latest.state)) await removeTask(deps, latest);
      }
      return ended;
    },

    budget: view,

    idle: () => runners.idle(),

    async start() {
      await recoverTasks(deps);
      for (const task of book.all()) if (!isDone(task.state) && task.state !== 'Pending:Reserved') run(task.task_id);
      tick = setInterval(() => void expireAndResume().catch((error: unknown) => logger.warn('task tick failed', { error: describeError(error) })), deps.tickMs);
      tick.unref();
    },

    async stop() {
      if (tick !== null) clearInterval(tick);
      await runners.stop();
    },
  };

  /** Reservations past their time are ended; tasks without a runner (a failed teardown) are taken up again. */
  async function expireAndResume(): Promise<void> {
    const at = now().getTime();
    for (const task of book.all()) {
      if (isDone(task.state) || runners.has(task.task_id)) continue;
      if (task.state === 'Pending:Reserved' && task.terminating === null) {
        if (task.expires !== null && Date.parse(task.expires) <= at) await runners.terminate(task, `reservation expired: not confirmed within ${Math.round(settings.reservationTtlMs / 1000)} s`);
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
