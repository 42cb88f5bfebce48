// The C parts in native/ against the real kernel: the peercred addon sees the uid and pid of a
// process that really runs as another user (SO_PEERCRED on a Unix socket; the owner of the client's
// socket on loopback TCP, and nobody once that client closed it), and forward_api_calls talks HTTP to a real server on
// a Unix socket, the way sshd runs it for a delegate. Built by `npm run build:native` (pretest).
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { connect, createServer as createNetServer, type Server, type Socket } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { tcpClientUidLookup } from '../../src/api/tcp-client-uid.js';
import { forwardApiCallsPath, peerCredentials, tcpSocketOwner, type PeerCredentials } from '../../src/native/peercred.js';
import { isRoot, waitFor } from './support/host.js';

const NOBODY = 65534;
const MAX_REQUEST_BYTES = 16 * 1024 * 1024;
const forwarder = forwardApiCallsPath();

const dirs: string[] = [];
/** A temp directory that every user may enter (the peer of a socket in it may run as nobody). */
async function tempDir(name = 'nodemgr-native-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), name));
  await chmod(dir, 0o755);
  dirs.push(dir);
  return dir;
}
test.after.always(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
}

function closeServer(server: Server & { closeAllConnections?: () => void }): Promise<void> {
  server.closeAllConnections?.();
  return new Promise((resolve) => server.close(() => resolve()));
}

// ---- peerCredentials ---------------------------------------------------------------------------

/** A Unix-socket server that records the peer credentials of every connection it accepts. */
async function credentialServer(t: { teardown(fn: () => Promise<void>): void }) {
  const path = join(await tempDir(), 'peer.sock');
  const seen: Array<PeerCredentials | Error> = [];
  const server = createNetServer((socket) => {
    try {
      seen.push(peerCredentials(socket));
    } catch (error) {
      seen.push(error as Error);
    }
    socket.end('seen\n');
  });
  await listen(server, path);
  await chmod(path, 0o777); // connecting needs write permission on the socket file
  t.teardown(() => closeServer(server));
  return { path, seen };
}

// A client that connects, reports its pid and uid, and waits for the server's answer.
const CLIENT = `
const socket = require('node:net').connect(process.argv[1]);
socket.on('connect', () => process.stdout.write(JSON.stringify({ pid: process.pid, uid: process.getuid(), gid: process.getgid() })));
socket.on('data', () => socket.end());
socket.on('error', (e) => { console.error(e.message); process.exit(3); });
`;

(isRoot ? test : test.skip)('peerCredentials gives the uid, gid and pid of a client running as another user', async (t) => {
  const { path, seen } = await credentialServer(t);
  const child = spawn(
    'setpriv',
    [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '-e', CLIENT, path],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  t.is(code, 0, `client failed: ${stderr}`);
  const pid = child.pid;
  if (pid === undefined) throw new Error('setpriv did not start');
  const client = JSON.parse(stdout) as PeerCredentials;
  t.is(client.uid, NOBODY, 'the client really ran as nobody');
  // setpriv execs node, so the process that connected is the one spawn started
  t.is(client.pid, pid);
  t.deepEqual(seen, [{ pid, uid: NOBODY, gid: NOBODY }]);
});

if (!isRoot) test.skip('peerCredentials of another user: needs root (to start a client as uid 65534 with setpriv)', () => undefined);

test('peerCredentials gives uid 0 and our own pid when we connect as root', async (t) => {
  const { path, seen } = await credentialServer(t);
  const client = connect(path);
  await new Promise<void>((resolve, reject) => {
    client.on('data', () => client.end());
    client.on('close', () => resolve());
    client.on('error', reject);
  });
  t.deepEqual(seen, [{ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() }]);
});

test('peerCredentials refuses a TCP connection and a closed socket with an error that says so', async (t) => {
  const server = createNetServer();
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => closeServer(server));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  const client = connect(address.port, '127.0.0.1');
  const socket = await accepted;
  t.throws(() => peerCredentials(socket), { message: /not a Unix-domain socket/ });
  socket.destroy();
  client.destroy();
  t.throws(() => peerCredentials(socket), { message: /no file descriptor/ });
});

// ---- tcpSocketOwner ----------------------------------------------------------------------------

