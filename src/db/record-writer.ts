// The one entry point through which the node's records change, whoever changes them: the
// authority's document (fetched, pushed, the last good one), a ticket, an API call (Create,
// Destroy, Stop, Start, ReCreate, SetLoans), or the node itself (expiry, adoption). Each change
// names its source, is applied to the records as they are at that moment (never to a copy read
// before an await), and is logged with what it changed.
import type { Logger } from '../log.js';
import type { DatabaseStore } from './store.js';
import type { NodeDatabase, NodeRecord } from './types.js';

export type RecordSource =
  | { readonly kind: 'document'; readonly from: string }
  | { readonly kind: 'ticket'; readonly method: string; readonly caller: string }
  | { readonly kind: 'api'; readonly method: string; readonly caller: string; readonly detail?: string }
  | { readonly kind: 'node'; readonly why: 'expiry' | 'adoption' };

export type Records = NodeDatabase['records'];

export interface RecordWriter {
  /**
   * Replaces the records with change(records as they are now); the same object back changes
   * nothing. Returns the record keys that changed.
   */
  apply(source: RecordSource, change: (records: Records) => Records): string[];
  /** The same, resolved once the change is on disk (rejects with the write's error). */
  applyDurably(source: RecordSource, change: (records: Records) => Records): Promise<string[]>;
  /** Puts these records in place of the ones of their keys, durably. */
  put(source: RecordSource, records: readonly NodeRecord[]): Promise<string[]>;
}

export function describeSource(source: RecordSource): string {
  switch (source.kind) {
    case 'document': return `document from ${source.from}`;
    case 'ticket': return `${source.method} by ${source.caller}`;
    case 'api': return `${source.method} by ${source.caller}`;
    case 'node': return source.why;
  }
}

/** Keys whose record is not the same object in both (records are replaced, never changed in place). */
function changedKeys(before: Records, after: Records): string[] {
  const keys: string[] = [];
  for (const key in after) if (before[key] !== after[key]) keys.push(key);
  for (const key in before) if (!(key in after)) keys.push(key);
  return keys.sort();
}

export function recordWriter(store: DatabaseStore, logger: Logger): RecordWriter {
  const apply: RecordWriter['apply'] = (source, change) => {
    let changed: string[] = [];
    store.update((db) => {
      const records = change(db.records);
      if (records === db.records) return db;
      changed = changedKeys(db.records, records);
      return { ...db, records };
    });
    // A document's own log line says what it did; a full list of its keys would be long.
    if (changed.length > 0 && source.kind !== 'document') {
      logger.info('records changed', {
        source: describeSource(source), records: changed.join(','), detail: source.kind === 'api' ? source.detail : undefined,
      });
    }
    return changed;
  };
  const applyDurably: RecordWriter['applyDurably'] = async (source, change) => {
    const changed = apply(source, change);
    await store.flush();
    return changed;
  };
  return {
    apply,
    applyDurably,
    put: (source, records) => applyDurably(source, (current) => {
      const next = { ...current };
      for (const record of records) next[record.record_key] = record;
      return next;
    }),
  };
}
