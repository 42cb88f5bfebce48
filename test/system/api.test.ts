// The API end to end, as root: a real daemon, called by Python's own xmlrpc.client over TCP and
// the Unix socket, run as root, as a sliver, as a delegate and as an unrelated user. Tickets and
// pushes are signed with xmlsec1 and openssl.
import test, { type ExecutionContext } from 'ava';
import { copyFile, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import { makeAuthority, signDetached, signTicket, type Authority } from '../support/authority-keys.js';
import {
  accountPrefix, freePort, isRoot, passwdEntries, processesOf, removeAccounts, run, sandbox, serveDocument,
  startDaemonProcess, stopDaemonProcess, waitFor, type DaemonProcess, type DocumentServer, type Sandbox,
} from './support/host.js';
import { publicKeys, slicesXml, type TestDelegate, type TestSlice } from './support/slices.js';

const prefix = accountPrefix();
const name = (suffix: string) => `${prefix}_${suffix}`;
// Run from the sandbox: other users may not be able to enter the checkout (a clone under /root).
const clientSource = resolve(import.meta.dirname, 'support', 'xmlrpc_call.py');
let client = clientSource;
const serial = isRoot ? test.serial : test.skip;

if (!isRoot) test.skip('API system tests: need root (to call the API as other users)', () => undefined);

let server: DocumentServer;
let box: Sandbox;
let daemon: DaemonProcess;
let authority: Authority;
let port = 0;
let socketPath = '';
let keys: string[] = [];
let slices: TestSlice[] = [];
let delegates: TestDelegate[] = [];
let timestamp = 1000;

interface Answer {
  result?: unknown;
  fault?: number;
  message?: string;
}

/** Calls the API with Python's xmlrpc.client as `user` (an account name, or a uid). */
async function call(user: string | number, transport: 'tcp' | 'unix', method: string, ...args: unknown[]): Promise<Answer> {
  const target = transport === 'tcp' ? `tcp:${port}` : `unix:${socketPath}`;
  const as = user === 'root' ? [] : ['setpriv', ...(typeof user === 'number' ? [`--reuid=${user}`, `--regid=${user}`] : [`--reuid=${user}`, `--regid=${user}`]), '--clear-groups'];
  const argv = [...as, '/usr/bin/python3', client, target, method, JSON.stringify(args)];
  const { stdout } = await run(argv[0]!, argv.slice(1), { timeout: 30_000 });
  return JSON.parse(stdout) as Answer;
}

const NOBODY = 65534;

function publish() {
  timestamp += 10;
  server.set(slicesXml(timestamp, slices, delegates));
}

async function synced(what: string, check: () => Promise<boolean>) {
  daemon.child.kill('SIGHUP');
  await waitFor(`${what}\n${daemon.output().slice(-2000)}`, async () => (await check()) || null);
}

const db = () => readDatabaseSnapshot(join(box.stateDir, 'nodemgr.json'));
const stateOf = async (account: string) => (await db()).accounts[account]?.state ?? 'absent';
const shellOf = async (account: string) => (await passwdEntries(prefix)).find((e) => e.name === account)?.shell;

test.before(async () => {
  if (!isRoot) return;
  keys = await publicKeys(3);
  box = await sandbox({ authority_url: 'http://127.0.0.1:1/' });
  authority = await makeAuthority(box.dir);
  client = join(box.dir, 'xmlrpc_call.py');
  await copyFile(clientSource, client);
  slices = [
    { name: name('web'), users: { 1: keys[0]! }, controllers: [name('ctl')], resources: { cpu_share: 10, initscript: '#!/bin/sh\nexec sleep 600\n' } },
    { name: name('other'), users: { 2: keys[1]! }, resources: { cpu_share: 4 } },
    { name: name('lazy'), instantiation: 'delegated', controllers: [name('ctl')], users: { 1: keys[0]! } },
  ];
  delegates = [{ name: name('ctl'), keys: [keys[2]!] }, { name: name('plc'), keys: [keys[2]!] }];
  server = await serveDocument(slicesXml(timestamp, slices, delegates));
  port = await freePort();
  socketPath = join(box.dir, 'run', 'api.sock');
  const config = (await readFile(box.config, 'utf8'))
    .replace(/^authority_url = .*$/m, `authority_url = ${server.url}`)
    .replace(/^api_port = .*$/m, `api_port = ${port}`);
  await (await import('node:fs/promises')).writeFile(
    box.config,
    `${config}authority_cert = ${authority.certPath}\nauthority_delegate = ${name('plc')}\n`,
  );
  daemon = startDaemonProcess(box.config);
  await waitFor(`the slivers to run\n${daemon.output().slice(-2000)}`, async () =>
    (await stateOf(name('web'))) === 'running' && (await stateOf(name('other'))) === 'running' && (await stateOf(name('ctl'))) === 'running');
});

serial('nodemgr call: the operator\'s client on the Unix socket, with the xmlrpc package', async (t) => {
  const cli = resolve(import.meta.dirname, '../../dist/src/cli/main.js');
  const nodemgr = (config: string, ...args: string[]) =>
    run(process.execPath, [cli, 'call', '--config', config, ...args]).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  const rspec = await nodemgr(box.config, 'GetRSpec', name('web'));
  t.is(rspec.code, 0, rspec.stderr);
  t.is((JSON.parse(rspec.stdout) as Record<string, number>).cpu_share, 10);
  const loans = await nodemgr(box.config, 'SetLoans', name('web'), JSON.stringify([[name('nosuch'), 'cpu_share', 1]]));
  t.is(loans.code, 1);
  t.regex(loans.stderr, /^nodemgr: fault 102: Invalid argument 2 \(loans\)/);
  const unknown = await nodemgr(box.config, 'NoSuchMethod');
  t.regex(unknown.stderr, /^nodemgr: fault 100: /);
  const elsewhere = join(box.dir, 'no-daemon.conf');
  await (await import('node:fs/promises')).writeFile(elsewhere, `api_socket = ${join(box.dir, 'none.sock')}\n`);
  const down = await nodemgr(elsewhere, 'Help');
  t.is(down.code, 1);
  t.regex(down.stderr, /API socket .*none\.sock is not answering \(ENOENT\); is the daemon running\?/);
});

test.after.always(async () => {
  if (!isRoot) return;
  if (daemon) await stopDaemonProcess(daemon, 'SIGKILL');
  await server?.close();
  await box?.cleanup();
  await removeAccounts(prefix);
});

function isFault(t: ExecutionContext, answer: Answer, code: number, message?: RegExp) {
  t.is(answer.fault, code, JSON.stringify(answer));
  if (message) t.regex(answer.message ?? '', message);
}

serial('introspection and Help answer anyone, on both transports', async (t) => {
  for (const transport of ['tcp', 'unix'] as const) {
    const methods = (await call(NOBODY, transport, 'system.listMethods')).result as string[];
    for (const m of ['Help', 'GetXIDs', 'GetSSHKeys', 'Create', 'Destroy', 'Start', 'Stop', 'ReCreate', 'GetEffectiveRSpec', 'GetRSpec',
      'GetLoans', 'SetLoans', 'GetRecord', 'Ticket', 'AdminTicket', 'DumpDatabase', 'CreateSliver', 'DeleteSliver', 'GetSliverStatus',
      'DeliverSlices', 'system.methodHelp', 'system.methodSignature']) {
      t.true(methods.includes(m), m);
    }
    t.regex((await call(NOBODY, transport, 'Help')).result as string, /SetLoans\(sliver_name, loans\)/);
    t.deepEqual((await call(NOBODY, transport, 'system.methodSignature', 'SetLoans')).result, [['int', 'string', 'array']]);
    t.regex((await call(NOBODY, transport, 'system.methodHelp', 'Stop')).result as string, /stays stopped/);
  }
});

serial('the caller is recognised on both transports: root, a sliver, a delegate, nobody', async (t) => {
  for (const transport of ['tcp', 'unix'] as const) {
    const rootView = (await call('root', transport, 'GetXIDs')).result as Record<string, number>;
    t.deepEqual(Object.keys(rootView).sort(), [name('other'), name('web')]);
    const web = (await passwdEntries(prefix)).find((e) => e.name === name('web'))!;
    t.is(rootView[name('web')], web.uid);
    t.deepEqual(Object.keys((await call(name('web'), transport, 'GetXIDs')).result as object), [name('web')], 'a sliver sees itself');
    t.deepEqual(Object.keys((await call(name('ctl'), transport, 'GetXIDs')).result as object), [name('web')], 'a delegate sees what it controls');
    isFault(t, await call(NOBODY, transport, 'GetXIDs'), 108, /Permission denied/);
    const sshKeys = (await call(name('web'), transport, 'GetSSHKeys')).result as Record<string, string>;
    t.deepEqual(sshKeys, { [name('web')]: `${keys[0]}\n` });
  }
});

serial('the authorization matrix of a sliver method', async (t) => {
  const web = name('web');
  t.is(((await call('root', 'tcp', 'GetRSpec', web)).result as Record<string, number>).cpu_share, 10);
  t.is(((await call(web, 'unix', 'GetRSpec', web)).result as Record<string, number>).cpu_share, 10);
  t.is(((await call(name('ctl'), 'tcp', 'GetRSpec', web)).result as Record<string, number>).cpu_share, 10);
  isFault(t, await call(name('other'), 'unix', 'GetRSpec', web), 108);
  isFault(t, await call(name('plc'), 'tcp', 'GetRSpec', web), 108);
  isFault(t, await call(NOBODY, 'tcp', 'GetRSpec', web), 108);
  t.regex((await call('root', 'unix', 'DumpDatabase')).result as string, /"records"/);
  isFault(t, await call(web, 'unix', 'DumpDatabase'), 108);
  isFault(t, await call(name('ctl'), 'unix', 'AdminTicket', '<slices/>'), 108);
});

serial('faults 100, 101 and 102 say what was wrong', async (t) => {
  isFault(t, await call('root', 'tcp', 'NoSuchMethod'), 100, /NoSuchMethod/);
  isFault(t, await call('root', 'tcp', 'GetRSpec'), 101, /got 0, expecting 1/);
  isFault(t, await call('root', 'unix', 'GetRSpec', 'a', 'b'), 101, /got 2, expecting 1/);
  isFault(t, await call('root', 'tcp', 'GetRSpec', 7), 102, /argument 1 \(sliver_name\): expected a string, got an integer/);
  isFault(t, await call('root', 'tcp', 'GetRSpec', 'nosuch_sliver'), 102, /no sliver named "nosuch_sliver"/);
  isFault(t, await call('root', 'tcp', 'SetLoans', name('web'), 'x'), 102, /argument 2 \(loans\): expected an array/);
});

serial('Stop holds a sliver stopped across syncs until Start', async (t) => {
  const web = name('web');
  t.deepEqual(await call(name('ctl'), 'unix', 'Stop', web), { result: 1 });
  await waitFor('web to stop', async () => (await stateOf(web)) === 'stopped' && (await processesOf(web)).length === 0);
  t.is(await shellOf(web), '/usr/sbin/nologin');
  publish();
  await synced('a sync after Stop', async () => (await db()).records['timestamp']?.timestamp === timestamp);
  t.is(await stateOf(web), 'stopped', 'a new document does not undo Stop');
  t.true((await call('root', 'tcp', 'GetSliverStatus', web)).result !== undefined);
  t.deepEqual(await call(web, 'tcp', 'Start', web), { result: 1 });
  await waitFor('web to run again', async () => (await stateOf(web)) === 'running' && (await processesOf(web)).some((p) => p.includes('sleep 600')));
  const status = (await call('root', 'tcp', 'GetSliverStatus', web)).result as Record<string, unknown>;
  t.is(status.state, 'running');
  t.is(status.stopped_by_api, false);
});

serial('Create and Destroy act on delegated slivers only', async (t) => {
  const lazy = name('lazy');
  t.is(await stateOf(lazy), 'absent', 'a delegated sliver waits for its Create');
  isFault(t, await call(name('ctl'), 'tcp', 'Create', name('web')), 102, /not a delegated sliver/);
  isFault(t, await call(name('other'), 'tcp', 'Create', lazy), 108);
  t.deepEqual(await call(name('ctl'), 'tcp', 'CreateSliver', lazy), { result: 1 });
  await waitFor('lazy to be created', async () => (await stateOf(lazy)) === 'running');
  t.truthy((await passwdEntries(prefix)).find((e) => e.name === lazy));
  t.deepEqual(await call(name('ctl'), 'unix', 'Destroy', lazy), { result: 1 });
  await waitFor('lazy to be destroyed', async () => !(await passwdEntries(prefix)).some((e) => e.name === lazy));
});

serial('SetLoans moves resources at once and refuses a loan that does not fit', async (t) => {
  const web = name('web');
  const other = name('other');
  const before = ((await call('root', 'tcp', 'GetEffectiveRSpec', other)).result as Record<string, number>).cpu_share!;
  t.deepEqual(await call(web, 'tcp', 'SetLoans', web, [[other, 'cpu_share', 3]]), { result: 1 });
  t.is(((await call('root', 'tcp', 'GetEffectiveRSpec', other)).result as Record<string, number>).cpu_share, before + 3);
  t.is(((await call('root', 'tcp', 'GetEffectiveRSpec', web)).result as Record<string, number>).cpu_share, 7);
  t.deepEqual((await call(name('ctl'), 'unix', 'GetLoans', web)).result, [[other, 'cpu_share', 3]]);
  isFault(t, await call(web, 'tcp', 'SetLoans', web, [[other, 'cpu_share', 10]]), 102, /loan 1 .* does not fit/);
  isFault(t, await call(web, 'tcp', 'SetLoans', web, [[other, 'disk_max', 1]]), 102, /loan/);
  isFault(t, await call(web, 'tcp', 'SetLoans', web, [[other, 'cpu_share', -1]]), 102, /non-negative integer/);
  t.deepEqual((await call(web, 'unix', 'GetLoans', web)).result, [[other, 'cpu_share', 3]], 'a refused set changes nothing');
  t.deepEqual(await call(web, 'tcp', 'SetLoans', web, []), { result: 1 });
});

// A client that writes a whole call and closes its socket at once, before the daemon has looked
// at it: what is left of its socket (TIME_WAIT) the kernel lists with uid 0, whoever opened it.
const CALL_AND_CLOSE = `
import json, socket, sys, xmlrpc.client
port, times, method = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = xmlrpc.client.dumps(tuple(json.loads(sys.argv[4])), method).encode()
for _ in range(times):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /RPC2 HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Type: text/xml\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
    s.close()
`;

serial('a caller that closes its connection right after its call is nobody, not root', async (t) => {
  const web = name('web');
  const other = name('other');
  t.deepEqual((await call('root', 'tcp', 'GetLoans', web)).result, []);
  await run('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '/usr/bin/python3', '-c', CALL_AND_CLOSE,
    String(port), '20', 'SetLoans', JSON.stringify([web, [[other, 'cpu_share', 1]]])]);
  // Taken for root, any one of the twenty would have set the loan within milliseconds.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  t.deepEqual((await call('root', 'tcp', 'GetLoans', web)).result, [], 'no loan was set by the closed calls');
});

