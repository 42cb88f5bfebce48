// A node holding N slivers, in step with its records: the database contents, and account files
// (passwd, shadow, group, start records) as the Unix runtime would have left them. Lets the
// benchmarks run the real observe/plan code on 10,000 accounts without creating 10,000 accounts.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../../src/config/config.js';
import { defaultConfig } from '../../src/config/config.js';
import { applyDocument } from '../../src/db/records.js';
import { emptyDatabase, type AccountStatus, type NodeDatabase } from '../../src/db/types.js';
import { createLogger } from '../../src/log.js';
import { desiredState, specHash } from '../../src/reconcile/desired.js';
import type { AccountRuntime } from '../../src/runtimes/types.js';
import { createUnixRuntime } from '../../src/runtimes/unix/runtime.js';
import { parseSlicesDocument } from '../../src/slices/parse.js';
import { generateSlicesXml } from './generate-slices.js';

/** The generated slices expire in the generator's past; a node of records needs live ones. */
export function unexpiring(xml: string): string {
  return xml.replace(/ expiry="\d+"/g, '');
}

export interface NodeOfRecords {
  readonly dir: string;
  readonly xml: string;
  readonly database: NodeDatabase;
  readonly runtime: AccountRuntime;
  readonly config: Config;
}

export function nodeOfRecords(slices: number): NodeOfRecords {
  const config = { ...defaultConfig(), nodeId: 1, sliverUidMax: defaultConfig().sliverUidMin + 2 * slices + 100 };
  const xml = unexpiring(generateSlicesXml({ slices, nodeId: 1, onNodeFraction: 1, seed: 7 }));
  const doc = parseSlicesDocument(xml, { nodeId: 1, maxBytes: config.documentMaxBytes });
  const outcome = applyDocument(emptyDatabase(), doc, Math.floor(Date.now() / 1000));
  if (outcome.kind !== 'applied') throw new Error('generated document was not applied');

  const desired = desiredState(outcome.database, config.defaultRuntime);
  const accounts: Record<string, AccountStatus> = {};
  const dir = mkdtempSync(join(tmpdir(), 'nodemgr-bench-'));
  const runDir = join(dir, 'run');
  mkdirSync(join(runDir, 'initscripts'), { recursive: true });
  const passwd: string[] = ['root:x:0:0:root:/root:/bin/bash'];
  const shadow: string[] = ['root:*:19000:0:99999:7:::'];
  const group: string[] = ['root:x:0:'];
  desired.specs.forEach((spec, i) => {
    const uid = config.sliverUidMin + i;
    // a disabled sliver is stopped: no login shell, locked, no start recorded
    const shell = spec.enabled ? '/bin/bash' : config.disabledShell;
    passwd.push(`${spec.name}:x:${uid}:${uid}:nodemgr ${spec.kind}:/home/${spec.name}:${shell}`);
    shadow.push(`${spec.name}:${spec.enabled ? '*' : '!*'}:19000:0:99999:7:::`);
    group.push(`${spec.name}:x:${uid}:`);
    if (spec.enabled) writeFileSync(join(runDir, 'initscripts', `${spec.name}.started`), 'x\n');
    accounts[spec.name] = {
      name: spec.name, kind: spec.kind, state: spec.enabled ? 'running' : 'stopped', reason: null, since: new Date().toISOString(),
      appliedHash: specHash(spec), uid, attempts: 0,
    };
  });
  writeFileSync(join(dir, 'passwd'), passwd.join('\n') + '\n');
  writeFileSync(join(dir, 'shadow'), shadow.join('\n') + '\n');
  writeFileSync(join(dir, 'group'), group.join('\n') + '\n');
  return { dir, xml, database: { ...outcome.database, accounts }, runtime: runtimeOfNode(dir, config), config };
}

/** The Unix runtime over the account files that nodeOfRecords wrote in `dir`. */
export function runtimeOfNode(dir: string, config: Config): AccountRuntime {
  return createUnixRuntime(
    {
      uidMin: config.sliverUidMin, uidMax: config.sliverUidMax, homeBase: join(dir, 'home'),
      sliverShell: '/bin/bash', delegateShell: config.delegateShell, disabledShell: config.disabledShell, runDir: join(dir, 'run'),
      passwdFile: join(dir, 'passwd'), shadowFile: join(dir, 'shadow'), groupFile: join(dir, 'group'),
    },
    createLogger({ console: false }),
  );
}
