// The daemon's memory with N slivers, for bench/sync.ts. Run compiled, in two steps:
//   rss-probe.js N          makes a node of N slivers (account files, the database on disk) in a
//                           scratch directory, then runs the second step on it in a fresh process
//   rss-probe.js open DIR   does what the daemon does when it starts on that node: opens the
//                           database, observes the host, plans (the memoised desired state), then
//                           idles as the daemon does between polls, and prints its resident set
//                           size right after the start and once settled, in MB, the seconds it took
//                           to settle, and the heap's share
// so that what is measured is what the daemon holds, not the making of the node (a 7 MB document
// generated and parsed). No collection is forced: the figure is the one an operator sees, after
// V8's memory reducer has given back what the start's allocations grew (it acts once the process
// has been quiet for a while). N = 0 gives the same process with no records: Node's own floor.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { fileURLToPath } from 'node:url';
import type { Config } from '../../src/config/config.js';
import { openDatabase } from '../../src/db/store.js';
import { createLogger } from '../../src/log.js';
import { desiredOfRecords } from '../../src/reconcile/desired.js';
import { planReconcile } from '../../src/reconcile/plan.js';
import { nodeOfRecords, runtimeOfNode } from './node-of-records.js';

/** How long the idle daemon is watched; V8's memory reducer acted within 10–90 s in every run here. */
const SETTLE_WINDOW_MS = 150_000;
const mb = (bytes: number): string => (bytes / 1024 / 1024).toFixed(0);

async function makeNode(count: number): Promise<string> {
  const node = nodeOfRecords(count);
  const logger = createLogger({ console: false });
  const { store } = await openDatabase({ path: join(node.dir, 'db.json'), lockPath: join(node.dir, 'db.lock'), logger });
  store.update(() => node.database);
  await store.close();
  writeFileSync(join(node.dir, 'config.json'), JSON.stringify(node.config));
  return node.dir;
}

async function openNode(dir: string): Promise<string> {
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Config;
  const logger = createLogger({ console: false });
  const { store } = await openDatabase({ path: join(dir, 'db.json'), lockPath: join(dir, 'db.lock'), logger });
  const runtime = runtimeOfNode(dir, config);
  const host = await runtime.observe({ readOnly: true });
  const desired = desiredOfRecords(config.defaultRuntime)(store.data);
  const plan = planReconcile({ desired, host, accounts: store.data.accounts });
  const atStart = process.memoryUsage().rss;
  // Idle as the daemon does: a timer now and then, a little garbage. Settled is the last sample;
  // it settled when the resident size last fell by more than 2 MB.
  const ticking = setInterval(() => Array.from({ length: 100 }, (_, i) => ({ i })), 1000);
  let last = atStart;
  let settledAt = 0;
  const started = Date.now();
  while (Date.now() - started < SETTLE_WINDOW_MS) {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const rss = process.memoryUsage().rss;
    if (rss < last - 2 * 1024 * 1024) settledAt = (Date.now() - started) / 1000;
    last = rss;
  }
  clearInterval(ticking);
  const usage = process.memoryUsage();
  // RSS_PROBE_SNAPSHOT=FILE: a heap snapshot of the daemon's state, to see where the heap goes.
  if (process.env.RSS_PROBE_SNAPSHOT) writeHeapSnapshot(process.env.RSS_PROBE_SNAPSHOT);
  const kept = [store, host, desired, plan].length; // all four held until the figures are taken
  await store.close();
  return `${mb(atStart)} ${mb(usage.rss)} ${settledAt.toFixed(0)} ${mb(usage.heapUsed)} ${mb(usage.heapTotal)} ${kept}`;
}

if (process.argv[2] === 'open') {
  process.stdout.write(`${await openNode(process.argv[3]!)}\n`);
} else {
  const count = Number(process.argv[2] ?? '10000');
  const dir = await makeNode(count);
  try {
    const out = execFileSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), 'open', dir], { encoding: 'utf8' });
    process.stdout.write(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