/** The ticket the node took, for the test of its replay once a document has removed its slice. */
let acceptedTicket = '';

function ticketSlice(extra: Partial<TestSlice> = {}): string {
  timestamp += 10;
  return slicesXml(timestamp, [{ name: name('tkt'), users: { 1: keys[0]! }, controllers: [name('ctl')], resources: { cpu_share: 2 }, ...extra }]);
}

serial('a signed ticket is accepted once; forged, unsigned, expired and replayed ones change nothing', async (t) => {
  const valid = await signTicket(ticketSlice(), authority.keyPath, authority.certPath);
  acceptedTicket = valid;
  t.deepEqual(await call(name('ctl'), 'unix', 'Ticket', valid), { result: 1 });
  await waitFor('the ticket sliver to run', async () => (await stateOf(name('tkt'))) === 'running');
  isFault(t, await call(name('ctl'), 'unix', 'Ticket', valid), 102, /replayed or stale/);

  const tampered = (await signTicket(ticketSlice(), authority.keyPath, authority.certPath)).replace('<value>2</value>', '<value>90</value>');
  isFault(t, await call(name('ctl'), 'tcp', 'Ticket', tampered), 102, /ticket/);
  const wrongKey = await signTicket(ticketSlice(), authority.wrongKeyPath, authority.wrongCertPath);
  isFault(t, await call(name('ctl'), 'tcp', 'Ticket', wrongKey), 102, /ticket/);
  isFault(t, await call(name('ctl'), 'tcp', 'Ticket', ticketSlice()), 102, /not signed|signature/i);
  const expired = await signTicket(ticketSlice({ expiry: 1000 }), authority.keyPath, authority.certPath);
  isFault(t, await call(name('ctl'), 'tcp', 'Ticket', expired), 102, /expired/);
  isFault(t, await call(NOBODY, 'tcp', 'Ticket', valid), 108);
  const record = (await db()).records[`sliver_${name('tkt')}`] as { rspec: Record<string, number> };
  t.is(record.rspec.cpu_share, 2, 'nothing refused changed the record');
});

