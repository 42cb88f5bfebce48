// The gateway's sessions and failed logins in the daemon's metrics, on loopback with the ssh2
// client (no root: a delegate's session runs nothing on the host): a session counted open while
// it lasts, refused logins by reason, a session over the limit counted as refused.
import test from 'ava';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { emptyDatabase, type NodeDatabase } from '../../src/db/types.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics/registry.js';
import { startSshGateway, type Gateway } from '../../src/ssh/gateway.js';
import { generateKeyPair, loadOrCreateHostKey } from '../../src/ssh/host-key.js';
import { parseExposition, valueOf } from '../support/exposition.js';
import { heldApi } from '../support/held-api.js';
import { sshLogin, sshRequest } from '../support/ssh-client.js';
import { waitFor } from '../support/wait.js';

const pair = generateKeyPair('user@test');
const stranger = generateKeyPair('stranger@test');
const database = {
  records: {
    delegate_ctl: { record_key: 'delegate_ctl', type: 'delegate', name: 'ctl', keys: [pair.public] },
    sliver_off: { record_key: 'sliver_off', type: 'sliver', name: 'off', keys: [pair.public], rspec: { enabled: 0 } },
  },
  accounts: {},
} as unknown as NodeDatabase;
const metrics = createMetrics({ version: '1', db: () => emptyDatabase(), images: () => [], defaultRuntime: 'unix', now: () => new Date() });
let gateway: Gateway;
// An API that answers once released: a session stays open as long as the test needs.
const api = heldApi(() => 'answered\n');

test.before(async () => {
  const hostKey = await loadOrCreateHostKey(await mkdtemp(join(tmpdir(), 'nodemgr-gw-')));
  gateway = await startSshGateway({
    host: '127.0.0.1', port: 0, hostKey: hostKey.privateKey,
    maxSessions: 10, maxSessionsPerAccount: 1, idleTimeoutMs: 60_000, maxAuthAttempts: 6, loginGraceMs: 60_000, maxStartups: 100,
    maxRequestBytes: 1024, database: () => database,
    sliverAccount: async () => null, delegateUid: async () => 70_123, cgroupFiles: () => [],
    callApi: api.callApi,
    logger: createLogger({ console: false }),
    observer: metrics.ssh,
  });
});
test.after.always(() => gateway?.close());

const scrape = async () => parseExposition(await metrics.text());

const login = (username: string, privateKey: string) => sshLogin(gateway.port, username, privateKey);
const request = sshRequest;

test.serial('every kind and reason is there from the start, at 0', async (t) => {
  const e = await scrape();
  for (const kind of ['delegate', 'sliver', 'guest']) {
    t.is(valueOf(e, 'nodemgr_ssh_sessions_open', { kind }), 0);
    t.is(valueOf(e, 'nodemgr_ssh_sessions_total', { kind }), 0);
  }
  for (const reason of ['unknown_user', 'disabled', 'key_not_allowed', 'bad_signature', 'method']) t.is(valueOf(e, 'nodemgr_ssh_failed_logins_total', { reason }), 0);
  t.is(e.types.get('nodemgr_ssh_failed_logins_total'), 'counter');
});

test.serial('a delegate\'s session is open while it lasts; one over the account\'s limit is refused', async (t) => {
  const [first, second] = await Promise.all([login('ctl', pair.private), login('ctl', pair.private)]);
  const answer = request(first!, 'a');
  await waitFor('the request at the API', () => api.calls >= 1, { timeoutMs: 10_000, intervalMs: 10 });
  let e = await scrape();
  t.is(valueOf(e, 'nodemgr_ssh_sessions_open', { kind: 'delegate' }), 1);
  t.is(valueOf(e, 'nodemgr_ssh_sessions_total', { kind: 'delegate' }), 1);
  const refused = await request(second!, 'b');
  t.is(refused.code, 1);
  t.is(valueOf(await scrape(), 'nodemgr_ssh_sessions_refused_total'), 1);
  api.release();
  t.is((await answer).code, 0);
  e = await scrape();
  t.is(valueOf(e, 'nodemgr_ssh_sessions_open', { kind: 'delegate' }), 0);
  // The refused one was never open.
  t.is(valueOf(e, 'nodemgr_ssh_sessions_total', { kind: 'delegate' }), 1);
  first!.end();
  second!.end();
});

test.serial('failed logins by reason: a key the account lacks, a name with no account, a disabled sliver, a password', async (t) => {
  await t.throwsAsync(login('ctl', stranger.private));
  await t.throwsAsync(login('nobody_here', pair.private));
  await t.throwsAsync(login('off', pair.private));
  await t.throwsAsync(new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.on('ready', () => resolve(client));
    client.on('error', reject);
    client.connect({ host: '127.0.0.1', port: gateway.port, username: 'ctl', password: 'guess' });
  }));
  const e = await scrape();
  t.is(valueOf(e, 'nodemgr_ssh_failed_logins_total', { reason: 'key_not_allowed' }), 1);
  t.is(valueOf(e, 'nodemgr_ssh_failed_logins_total', { reason: 'unknown_user' }), 1);
  t.is(valueOf(e, 'nodemgr_ssh_failed_logins_total', { reason: 'disabled' }), 1);
  t.is(valueOf(e, 'nodemgr_ssh_failed_logins_total', { reason: 'method' }), 1);
  t.is(valueOf(e, 'nodemgr_ssh_failed_logins_total', { reason: 'bad_signature' }), 0);
});
