// The tasks' and instances' records in the node database: the one place the engine reads and
// writes them. Every change is on disk before the engine acts on it (put waits for the flush), so
// that a restart, even after kill -9, finds each task in the state it had reached.
import type { DatabaseStore } from '../db/store.js';
import type { TaskRecord } from '../db/types.js';

export interface TaskBook {
  get(id: string): TaskRecord | null;
  byTicket(ticket: string): TaskRecord | null;
  all(): TaskRecord[];
  /**
   * Writes the record (a new one or a change): in memory at once, so that a check and what it
   * allows need no await between them; the promise resolves once it is durable.
   */
  put(record: TaskRecord): Promise<void>;
  remove(id: string): Promise<void>;
}

export function taskBook(store: DatabaseStore): TaskBook {
  const tasks = () => store.data.tasks;
  const write = (record: TaskRecord) => {
    store.update((db) => ({ ...db, tasks: { ...db.tasks, [record.task_id]: record } }));
    return store.flush();
  };
  return {
    get: (id) => (Object.prototype.hasOwnProperty.call(tasks(), id) ? tasks()[id]! : null),
    byTicket: (ticket) => Object.values(tasks()).find((t) => t.ticket === ticket) ?? null,
    all: () => Object.values(tasks()),
    put: write,
    async remove(id) {
      store.update((db) => {
        if (!Object.prototype.hasOwnProperty.call(db.tasks, id)) return db;
        const { [id]: _removed, ...rest } = db.tasks;
        return { ...db, tasks: rest };
      });
      await store.flush();
    },
  };
}
