// One section of the node database kept by key (tasks by id, clusters by name): the one way the
// on-demand engines read and write their records. Each change is in memory at once, so that a check
// and what it allows need no await between them, and durable when its promise resolves, so that a
// restart, even after kill -9, finds each record as it was last answered for.
import type { DatabaseStore } from './store.js';
import type { NodeDatabase } from './types.js';

type Section = 'tasks' | 'clusters';
type RecordOf<S extends Section> = NodeDatabase[S][string];

export interface RecordSection<T> {
  get(key: string): T | null;
  all(): T[];
  put(record: T): Promise<void>;
  remove(key: string): Promise<void>;
}

export function recordSection<S extends Section>(store: DatabaseStore, section: S, keyOf: (record: RecordOf<S>) => string): RecordSection<RecordOf<S>> {
  const records = () => store.data[section] as Readonly<Record<string, RecordOf<S>>>;
  return {
    get: (key) => (Object.prototype.hasOwnProperty.call(records(), key) ? records()[key]! : null),
    all: () => Object.values(records()),
    async put(record) {
      store.update((db) => ({ ...db, [section]: { ...db[section], [keyOf(record)]: record } }));
      await store.flush();
    },
    async remove(key) {
      store.update((db) => {
        if (!Object.prototype.hasOwnProperty.call(db[section], key)) return db;
        const { [key]: _removed, ...rest } = db[section] as Record<string, RecordOf<S>>;
        return { ...db, [section]: rest };
      });
      await store.flush();
    },
  };
}
