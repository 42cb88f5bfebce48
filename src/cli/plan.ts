// `nodemgr plan`: what a sync would do now, computed from the authority's document (or a given
// file), the database and the host, without changing any of them.
import { readFile } from 'node:fs/promises';
import { fetchDocument, redactUrl } from '../authority/fetch.js';
import type { Config } from '../config/config.js';
import { createRuntime } from '../app/factories.js';
import { databasePath } from '../app/paths.js';
import { applyDocument, expireRecords } from '../db/records.js';
import { readDatabaseSnapshot } from '../db/store.js';
import { emptyDatabase, type NodeDatabase } from '../db/types.js';
import { createLogger } from '../log.js';
import { desiredState } from '../reconcile/desired.js';
import { planReconcile } from '../reconcile/plan.js';
import { parseSlicesDocument } from '../slices/parse.js';

async function currentDatabase(config: Config): Promise<NodeDatabase> {
  try {
    return await readDatabaseSnapshot(databasePath(config));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return emptyDatabase();
    throw error;
  }
}

export async function runPlan(config: Config, options: { json: boolean; document: string | null }): Promise<number> {
  const source = options.document ?? redactUrl(new URL(config.authorityUrl));
  let body: Buffer;
  if (options.document) {
    body = await readFile(options.document);
  } else {
    const fetched = await fetchDocument({
      url: config.authorityUrl, caFile: config.authorityCaFile, timeoutMs: config.authorityTimeoutMs,
      maxBytes: config.documentMaxBytes, etag: null, lastModified: null,
    });
    if (fetched.kind !== 'document') throw new Error(`${source}: unexpected "not modified" answer to an unconditional request`);
    body = fetched.body;
  }
  const doc = parseSlicesDocument(body, { nodeId: config.nodeId, maxBytes: config.documentMaxBytes, source });
  const nowSeconds = Math.floor(Date.now() / 1000);
  const db = await currentDatabase(config);
  const outcome = applyDocument(db, doc, nowSeconds);
  const next = outcome.kind === 'applied' ? { ...outcome.database, records: expireRecords(outcome.database.records, nowSeconds).records } : db;

  const runtime = createRuntime(config, createLogger({ console: false }));
  const host = await runtime.observe({ readOnly: true });
  const desired = desiredState(next, config.defaultRuntime);
  const plan = planReconcile({ desired, host, accounts: next.accounts });

  if (options.json) {
    process.stdout.write(JSON.stringify({ source, document: outcome.kind === 'applied' ? { timestamp: doc.timestamp, changes: outcome.changes } : outcome, skipped: doc.skipped, ops: plan.ops.map(({ spec: _spec, ...rest }) => rest), refusals: plan.refusals, rejectedLoans: desired.rejectedLoans }, null, 2) + '\n');
    return 0;
  }
  const out: string[] = [`document from ${source}, timestamp ${doc.timestamp}`];
  if (outcome.kind === 'older') {
    out.push(`  older than the document in force (${outcome.inForce}): a sync would ignore it`);
  } else {
    const c = outcome.changes;
    for (const [label, keys] of [['add', c.added], ['update', c.updated], ['remove', c.removed], ['keep (newer on the node)', c.keptNewer]] as const) {
      if (keys.length > 0) out.push(`  ${label}: ${keys.join(', ')}`);
    }
  }
  for (const s of doc.skipped) out.push(`  skipped ${s.what}: ${s.reason}`);
  out.push('', plan.ops.length === 0 ? 'host operations: none (the host is in step)' : 'host operations:');
  for (const op of plan.ops) out.push(`  ${op.action.padEnd(9)} ${op.kind.padEnd(8)} ${op.account}  (${op.why})`);
  for (const r of plan.refusals) out.push(`  REFUSED   ${r.kind.padEnd(8)} ${r.account}  (${r.reason})`);
  for (const r of desired.rejectedLoans) {
    out.push(`  loan rejected: ${r.lender} -> ${r.loan.recipient} ${r.loan.amount} ${r.loan.resource}: ${r.reason}`);
  }
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}
