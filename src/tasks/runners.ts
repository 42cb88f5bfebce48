// The engine's runners: at most one per task (runner.ts), each with its own abort; a terminate is
// written into the task's record first, so that a runner that is not there (a restart, a teardown
// that failed) carries it out when it is started.
import type { TaskRecord } from '../db/types.js';
import { describeError } from '../util/errors.js';
import { TaskRequestError } from './requests.js';
import { DaemonStopping, runTask } from './runner.js';
import { isDone } from './states.js';
import { describeTask, type TaskContext } from './task-context.js';

export interface Runners {
  /** Starts the task's runner unless one runs (or the engine is stopping). */
  run(id: string): void;
  has(id: string): boolean;
  /** Resolves when the task's runner (if any) has ended. */
  done(id: string): Promise<void>;
  /** Records the terminate with its reason and wakes or starts the task's runner to carry it out. */
  terminate(task: TaskRecord, reason: string): Promise<TaskRecord>;
  /** Resolves when no runner runs. */
  idle(): Promise<void>;
  /** Stops every runner where it is (a restart goes on from there); no new one starts. */
  stop(): Promise<void>;
}

export function createRunners(ctx: TaskContext): Runners {
  const runners = new Map<string, { controller: AbortController; done: Promise<void> }>();
  let stopping = false;
  const all = () => Promise.all([...runners.values()].map((r) => r.done));
  const pool: Runners = {
    run(id) {
      if (stopping || runners.has(id)) return;
      const controller = new AbortController();
      const done = runTask(ctx, id, controller.signal)
        .catch((error: unknown) => ctx.logger.error('task runner failed', { task: id, error: describeError(error) }))
        .finally(() => runners.delete(id));
      runners.set(id, { controller, done });
    },
    has: (id) => runners.has(id),
    done: async (id) => runners.get(id)?.done,
    async terminate(task, reason) {
      if (isDone(task.state)) throw new TaskRequestError('state', `${describeTask(task)} is already ${task.state}`);
      await ctx.book.put({ ...task, terminating: reason });
      ctx.logger.info('task terminate asked', { task: task.task_id, reason });
      const runner = runners.get(task.task_id);
      if (runner) runner.controller.abort(new Error(reason));
      else pool.run(task.task_id);
      return ctx.book.get(task.task_id)!;
    },
    async idle() {
      while (runners.size > 0) await all();
    },
    async stop() {
      stopping = true;
      for (const r of runners.values()) r.controller.abort(new DaemonStopping('the daemon is stopping'));
      await all();
    },
  };
  return pool;
}
