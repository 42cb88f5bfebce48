// The gateway's limits, on loopback with the ssh2 client (no root needed: delegates' sessions run
// nothing on the host): sessions per account, the idle timeout, the login grace, connections not
// yet logged in, attempts per connection, and a request larger than the API takes.
import test from 'ava';
import { mkdtemp } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import type { NodeDatabase } from '../../src/db/types.js';
import { createLogger } from '../../src/log.js';
import { startSshGateway, type Gateway } from '../../src/ssh/gateway.js';
import { generateKeyPair, loadOrCreateHostKey } from '../../src/ssh/host-key.js';
import { heldApi } from '../support/held-api.js';
import { sshLogin, sshRequest } from '../support/ssh-client.js';
import { waitFor } from '../support/wait.js';

const pair = generateKeyPair('user@test');
const other = generateKeyPair('other@test');
const database = {
  records: {
    delegate_ctl: { record_key: 'delegate_ctl', type: 'delegate', name: 'ctl', keys: [pair.public] },
    // A sliver whose account cannot be looked up (the gateway's services fail for it).
    sliver_broken: { record_key: 'sliver_broken', type: 'sliver', name: 'broken', keys: [pair.public], rspec: {} },
  },
  accounts: {},
} as unknown as NodeDatabase;
let gateway: Gateway;
// An API that answers once released: sessions stay open as long as a test needs; a session's
// request reaches it (api.calls) once the session is open.
const api = heldApi((caller, body) => `${caller.kind} ${caller.name} ${caller.uid} sent ${body.length} bytes\n`);

test.before(async () => {
  const hostKey = await loadOrCreateHostKey(await mkdtemp(join(tmpdir(), 'nodemgr-gw-')));
  gateway = await startSshGateway({
    host: '127.0.0.1', port: 0, hostKey: hostKey.privateKey,
    maxSessions: 10, maxSessionsPerAccount: 2, idleTimeoutMs: 1_500, maxAuthAttempts: 2, loginGraceMs: 1_000, maxStartups: 3,
    maxRequestBytes: 1024, database: () => database,
    sliverAccount: async (name) => {
      if (name === 'broken') throw new Error('the account files cannot be read');
      return null;
    },
    delegateUid: async () => 70_123, cgroupFiles: () => [],
    callApi: api.callApi,
    logger: createLogger({ console: false }),
  });
});
test.after.always(() => gateway?.close());

const login = (privateKey = pair.private, username = 'ctl') => sshLogin(gateway.port, username, privateKey);
const request = sshRequest;

test.serial('a delegate\'s request is answered as that delegate; a third session at once is refused with a message', async (t) => {
  const clients = await Promise.all([login(), login(), login()]);
  const before = api.calls;
  const first = request(clients[0]!, 'a');
  const second = request(clients[1]!, 'bb');
  // Both sessions are open once both requests have reached the API (which holds them there).
  await waitFor('the first two requests at the API', () => api.calls - before >= 2, { timeoutMs: 10_000, intervalMs: 10 });
  const third = await request(clients[2]!, 'ccc');
  t.is(third.code, 1);
  t.regex(third.out, /too many sessions \(the limit of 2 for ctl\)/);
  api.release();
  t.deepEqual(await first, { out: 'delegate ctl 70123 sent 1 bytes\n', code: 0 });
  t.deepEqual(await second, { out: 'delegate ctl 70123 sent 2 bytes\n', code: 0 });
  const big = await request(clients[2]!, 'x'.repeat(2_000));
  t.is(big.code, 2);
  t.regex(big.out, /<int>102<\/int>.*request too large: more than 1024 bytes/s);
  for (const c of clients) c.end();
});

test.serial('an idle connection is closed; one that never logs in is closed after the grace', async (t) => {
  const client = await login();
  const closed = await new Promise<number>((resolve) => {
    const started = Date.now();
    client.on('close', () => resolve(Date.now() - started));
  });
  t.true(closed >= 1_000, `closed after ${closed} ms`);
  const silent = connect(gateway.port, '127.0.0.1');
  silent.on('data', () => undefined);
  await new Promise<void>((resolve) => silent.on('close', () => resolve()));
});

/** Connects and waits: the gateway's ident line (true, and the socket), or a close before it (false). */
function knock(): Promise<{ admitted: boolean; socket: Socket }> {
  return new Promise((resolve) => {
    const socket = connect(gateway.port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.once('data', () => resolve({ admitted: true, socket }));
    socket.once('close', () => resolve({ admitted: false, socket }));
  });
}

test.serial('past ssh_max_startups connections not logged in, one more is closed at once; one that goes makes room', async (t) => {
  // Three that connect and say nothing (the limit is 3), each told the gateway's ident line.
  const silent = await Promise.all([knock(), knock(), knock()]);
  t.deepEqual(silent.map((s) => s.admitted), [true, true, true]);
  t.false((await knock()).admitted, 'the fourth is closed before a word of ssh');
  silent[0]!.socket.destroy();
  // The gateway sees that close a moment later; then there is room for one.
  let probe: { admitted: boolean; socket: Socket } | null = null;
  await waitFor('room for one connection', async () => {
    probe = await knock();
    return probe.admitted;
  }, { timeoutMs: 10_000, intervalMs: 20 });
  t.true(probe!.admitted);
  for (const s of [...silent, probe!]) s.socket.destroy();
  // Once they are gone, logins get in as before.
  await waitFor('the gateway to see them go', async () => (await knock()).admitted, { timeoutMs: 10_000, intervalMs: 20 });
  const client = await login();
  t.truthy(client);
  client.end();
});

let next = 0;

test.serial('a connection that offers more keys than allowed is cut', async (t) => {
  const keys = [other.private, generateKeyPair('third@test').private, pair.private];
  const error = await new Promise<Error | null>((resolve) => {
    const client = new ssh2.Client();
    client.on('ready', () => {
      client.end();
      resolve(null);
    });
    client.on('error', resolve);
    client.on('close', () => resolve(new Error('connection closed by the gateway')));
    client.connect({
      host: '127.0.0.1', port: gateway.port, username: 'ctl',
      authHandler: (_methods, _partial, done) => {
        const key = keys[next++];
        done((key ? { type: 'publickey', username: 'ctl', key } : false) as Parameters<typeof done>[0]);
      },
    });
  });
  t.truthy(error, 'the right key came third, after the two attempts allowed');
});

test.serial('a session that cannot be started says why and gives its place back: the per-account limit is not used up', async (t) => {
  // Two places per account: a leaked one per failure would refuse the third attempt as "too many".
  for (let attempt = 1; attempt <= 3; attempt++) {
    const client = await login(pair.private, 'broken');
    const { out, code } = await request(client, '');
    client.end();
    t.is(code, 1);
    t.regex(out, /nodemgr: the session could not be started: the account files cannot be read/, `attempt ${attempt}`);
  }
});