// A TCP client that connects, says so, and closes its socket and exits when its stdin ends.
const TCP_CLIENT = `
const socket = require('node:net').connect(Number(process.argv[1]), '127.0.0.1');
socket.on('connect', () => process.stdout.write('connected'));
process.stdin.on('data', () => {}).on('end', () => socket.destroy());
socket.on('error', (e) => { console.error(e.message); process.exit(3); });
`;

(isRoot ? test : test.skip)('the owner of a loopback TCP client is the user running it, and nobody once it closed its end', async (t) => {
  // allowHalfOpen: our end stays open after the client's, as a server's does while it answers.
  const server = createNetServer({ allowHalfOpen: true });
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => closeServer(server));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  const child = spawn(
    'setpriv',
    [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '-e', TCP_CLIENT, String(address.port)],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const socket = await accepted;
  const connection = { remoteAddress: socket.remoteAddress!, remotePort: socket.remotePort!, localAddress: socket.localAddress!, localPort: socket.localPort! };
  const client = () => tcpSocketOwner(connection.remoteAddress, connection.remotePort, connection.localAddress, connection.localPort);
  const errors: unknown[] = [];
  const byKernel = tcpClientUidLookup({ lookupSocket: tcpSocketOwner, onLookupError: (error) => errors.push(error) });
  const byTables = tcpClientUidLookup({});

  t.like(client(), { uid: NOBODY, state: 1 }, 'established, held by the client running as nobody');
  t.not(client()?.inode, 0);
  t.like(tcpSocketOwner(connection.localAddress, connection.localPort, connection.remoteAddress, connection.remotePort), { uid: 0, state: 1 }, 'our own end');
  t.deepEqual([await byKernel(connection), await byTables(connection)], [NOBODY, NOBODY]);

  child.stdin.end();
  t.is(await exited, 0, `client failed: ${stderr}`);
  // What is left of the client's socket is held by no process; in TIME_WAIT the kernel reports
  // its uid as 0: that must not make the client root.
  await waitFor('the kernel to drop the closed client socket\'s owner', async () => (client()?.inode === 0 ? true : null));
  t.deepEqual([await byKernel(connection), await byTables(connection)], [null, null]);
  t.deepEqual(errors, [], 'the kernel was asked, not the tables');
  socket.destroy();
});

if (!isRoot) test.skip('the owner of a loopback TCP client running as another user: needs root (to start it as uid 65534 with setpriv)', () => undefined);

const hasIPv6Loopback = Object.values(networkInterfaces()).some((addresses) => addresses?.some((a) => a.address === '::1'));
const ipv6Test = hasIPv6Loopback ? test : test.skip;
if (!hasIPv6Loopback) test.skip('TCP clients over IPv6: this host has no IPv6 loopback address (::1)', () => undefined);

ipv6Test('the owner of a TCP client is found over IPv6 and on a dual-stack listener, as node:net names their addresses', async (t) => {
  // [listen on, connect to]: ::1 itself, and IPv4 to a listener on :: (node:net says ::ffff:127.0.0.1).
  for (const [host, target] of [['::1', '::1'], ['::', '127.0.0.1']] as const) {
    const server = createNetServer();
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no TCP address');
    const client = connect(address.port, target);
    const socket = await accepted;
    const connection = { remoteAddress: socket.remoteAddress!, remotePort: socket.remotePort!, localAddress: socket.localAddress!, localPort: socket.localPort! };
    const errors: unknown[] = [];
    const uid = await tcpClientUidLookup({ lookupSocket: tcpSocketOwner, onLookupError: (error) => errors.push(error) })(connection);
    t.is(uid, process.getuid!(), `${connection.remoteAddress} to ${host}`);
    t.is(await tcpClientUidLookup({})(connection), process.getuid!(), `${connection.remoteAddress} to ${host}, from the tables`);
    t.deepEqual(errors, []);
    client.destroy();
    socket.destroy();
    await closeServer(server);
  }
});

