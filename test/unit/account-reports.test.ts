// The bookkeeping of the supervisors' reports: in order, one copy of the accounts table per batch,
// the same database object back when nothing changed, and the recorder's one update per moment,
// gathered for longer after a slow one.
import test from 'ava';
import { accountReportRecorder, recordAccountReport, recordAccountReports } from '../../src/db/accounts.js';
import { emptyDatabase } from '../../src/db/types.js';
import type { AccountReport, NodeDatabase } from '../../src/db/types.js';

const report = (name: string, state: AccountReport['state'], extra: Partial<AccountReport> = {}): AccountReport =>
  ({ name, kind: 'sliver', state, reason: null, attempts: 0, ...extra });

test('reports are recorded in order: the last word on an account wins, absent forgets it', (t) => {
  const db = recordAccountReports(emptyDatabase(), [
    report('a', 'creating'), report('b', 'creating'), report('a', 'stopped', { uid: 70001 }),
    report('a', 'running', { appliedHash: 'h1' }), report('b', 'absent'), report('c', 'failed', { reason: 'no', attempts: 2 }),
  ], '2026-12-06T00:00:00.000Z');
  t.deepEqual(Object.keys(db.accounts).sort(), ['a', 'c']);
  t.like(db.accounts.a, { state: 'running', uid: 70001, appliedHash: 'h1' });
  t.like(db.accounts.c, { state: 'failed', reason: 'no', attempts: 2 });
  // One report at a time gives the same.
  let one: NodeDatabase = emptyDatabase();
  for (const r of [report('a', 'creating'), report('a', 'stopped', { uid: 70001 }), report('a', 'running', { appliedHash: 'h1' })]) {
    one = recordAccountReport(one, r, '2026-12-06T00:00:00.000Z');
  }
  t.deepEqual(one.accounts.a, db.accounts.a);
});

test('reports that change nothing give back the same database object (no write follows)', (t) => {
  const db = recordAccountReports(emptyDatabase(), [report('a', 'running')], '2026-12-06T00:00:00.000Z');
  t.is(recordAccountReports(db, [report('a', 'running'), report('gone', 'absent')], '2026-12-06T00:01:00.000Z'), db);
  const since = recordAccountReports(db, [report('a', 'running', { attempts: 0, reason: null })], 'later');
  t.is(since.accounts.a!.since, '2026-12-06T00:00:00.000Z', 'the state kept keeps its time');
});

test('the recorder makes one update of the reports of a moment, and flush records at once', async (t) => {
  let db: NodeDatabase = emptyDatabase();
  let updates = 0;
  const store = { update: (fn: (d: NodeDatabase) => NodeDatabase) => { updates++; db = fn(db); } };
  const recorder = accountReportRecorder(store, () => new Date(0), 5);
  for (let i = 0; i < 100; i++) recorder.record(report(`s${i}`, 'running'));
  t.is(updates, 0, 'not yet');
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.is(updates, 1);
  t.is(Object.keys(db.accounts).length, 100);
  recorder.record(report('s0', 'absent'));
  recorder.flush();
  t.is(updates, 2);
  t.false('s0' in db.accounts);
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.is(updates, 2, 'nothing left to record after the flush');
});

test('after a slow recording the recorder gathers for ten times as long (a large node copies a large table)', async (t) => {
  let db: NodeDatabase = emptyDatabase();
  const recorded: number[] = [];
  const RECORD_MS = 10;
  const store = {
    update: (fn: (d: NodeDatabase) => NodeDatabase) => {
      // A recording that takes RECORD_MS, as the copy of 10,000 accounts' table would.
      for (const started = performance.now(); performance.now() - started < RECORD_MS; );
      db = fn(db);
      recorded.push(performance.now());
    },
  };
  const recorder = accountReportRecorder(store, () => new Date(0), 5);
  recorder.record(report('a', 'running'));
  recorder.flush();
  const asked = performance.now();
  recorder.record(report('b', 'running'));
  await new Promise((resolve) => setTimeout(resolve, 5 * RECORD_MS));
  t.is(recorded.length, 1, 'still gathering after five times the last recording, though gatherMs is 5 ms');
  for (const end = Date.now() + 10_000; recorded.length < 2 && Date.now() < end; ) await new Promise((resolve) => setTimeout(resolve, 10));
  t.is(recorded.length, 2, 'then recorded');
  // At least ten times the last recording (less a millisecond of the timers' rounding).
  t.true(recorded[1]! - RECORD_MS - asked >= 10 * RECORD_MS - 1, `gathered for ${(recorded[1]! - RECORD_MS - asked).toFixed(1)} ms`);
  t.true('b' in db.accounts);
});
