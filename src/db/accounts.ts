// Bookkeeping of account states in the database. Pure.
import type { AccountReport } from '../accounts/supervisor.js';
import type { AccountStatus, NodeDatabase } from './types.js';

/** Records what a supervisor reported; an account reported absent is forgotten. */
export function recordAccountReport(db: NodeDatabase, report: AccountReport, nowIso: string): NodeDatabase {
  const accounts = { ...db.accounts };
  if (report.state === 'absent') {
    delete accounts[report.name];
    return { ...db, accounts };
  }
  const previous = accounts[report.name];
  const next: AccountStatus = {
    name: report.name,
    kind: report.kind,
    state: report.state,
    reason: report.reason,
    since: previous && previous.state === report.state ? previous.since : nowIso,
    appliedHash: report.appliedHash !== undefined ? report.appliedHash : (previous?.appliedHash ?? null),
    uid: report.uid !== undefined ? report.uid : (previous?.uid ?? null),
    attempts: report.attempts,
  };
  accounts[report.name] = next;
  return { ...db, accounts };
}
