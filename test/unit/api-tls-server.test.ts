// The API's TLS listener, without root: a real handshake on loopback with certificates made by
// openssl, Node's own https client, and a dispatcher that answers who it was called by.
import test from 'ava';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { describeCaller, ownerOf, tlsCaller, UNIDENTIFIED } from '../../src/api/identity.js';
import { startApiServer, type ApiServer } from '../../src/api/server.js';
import { memoryLogger } from '../../src/log.js';
import { issue, makeCa, type KeyPair } from '../support/tls-keys.js';

let dir = '';
let ca: KeyPair;
let user: KeyPair;
let stranger: KeyPair;
let server: ApiServer;
let caPem = '';
const logger = memoryLogger();

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nodemgr-tls-server-'));
  ca = await makeCa(dir);
  caPem = await readFile(ca.certPath, 'utf8');
  const node = await issue(ca, dir, 'node', '/O=nodemgr tests/CN=node 1', 'server');
  user = await issue(ca, dir, 'user', '/OU=Persons/CN=test user 1');
  stranger = await issue(await makeCa(dir, 'other-ca', '/CN=Other CA'), dir, 'stranger', '/OU=Persons/CN=test user 1');
  server = await startApiServer({
    port: null, host: '127.0.0.1', socketPath: join(dir, 'api.sock'), maxRequestBytes: 64 * 1024,
    tls: {
      host: '127.0.0.1', port: 0,
      cert: await readFile(node.certPath, 'utf8'), key: await readFile(node.keyPath, 'utf8'), ca: caPem,
    },
    identify: async (socket, transport) => (transport === 'tls' ? tlsCaller(socket as TLSSocket) : UNIDENTIFIED),
    call: async (caller) => `${describeCaller(caller)} owner=${ownerOf(caller)}`,
    logger,
  });
});

test.after.always(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const CALL = '<?xml version="1.0"?><methodCall><methodName>Who</methodName><params></params></methodCall>';

/** POSTs one call over TLS presenting `certificate`; the answer's body, or the connection's error. */
async function post(certificate: KeyPair | null): Promise<{ status: number; body: string } | { error: string }> {
  const [cert, key] = certificate ? [await readFile(certificate.certPath), await readFile(certificate.keyPath)] : [undefined, undefined];
  return new Promise((resolve) => {
    const req = request({
      host: '127.0.0.1', port: server.tlsPort!, method: 'POST', path: '/', ca: [caPem], cert, key, agent: false,
      headers: { 'content-type': 'text/xml', 'content-length': Buffer.byteLength(CALL) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (e) => resolve({ error: e.message }));
    });
    req.on('error', (e: Error & { code?: string }) => resolve({ error: e.code ?? e.message }));
    req.end(CALL);
  });
}

test('a client certificate the CA signed is the caller, by its subject in the one-line form', async (t) => {
  t.true(typeof server.tlsPort === 'number' && server.tlsPort > 0);
  t.is(server.port, null);
  const answer = await post(user);
  t.like(answer, { status: 200 });
  t.regex('body' in answer ? answer.body : '', /<string>certificate \/OU=Persons\/CN=test user 1 owner=subject:\/OU=Persons\/CN=test user 1<\/string>/);
  t.true(logger.lines.some((line) => /^info api listening tcp=off .*tls=127\.0\.0\.1:\d+$/.test(line)));
});

test('no client certificate, or one of another CA, gets no answer at all', async (t) => {
  for (const certificate of [null, stranger]) {
    const answer = await post(certificate);
    t.false('status' in answer, JSON.stringify(answer));
  }
  // The refusals are logged with the reason (the second only once the server has checked it).
  const refused = () => logger.lines.filter((line) => line.startsWith('info api tls handshake refused'));
  for (let i = 0; i < 50 && refused().length < 2; i++) await new Promise((r) => setTimeout(r, 20));
  t.is(refused().length, 2, logger.lines.join('\n'));
  t.regex(refused()[0]!, /peer=127\.0\.0\.1 reason="peer did not return a certificate"/);
  t.regex(refused()[1]!, /peer=127\.0\.0\.1 reason="client certificate not verified: [A-Z_]+"/);
  // Again from the same peer for the same reason: counted, not logged.
  await post(null);
  await new Promise((r) => setTimeout(r, 100));
  t.is(refused().length, 2);
});
