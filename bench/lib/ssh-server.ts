// The ssh gateway alone, for bench/ssh.ts: one delegate whose key the bench holds, over a database
// of 1,000 slivers with 3 keys each (so that the key lookup is the daemon's). Prints "port N" once
// listening and serves until its parent closes stdin.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NodeDatabase } from '../../src/db/types.js';
import { createLogger } from '../../src/log.js';
import { startSshGateway } from '../../src/ssh/gateway.js';
import { generateKeyPair, loadOrCreateHostKey } from '../../src/ssh/host-key.js';

const publicKey = process.argv[2]!;
const records: Record<string, unknown> = {
  delegate_bench_ctl: { record_key: 'delegate_bench_ctl', type: 'delegate', name: 'bench_ctl', keys: [publicKey] },
};
for (let i = 0; i < 1_000; i++) {
  const keys = [0, 1, 2].map((i) => generateKeyPair(`bench${i}@nodemgr`).public);
  records[`sliver_bench_${i}`] = { record_key: `sliver_bench_${i}`, type: 'sliver', name: `bench_${i}`, keys, rspec: { enabled: 1 } };
}
const database = { records, accounts: {} } as unknown as NodeDatabase;
const dir = mkdtempSync(join(tmpdir(), 'nodemgr-bench-ssh-'));
const hostKey = await loadOrCreateHostKey(dir);
const gateway = await startSshGateway({
  host: '127.0.0.1', port: 0, hostKey: hostKey.privateKey,
  maxSessions: 1_000, maxSessionsPerAccount: 1_000, idleTimeoutMs: 60_000, maxAuthAttempts: 6, loginGraceMs: 30_000, maxStartups: 1_000,
  maxRequestBytes: 16 * 1024 * 1024, database: () => database,
  sliverAccount: async () => null, delegateUid: async () => null, cgroupFiles: () => [],
  callApi: async () => '<?xml version="1.0"?><methodResponse><params><param><value><int>1</int></value></param></params></methodResponse>',
  logger: createLogger({ console: false }),
});
process.stdout.write(`port ${gateway.port}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  void gateway.close().finally(() => {
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  });
});
