// After a restart (even kill -9), before any runner goes on: what the on-demand guests' lifecycle
// holds is compared with the tasks' records. A guest whose task is done is removed, with that as its
// reason; a guest or a spool directory that no record names is left where it is and reported, never
// removed: a database that lost its tasks is no reason to destroy what users run (the lesson of the
// node that lost its database). Guests of tasks that are not done are their runners' to go on with.
import { describeError } from '../util/errors.js';
import { spoolIds } from './spool.js';
import { isDone } from './states.js';
import { describeTask, type TaskContext } from './task-context.js';

export async function recoverTasks(ctx: TaskContext): Promise<void> {
  const { book, guests, logger } = ctx;
  const byGuest = new Map(book.all().map((t) => [t.guest, t]));
  let owned: { name: string; kind: 'qemu' | 'lxc' }[] = [];
  try {
    owned = (await guests.list()).owned;
  } catch (error) {
    logger.warn('guests of tasks not looked over', { error: describeError(error) });
  }
  for (const guest of owned) {
    const task = byGuest.get(guest.name);
    if (task === undefined) {
      logger.warn('guest of no task left alone', { guest: guest.name, reason: 'no task record names it (a database rebuilt?); remove it by hand if it is not wanted' });
      continue;
    }
    if (!isDone(task.state)) continue;
    try {
      await guests.destroy(guest.name, guest.kind);
      logger.info('guest of a done task removed', { guest: guest.name, reason: `${describeTask(task)} is ${task.state}` });
    } catch (error) {
      logger.warn('guest of a done task not removed', { guest: guest.name, error: describeError(error) });
    }
  }
  for (const id of await spoolIds(ctx.settings.taskDir)) {
    if (book.get(id) === null) logger.warn('spool of no task left alone', { task: id, reason: 'no task record names it' });
  }
}