serial('DeliverSlices applies a signed push from root or the authority delegate only', async (t) => {
  slices = slices.map((s) => (s.name === name('other') ? { ...s, resources: { cpu_share: 6 } } : s));
  timestamp += 10;
  const document = slicesXml(timestamp, slices, delegates);
  const signature = await signDetached(Buffer.from(document), authority.keyPath);
  isFault(t, await call(name('ctl'), 'unix', 'DeliverSlices', document, signature), 108);
  isFault(t, await call('root', 'unix', 'DeliverSlices', document, await signDetached(Buffer.from(document), authority.wrongKeyPath)), 102, /signature/);
  isFault(t, await call('root', 'unix', 'DeliverSlices', document.replace('cpu_share', 'cpu_pct'), signature), 102, /signature/);
  const answer = (await call(name('plc'), 'unix', 'DeliverSlices', document, signature)).result as { outcome: string };
  t.is(answer.outcome, 'applied');
  t.is(((await call('root', 'tcp', 'GetRSpec', name('other'))).result as Record<string, number>).cpu_share, 6);
  const again = (await call('root', 'tcp', 'DeliverSlices', document, signature)).result as { outcome: string };
  t.is(again.outcome, 'unchanged');
});

serial('DeliverSlices checks the signature on the bytes signed: a CR LF document sent as base64 is applied', async (t) => {
  slices = slices.map((s) => (s.name === name('other') ? { ...s, resources: { cpu_share: 7 } } : s));
  timestamp += 10;
  const document = Buffer.from(slicesXml(timestamp, slices, delegates).replace(/\n/g, '\r\n'));
  const signature = await signDetached(document, authority.keyPath);
  // As a string, XML makes its CR LF line ends LF: not the bytes signed, and the fault says what to do.
  isFault(t, await call(name('plc'), 'unix', 'DeliverSlices', document.toString(), signature), 102, /send it as base64/);
  const answer = (await call(name('plc'), 'unix', 'DeliverSlices', { base64: document.toString('base64') }, signature)).result as { outcome: string };
  t.is(answer.outcome, 'applied');
  t.is(((await call('root', 'tcp', 'GetRSpec', name('other'))).result as Record<string, number>).cpu_share, 7);
  t.deepEqual((await call(NOBODY, 'unix', 'system.methodSignature', 'DeliverSlices')).result, [['struct', 'string', 'string'], ['struct', 'base64', 'string']]);
});