test('tcpSocketOwner knows no socket for four parts nobody uses, and names what is wrong with bad ones', (t) => {
  t.is(tcpSocketOwner('127.0.0.1', 1, '127.0.0.1', 2), null);
  t.is(tcpSocketOwner('::1', 1, '::1', 2), null);
  t.throws(() => tcpSocketOwner('localhost', 1, '127.0.0.1', 2), { instanceOf: TypeError, message: /socket's address "localhost" is not an IPv4 or IPv6 address/ });
  t.throws(() => tcpSocketOwner('::1', 1, '127.0.0.1', 2), { instanceOf: TypeError, message: /different families/ });
  t.throws(() => tcpSocketOwner('127.0.0.1', 1, '127.0.0.1', 65536), { instanceOf: TypeError, message: /peer's port must be an integer from 0 to 65535/ });
});

// ---- forward_api_calls -------------------------------------------------------------------------

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs forward_api_calls with `input` on stdin and only the given environment. */
function forward(input: Buffer | string, env: Record<string, string>, options: { argv0?: string; args?: string[] } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(forwarder, options.args ?? [], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      argv0: options.argv0,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d) => (stderr += d));
    child.stdin.on('error', () => undefined); // a refused request is not read to its end
    // far beyond any deadline under test: only a hang gets here
    const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr });
    });
    child.stdin.end(input);
  });
}

interface Fault {
  faultCode: number;
  faultString: string;
}

/** The fault in an XML-RPC response, after checking that the document is well-formed. */
function parseFault(xml: string): Fault {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new Error(`not well-formed XML (${valid.err.msg}): ${xml}`);
  const doc = new XMLParser({ parseTagValue: false }).parse(xml) as {
    methodResponse?: { fault?: { value?: { struct?: { member?: Array<{ name: string; value: Record<string, string> }> } } } };
  };
  const members = doc.methodResponse?.fault?.value?.struct?.member;
  if (!Array.isArray(members)) throw new Error(`not an XML-RPC fault: ${xml}`);
  const byName = new Map(members.map((m) => [m.name, m.value]));
  return { faultCode: Number(byName.get('faultCode')?.int), faultString: String(byName.get('faultString')?.string) };
}

interface ReceivedRequest {
  method: string;
  url: string;
  httpVersion: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** An HTTP server on a Unix socket in a fresh temp dir that records requests and lets the test answer. */
async function apiServer(
  t: { teardown(fn: () => Promise<void>): void },
  answer: (request: ReceivedRequest, res: ServerResponse) => void,
) {
  const path = join(await tempDir(), 'api.sock');
  const requests: ReceivedRequest[] = [];
  let connections = 0;
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const request = { method: req.method!, url: req.url!, httpVersion: req.httpVersion, headers: req.headers, body: Buffer.concat(chunks) };
      requests.push(request);
      answer(request, res);
    });
  });
  server.on('connection', () => connections++);
  await listen(server, path);
  t.teardown(() => closeServer(server));
  return {
    path,
    requests,
    /** Connections accepted so far. */
    connections: () => connections,
  };
}

/** An XML-RPC call of `bytes` bytes or a little more, with text that differs from run to run. */
function xmlRequest(bytes: number): Buffer {
  const head = '<?xml version="1.0"?>\n<methodCall><methodName>Ticket</methodName><params><param><value><string>';
  const tail = '</string></value></param></params></methodCall>\n';
  const filler = randomBytes(Math.ceil(bytes * 0.75)).toString('base64').slice(0, Math.max(0, bytes - head.length - tail.length));
  return Buffer.from(head + filler + tail);
}

test.before(() => {
  if (!existsSync(forwarder)) throw new Error(`${forwarder} is missing: run npm run build:native`);
});

test('forward_api_calls sends the whole request and writes the whole answer, far beyond 4 KiB', async (t) => {
  const answer = Buffer.from(
    `<?xml version="1.0"?>\n<methodResponse><params><param><value><string>sliver ünïcødé ${randomBytes(150_000).toString('hex')}</string></value></param></params></methodResponse>\n`,
  );
  const api = await apiServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/xml' }).end(answer);
  });
  const request = xmlRequest(200 * 1024);
  const run = await forward(request, { NODEMGR_API_SOCKET: api.path });

  t.is(run.code, 0, run.stderr);
  t.is(api.requests.length, 1);
  const received = api.requests[0]!;
  t.is(received.method, 'POST');
  t.is(received.url, '/RPC2');
  t.is(received.headers['content-type'], 'text/xml');
  t.is(received.headers['content-length'], String(request.length));
  t.true(received.body.equals(request), `the server got ${received.body.length} of ${request.length} bytes, or other bytes`);
  t.true(run.stdout.equals(answer), `stdout has ${run.stdout.length} bytes, the answer ${answer.length}`);
});

