// Holds what the daemon holds for a node of N slivers (records, account states, the observed
// host, the plan) and prints the process's resident set size in MB. Run compiled, by bench/sync.ts.
import { rmSync } from 'node:fs';
import { desiredState } from '../../src/reconcile/desired.js';
import { planReconcile } from '../../src/reconcile/plan.js';
import { nodeOfRecords } from './node-of-records.js';

const count = Number(process.argv[2] ?? '10000');
const node = count > 0 ? nodeOfRecords(count) : null;
let kept: unknown = null;
if (node) {
  const host = await node.runtime.observe({ readOnly: true });
  const desired = desiredState(node.database, 'unix');
  const plan = planReconcile({ desired, host, accounts: node.database.accounts });
  kept = { node, host, desired, plan };
  rmSync(node.dir, { recursive: true, force: true });
}
(globalThis as { gc?: () => void }).gc?.();
await new Promise((r) => setTimeout(r, 100));
(globalThis as { gc?: () => void }).gc?.();
process.stdout.write(`${(process.memoryUsage().rss / 1024 / 1024).toFixed(0)}${kept ? '' : ''}\n`);