serial('a ticket for a slice that a later document removed does not bring it back', async (t) => {
  // The document DeliverSlices applied (newer than the ticket) has no such slice: it is destroyed.
  t.truthy(acceptedTicket, 'the ticket test ran first');
  await waitFor('the ticket sliver to be destroyed', async () => (await stateOf(name('tkt'))) === 'absent');
  isFault(t, await call(name('web'), 'unix', 'Ticket', acceptedTicket), 102, /document in force has timestamp \d+, newer than the ticket's \d+, and does not hold .*: replayed or stale/);
  t.is(await stateOf(name('tkt')), 'absent');
  t.is((await db()).records[`sliver_${name('tkt')}`], undefined);
});

serial('a delegate reaches the API through forward_api_calls as its login shell', async (t) => {
  const ctl = (await passwdEntries(prefix)).find((e) => e.name === name('ctl'))!;
  // The daemon put a copy of the built shell at the configured path and listed it in /etc/shells.
  t.is(ctl.shell, join(box.dir, 'libexec', 'forward_api_calls'));
  t.true((await readFile(ctl.shell)).equals(await readFile(resolve(import.meta.dirname, '../../native/build/forward_api_calls'))));
  t.true((await readFile('/etc/shells', 'utf8')).split('\n').includes(ctl.shell), '/etc/shells lists the delegate shell');
  const request = `<?xml version="1.0"?><methodCall><methodName>GetRSpec</methodName><params><param><value><string>${name('web')}</string></value></param></params></methodCall>`;
  const out = await run('bash', ['-c', `printf '%s' "$1" | setpriv --reuid=${ctl.uid} --regid=${ctl.gid} --clear-groups env NODEMGR_API_SOCKET=${socketPath} ${ctl.shell}`, '_', request]);
  t.regex(out.stdout, /<name>cpu_share<\/name>/);
  const denied = request.replace(name('web'), name('other'));
  const out2 = await run('bash', ['-c', `printf '%s' "$1" | setpriv --reuid=${ctl.uid} --regid=${ctl.gid} --clear-groups env NODEMGR_API_SOCKET=${socketPath} ${ctl.shell}`, '_', denied]);
  t.regex(out2.stdout, /<int>108<\/int>/);
});
