// The servers bench/api.ts measures, each run in its own process so that the load generator does
// not share its event loop:
//   nodemgr  the daemon's API server and method table over a database of 1,000 slivers, callers
//            identified as the daemon identifies them (/proc/net/tcp, then the account files),
//            every call counted and timed in the metrics, repeated reads answered from the
//            answer cache while the database does not change: as the daemon wires them (app/api.ts)
//   nodemgr-uncached  the same without the answer cache: every call decoded, run and encoded
//   xmlrpc   the `xmlrpc` package's own server answering GetRSpec from the same records
//   bare     node:http answering every request with one fixed GetRSpec response (the ceiling)
// Prints "port N" once listening, then serves until its parent closes stdin.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeResponse } from '../../src/api/codec.js';
import { createApiMethods } from '../../src/api/methods.js';
import { startApiServer } from '../../src/api/server.js';
import { sliverRecords } from '../../src/db/records.js';
import { openDatabase } from '../../src/db/store.js';
import { createLogger } from '../../src/log.js';
import { BENCH_SLIVERS } from './api-server-size.js';
import { nodeOfRecords } from './node-of-records.js';
import { recordWriter } from '../../src/db/record-writer.js';
import { createMetrics } from '../../src/metrics/registry.js';
import { callerIdentifier, measuredAnswers } from '../../src/app/api.js';

const mode = process.argv[2];
const node = nodeOfRecords(BENCH_SLIVERS);
const logger = createLogger({ console: false });
const cleanup = () => rmSync(node.dir, { recursive: true, force: true });

async function serve(): Promise<{ port: number; close(): Promise<void> | void }> {
  const records = sliverRecords(node.database);
  if (mode === 'bare') {
    const body = Buffer.from(encodeResponse(records[0]!.rspec));
    const server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/xml', 'content-length': body.length });
        res.end(body);
      });
    });
    server.keepAliveTimeout = 15_000;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { port: (server.address() as { port: number }).port, close: () => void server.close() };
  }
  if (mode === 'xmlrpc') {
    const xmlrpc = createRequire(import.meta.url)('xmlrpc') as typeof import('xmlrpc');
    const byName = new Map(records.map((r) => [r.name, r.rspec]));
    const server = xmlrpc.createServer({ host: '127.0.0.1', port: 0 });
    server.on('GetRSpec', (_error: unknown, params: unknown[], callback: (e: unknown, v?: unknown) => void) => {
      const rspec = byName.get(String(params[0]));
      if (rspec) callback(null, rspec);
      else callback({ faultCode: 102, faultString: 'no such sliver' });
    });
    const http = (server as unknown as { httpServer: import('node:http').Server }).httpServer;
    await new Promise<void>((resolve) => (http.listening ? resolve() : http.once('listening', () => resolve())));
    return { port: (http.address() as { port: number }).port, close: () => void http.close() };
  }
  if (mode === 'nodemgr' || mode === 'nodemgr-uncached') {
    const dir = mkdtempSync(join(tmpdir(), 'nodemgr-bench-api-'));
    const { store } = await openDatabase({ path: join(dir, 'db.json'), lockPath: join(dir, 'db.lock'), logger });
    store.update(() => node.database);
    const refuse = () => {
      throw new Error('the benchmark only reads');
    };
    const methods = createApiMethods({
      store, records: recordWriter(store, logger), logger, now: () => new Date(), authorityDelegate: null, defaultRuntime: 'unix',
      converge: async () => refuse(), submit: refuse, observe: async () => refuse(), verifyTicket: refuse, verifyPush: refuse, acceptDocument: async () => refuse(),
    });
    const metrics = createMetrics({ version: 'bench', db: () => store.data, images: () => [], defaultRuntime: 'unix', now: () => new Date() });
    const { call, answers } = measuredAnswers(methods, store, metrics);
    const server = await startApiServer({
      port: 0, host: '127.0.0.1', socketPath: join(dir, 'api.sock'), maxRequestBytes: 16 * 1024 * 1024, logger,
      identify: callerIdentifier(node.runtime), call, ...(mode === 'nodemgr' ? { answers } : {}),
    });
    return {
      port: server.port!,
      async close() {
        await server.close();
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  throw new Error(`unknown server ${mode}; expected nodemgr, nodemgr-uncached, xmlrpc or bare`);
}

const server = await serve();
process.stdout.write(`port ${server.port}\n`);
process.stdin.resume();
process.stdin.on('end', async () => {
  await server.close();
  cleanup();
  process.exit(0);
});
