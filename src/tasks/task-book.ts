// The tasks' and instances' records in the node database (db/record-section.ts), found also by
// their ticket, which is what XenBEE's clients keep.
import { recordSection, type RecordSection } from '../db/record-section.js';
import type { DatabaseStore } from '../db/store.js';
import type { TaskRecord } from '../db/types.js';

export interface TaskBook extends RecordSection<TaskRecord> {
  byTicket(ticket: string): TaskRecord | null;
}

export function taskBook(store: DatabaseStore): TaskBook {
  const section = recordSection(store, 'tasks', (task) => task.task_id);
  return { ...section, byTicket: (ticket) => section.all().find((t) => t.ticket === ticket) ?? null };
}
