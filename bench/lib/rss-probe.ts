// The daemon's memory with N slivers, for bench/sync.ts. Run compiled, in two steps:
//   rss-probe.js N          makes a node of N slivers (account files, the database on disk) in a
//                           scratch directory, then runs the second step on it in a fresh process
//   rss-probe.js open DIR   does what the daemon does when it starts on that node: opens the
//                           database, observes the host, plans (the memoised desired state), and
//                           prints the resident set size in MB after GC, then the heap's share
// so that what is measured is what the daemon holds, not the making of the node (a 7 MB document
// generated and parsed). N = 0 gives the same process with no records: Node's own floor.
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

const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);
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
  gc();
  await new Promise((resolve) => setTimeout(resolve, 100));
  gc();
  const usage = process.memoryUsage();
  // RSS_PROBE_SNAPSHOT=FILE: a heap snapshot of the daemon's state, to see where the heap goes.
  if (process.env.RSS_PROBE_SNAPSHOT) writeHeapSnapshot(process.env.RSS_PROBE_SNAPSHOT);
  const kept = [store, host, desired, plan].length; // all four held until the figures are taken
  await store.close();
  return `${mb(usage.rss)} ${mb(usage.heapUsed)} ${mb(usage.heapTotal)} ${kept}`;
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
