// The API over TLS end to end: a real daemon with a listener that takes client certificates its
// CA signed, called by Python's own xmlrpc.client with certificates made by openssl. The caller is
// the certificate's subject, allowed when the allowed-users file lists it (read again when it
// changes), and refused every slice method.
import test from 'ava';
import { appendFile, copyFile, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { issue, makeCa, opensslSubject, type KeyPair } from '../support/tls-keys.js';
import {
  freePort, isRoot, nodemgr, run, sandbox, startDaemonProcess, stopDaemonProcess, waitFor, type DaemonProcess, type Sandbox,
} from './support/host.js';

const clientSource = resolve(import.meta.dirname, 'support', 'xmlrpc_call.py');
const serial = isRoot ? test.serial : test.skip;

if (!isRoot) test.skip('API over TLS system tests: need root (the daemon manages accounts and cgroups)', () => undefined);

const USER_1 = '/OU=Persons/CN=test user 1';
const USER_2 = '/OU=Persons/CN=test user 2';

let box: Sandbox;
let daemon: DaemonProcess;
let client = clientSource;
let tlsPort = 0;
let allowedUsers = '';
let ca: KeyPair;
let server: KeyPair;
let user1: KeyPair;
let user2: KeyPair;
let stranger: KeyPair;

interface Answer {
  result?: unknown;
  fault?: number;
  message?: string;
  /** The connection failed: the Python exception's class. */
  error?: string;
}

/** One call over TLS with Python's xmlrpc.client, presenting `certificate` (none: no client certificate). */
async function call(certificate: KeyPair | null, method: string, ...args: unknown[]): Promise<Answer> {
  const env = {
    ...process.env,
    XMLRPC_TLS_CA: ca.certPath,
    XMLRPC_TLS_CERT: certificate?.certPath ?? '',
    XMLRPC_TLS_KEY: certificate?.keyPath ?? '',
  };
  const { stdout } = await run('/usr/bin/python3', [client, `tls:${tlsPort}`, method, JSON.stringify(args)], { env, timeout: 30_000 });
  return JSON.parse(stdout) as Answer;
}

const lines = (pattern: RegExp) => daemon.output().split('\n').filter((line) => pattern.test(line));

test.before(async () => {
  if (!isRoot) return;
  box = await sandbox({ authority_url: 'http://127.0.0.1:1/' });
  client = join(box.dir, 'xmlrpc_call.py');
  await copyFile(clientSource, client);
  ca = await makeCa(box.dir);
  server = await issue(ca, box.dir, 'node', '/O=nodemgr tests/CN=node 1', 'server');
  user1 = await issue(ca, box.dir, 'user1', USER_1);
  user2 = await issue(ca, box.dir, 'user2', USER_2);
  // A certificate with a listed subject, signed by a CA the node does not know.
  stranger = await issue(await makeCa(box.dir, 'other-ca', '/O=elsewhere/CN=Other CA'), box.dir, 'stranger', USER_1);
  allowedUsers = join(box.dir, 'allowed-users');
  await writeFile(allowedUsers, `# who may call over TLS\n\n${USER_1}\n`);
  tlsPort = await freePort();
  await appendFile(box.config, [
    'api_tls_address = 127.0.0.1', `api_tls_port = ${tlsPort}`,
    `api_tls_cert = ${server.certPath}`, `api_tls_key = ${server.keyPath}`, `api_tls_ca = ${ca.certPath}`,
    `allowed_users = ${allowedUsers}`, '',
  ].join('\n'));
  daemon = startDaemonProcess(box.config);
  await waitFor(`the TLS listener\n${daemon.output().slice(-2000)}`, async () => lines(/api listening .*tls=127\.0\.0\.1:\d+/).length > 0 || null);
});

test.after.always(async () => {
  if (!isRoot) return;
  if (daemon) await stopDaemonProcess(daemon);
  await box?.cleanup();
});

serial('the subjects are the ones openssl prints, and the start says what the listener presents and allows', async (t) => {
  t.is(await opensslSubject(user1.certPath), USER_1);
  t.is(await opensslSubject(user2.certPath), USER_2);
  t.is(lines(/info api tls certificate subject="\/O=nodemgr tests\/CN=node 1" .*client_ca="\/O=nodemgr tests\/CN=Test CA"/).length, 1);
  t.is(lines(/allowed users loaded .*subjects=1/).length, 1, daemon.output().slice(-2000));
});

serial('a listed certificate calls GetImages, Help and the introspection', async (t) => {
  t.deepEqual(await call(user1, 'GetImages'), { result: [] });
  t.regex(String((await call(user1, 'Help')).result), /GetImages\(\): /);
  t.true(((await call(user1, 'system.listMethods')).result as string[]).includes('GetImages'));
});

serial('a listed certificate is refused every slice method', async (t) => {
  for (const [method, args] of [['GetXIDs', []], ['GetSSHKeys', []], ['GetRSpec', ['pl_web']], ['DumpDatabase', []], ['Stop', ['pl_web']]] as const) {
    t.deepEqual(await call(user1, method, ...args), { fault: 108, message: `certificate ${USER_1}: Permission denied for ${method}.` }, method);
  }
  // Root's own image methods too: a remote caller only reads the cache.
  t.is((await call(user1, 'RemoveImage', 'anything')).fault, 108);
});

serial('an unlisted certificate gets 108 for everything, and the log names it once for many calls', async (t) => {
  const denied = { fault: 108, message: `certificate ${USER_2}: Permission denied: the subject is not listed in the node's allowed users.` };
  for (const method of ['GetImages', 'Help', 'system.listMethods']) t.deepEqual(await call(user2, method), denied, method);
  for (let i = 0; i < 10; i++) t.deepEqual(await call(user2, 'GetImages'), denied);
  const logged = lines(/api certificate refused/);
  t.is(logged.length, 1, logged.join('\n'));
  t.regex(logged[0]!, /^\S+ warn api certificate refused: subject not in allowed users subject="\/OU=Persons\/CN=test user 2" method=GetImages refused_since_last=0 /);
});

serial('a subject appended to allowed_users is let in at its next call, without a restart', async (t) => {
  const pid = daemon.child.pid;
  await appendFile(allowedUsers, `${USER_2}\n`);
  t.deepEqual(await call(user2, 'GetImages'), { result: [] });
  t.is(daemon.child.pid, pid);
  t.is(daemon.child.exitCode, null);
  t.is(lines(/allowed users loaded .*subjects=2/).length, 1);
  // Taken out again, it is refused again at once.
  await writeFile(allowedUsers, `${USER_1}\n`);
  t.is((await call(user2, 'GetImages')).fault, 108);
  t.deepEqual(await call(user1, 'GetImages'), { result: [] });
});

serial("a task belongs to the certificate subject that reserved it: another subject's ticket is refused", async (t) => {
  await writeFile(allowedUsers, `${USER_1}\n${USER_2}\n`);
  const reserved = (await call(user1, 'Reserve')).result as { ticket: string; task_id: string };
  t.regex(reserved.ticket, /^[0-9a-f]{32}$/);
  const [own] = (await call(user1, 'TaskStatus', reserved.ticket)).result as Array<Record<string, unknown>>;
  t.like(own, { task_id: reserved.task_id, state: 'Pending:Reserved', owner: `subject:${USER_1}`, exit_code: null, reason: null });
  for (const [method, args] of [['TaskStatus', [reserved.ticket]], ['Terminate', [reserved.ticket, 'not mine']], ['Confirm', [reserved.ticket, '<x/>']]] as const) {
    const answer = await call(user2, method, ...args);
    t.is(answer.fault, 108, method);
    t.regex(answer.message ?? '', /belongs to another owner/);
  }
  t.deepEqual((await call(user2, 'TaskStatus', 'all')).result, [], "the other subject sees none of user 1's tasks");
  t.like((await call(user1, 'Terminate', reserved.ticket, 'done with it')).result, { task_id: reserved.task_id });
  await waitFor('the reservation to end', async () =>
    ((await call(user1, 'TaskStatus', reserved.ticket)).result as Array<{ state: string }>)[0]!.state === 'Terminated' || null, 30_000);
  await writeFile(allowedUsers, `${USER_1}\n`);
});

serial('a connection without a client certificate, or with one of another CA, is refused at the handshake', async (t) => {
  for (const [what, certificate] of [['no certificate', null], ['another CA', stranger]] as const) {
    const answer = await call(certificate, 'GetImages');
    t.is(answer.result, undefined, what);
    t.is(answer.fault, undefined, `${what}: no XML-RPC answer at all, ${JSON.stringify(answer)}`);
    t.truthy(answer.error, what);
  }
  await waitFor('the refused handshakes in the log', async () => lines(/info api tls handshake refused peer=127\.0\.0\.1/).length >= 2 || null);
  const refused = lines(/api tls handshake refused/);
  t.is(lines(/info api tls handshake refused peer=127\.0\.0\.1 reason="peer did not return a certificate" refused_since_last=0$/).length, 1, refused.join('\n'));
  t.is(lines(/info api tls handshake refused peer=127\.0\.0\.1 reason="client certificate not verified: [A-Z_]+" refused_since_last=0$/).length, 1, refused.join('\n'));
  // And the listener still serves the others.
  t.deepEqual(await call(user1, 'GetImages'), { result: [] });
});

serial('turned on without its files, or with a file that is not there, the daemon does not start and says which', async (t) => {
  const conf = join(box.dir, 'broken.conf');
  await writeFile(conf, `api_tls_port = ${tlsPort}\napi_tls_cert = ${server.certPath}\napi_tls_ca = ${ca.certPath}\n`);
  const unset = await nodemgr(['daemon', '--config', conf]);
  t.is(unset.code, 2);
  t.regex(unset.stderr, /configuration error: .*broken\.conf line 1: api_tls_port: the TLS listener is on .* needs api_tls_key/);
  // The running daemon's own configuration but for the key: should the files not be checked
  // first, this daemon would stop at the running one's lock rather than start a second one.
  const running = await readFile(box.config, 'utf8');
  const withKey = (key: string) => running.replace(/^api_tls_key = .*$/m, `api_tls_key = ${key}`);
  const missing = join(box.dir, 'no-such.key');
  await writeFile(conf, withKey(missing));
  const unreadable = await nodemgr(['daemon', '--config', conf]);
  t.is(unreadable.code, 1);
  t.is(unreadable.stderr, `nodemgr: api_tls_key ${missing}: cannot be read: no such file\n`);
  await writeFile(conf, withKey(user1.keyPath));
  const mismatched = await nodemgr(['daemon', '--config', conf]);
  t.is(mismatched.code, 1);
  t.is(mismatched.stderr, `nodemgr: api_tls_key ${user1.keyPath}: not the private key of the certificate api_tls_cert ${server.certPath}\n`);
  t.is(daemon.child.exitCode, null, 'the running daemon is untouched');
});
