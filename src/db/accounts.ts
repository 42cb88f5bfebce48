// Bookkeeping of account states in the database: pure, but for the recorder that gathers reports.
import type { AccountReport, AccountStatus, NodeDatabase } from './types.js';

/** Records what a supervisor reported; an account reported absent is forgotten. */
export function recordAccountReport(db: NodeDatabase, report: AccountReport, nowIso: string): NodeDatabase {
  return recordAccountReports(db, [report], nowIso);
}

/**
 * Records reports in order, with one copy of the accounts table for all of them: a converge pass
 * of a thousand slivers brings thousands of reports, and a copy each made the bookkeeping quadratic.
 */
export function recordAccountReports(db: NodeDatabase, reports: readonly AccountReport[], nowIso: string): NodeDatabase {
  let accounts: Record<string, AccountStatus> | null = null;
  for (const report of reports) {
    const current = accounts ?? db.accounts;
    const previous = current[report.name];
    const next = report.state === 'absent' ? null : statusOf(previous, report, nowIso);
    // The same report twice (a refusal seen on every pass) leaves the database as it was.
    if (next === null ? previous === undefined : previous !== undefined && sameStatus(previous, next)) continue;
    accounts ??= { ...db.accounts };
    if (next === null) delete accounts[report.name];
    else accounts[report.name] = next;
  }
  return accounts === null ? db : { ...db, accounts };
}

function statusOf(previous: AccountStatus | undefined, report: AccountReport, nowIso: string): AccountStatus {
  return {
    name: report.name,
    kind: report.kind,
    state: report.state,
    reason: report.reason,
    since: previous && previous.state === report.state ? previous.since : nowIso,
    appliedHash: report.appliedHash !== undefined ? report.appliedHash : (previous?.appliedHash ?? null),
    uid: report.uid !== undefined ? report.uid : (previous?.uid ?? null),
    attempts: report.attempts,
  };
}

/** How many times as long as recording the last reports took the recorder gathers the next ones. */
const GATHER_PER_RECORD = 10;

/**
 * The supervisors' reports, recorded together at most `gatherMs` later: the operations that end in
 * that while (a batch of account changes ends hundreds at once, destroys end a few a millisecond) are
 * one update of the store, since each update copies the accounts table. On a large node the copy
 * itself takes a while (10,000 accounts: a millisecond or two, which every 20 ms was a tenth of the
 * daemon's CPU while they were removed), so the gathering also lasts ten times as long as the last
 * recording took. `flush` records what is waiting at once (before the store closes).
 */
export function accountReportRecorder(store: { update(fn: (db: NodeDatabase) => NodeDatabase): void }, now: () => Date, gatherMs = 20) {
  let waiting: AccountReport[] = [];
  let scheduled: NodeJS.Timeout | null = null;
  let lastRecordMs = 0;
  const flush = () => {
    if (scheduled !== null) clearTimeout(scheduled);
    scheduled = null;
    const reports = waiting;
    waiting = [];
    if (reports.length === 0) return;
    const started = performance.now();
    store.update((db) => recordAccountReports(db, reports, now().toISOString()));
    lastRecordMs = performance.now() - started;
  };
  return {
    record(report: AccountReport): void {
      waiting.push(report);
      scheduled ??= setTimeout(flush, Math.max(gatherMs, GATHER_PER_RECORD * lastRecordMs));
    },
    flush,
  };
}

function sameStatus(a: AccountStatus, b: AccountStatus): boolean {
  return (
    a.name === b.name && a.kind === b.kind && a.state === b.state && a.reason === b.reason && a.since === b.since &&
    a.appliedHash === b.appliedHash && a.uid === b.uid && a.attempts === b.attempts
  );
}
