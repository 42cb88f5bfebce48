// Bookkeeping of account states in the database. Pure.
import type { AccountReport, AccountStatus, NodeDatabase } from './types.js';

/** Records what a supervisor reported; an account reported absent is forgotten. */
export function recordAccountReport(db: NodeDatabase, report: AccountReport, nowIso: string): NodeDatabase {
  const previous = db.accounts[report.name];
  if (report.state === 'absent') {
    if (!previous) return db;
    const accounts = { ...db.accounts };
    delete accounts[report.name];
    return { ...db, accounts };
  }
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
  // The same report twice (a refusal seen on every pass) leaves the database as it was.
  if (previous && sameStatus(previous, next)) return db;
  return { ...db, accounts: { ...db.accounts, [report.name]: next } };
}

function sameStatus(a: AccountStatus, b: AccountStatus): boolean {
  return (
    a.name === b.name && a.kind === b.kind && a.state === b.state && a.reason === b.reason && a.since === b.since &&
    a.appliedHash === b.appliedHash && a.uid === b.uid && a.attempts === b.attempts
  );
}