test('forward_api_calls as a login shell ignores its arguments and forwards a request of exactly 16 MiB', async (t) => {
  const api = await apiServer(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'text/xml' }).end(`<got bytes="${req.body.length}"/>`);
  });
  const request = xmlRequest(MAX_REQUEST_BYTES);
  t.is(request.length, MAX_REQUEST_BYTES);
  // how sshd starts a login shell for `ssh delegate@node 'some command'`
  const run = await forward(request, { NODEMGR_API_SOCKET: api.path }, { argv0: '-forward_api_calls', args: ['-c', 'rm -rf /'] });

  t.is(run.code, 0, run.stderr);
  t.is(run.stdout.toString(), `<got bytes="${MAX_REQUEST_BYTES}"/>`);
  t.true(api.requests[0]!.body.equals(request));
});

test('forward_api_calls refuses a request over 16 MiB with fault 102 and exit 2, without contacting the daemon', async (t) => {
  const api = await apiServer(t, (_req, res) => res.writeHead(200).end('<unexpected/>'));
  const run = await forward(xmlRequest(MAX_REQUEST_BYTES + 1), { NODEMGR_API_SOCKET: api.path });

  t.is(run.code, 2);
  t.deepEqual(parseFault(run.stdout.toString()), {
    faultCode: 102,
    faultString: 'request too large: more than 16777216 bytes',
  });
  t.true(run.stdout.toString().startsWith('<?xml version="1.0"?>'));
  // Connections are accepted in the order they were made: once a probe made now is accepted, any
  // connection of the forwarder (made before it exited) has been accepted too.
  const probe = connect(api.path);
  probe.on('error', () => undefined);
  t.teardown(() => void probe.destroy());
  await waitFor('the probe connection to be accepted', () => api.connections() >= 1, { timeoutMs: 10_000, intervalMs: 10 });
  t.is(api.connections(), 1, 'the forwarder never connected: the one connection is the probe');
  t.is(api.requests.length, 0);
});

test('forward_api_calls with no daemon listening answers a fault naming the socket path, exit 1', async (t) => {
  // characters that must be escaped in XML, to see them come back intact
  const dir = await tempDir('nodemgr-a&b<c>-');
  const path = join(dir, 'api.sock');
  const run = await forward(xmlRequest(500), { NODEMGR_API_SOCKET: path });

  t.is(run.code, 1);
  t.deepEqual(parseFault(run.stdout.toString()), {
    faultCode: 501,
    faultString: `cannot reach the node manager at ${path}: No such file or directory`,
  });
  t.regex(run.stderr, /cannot reach the node manager/);
});

test('forward_api_calls gives up on a daemon that never answers after NODEMGR_API_TIMEOUT seconds', async (t) => {
  const api = await apiServer(t, () => undefined); // reads the request, never answers
  const started = Date.now();
  const run = await forward(xmlRequest(1000), { NODEMGR_API_SOCKET: api.path, NODEMGR_API_TIMEOUT: '1' });
  const seconds = (Date.now() - started) / 1000;

  t.is(run.signal, null, 'it stopped by itself');
  t.is(run.code, 1);
  t.is(api.requests.length, 1, 'the request did reach the daemon');
  const fault = parseFault(run.stdout.toString());
  t.is(fault.faultCode, 502);
  t.is(fault.faultString, `timed out after 1 s while waiting for the answer of the node manager at ${api.path}`);
  // well before the 30 s default, which would mean NODEMGR_API_TIMEOUT was ignored
  t.true(seconds < 15, `took ${seconds} s`);
});

test('forward_api_calls turns an HTTP error status into a fault with the status line, exit 1', async (t) => {
  const api = await apiServer(t, (_req, res) => {
    res.writeHead(500, 'Internal <Server> Error', { 'content-type': 'text/plain' }).end('database is locked');
  });
  const run = await forward(xmlRequest(1000), { NODEMGR_API_SOCKET: api.path });

  t.is(run.code, 1);
  t.is(api.requests.length, 1);
  t.deepEqual(parseFault(run.stdout.toString()), {
    faultCode: 500,
    faultString: `the node manager at ${api.path} answered "HTTP/1.1 500 Internal <Server> Error"`,
  });
});

test('forward_api_calls --help states the request limit and exits 0 without reading stdin', async (t) => {
  const run = await forward('', {}, { args: ['--help'] });
  t.is(run.code, 0);
  t.regex(run.stdout.toString(), /at most 16777216 bytes/);
  t.regex(run.stdout.toString(), /NODEMGR_API_SOCKET/);
});
