// Authority chaos: the authority goes down, drips, sends too much (plainly or as a gzip bomb),
// stops half-way, loops or points at a local file, presents a certificate of the wrong CA, fails
// with 500, answers 304 to a question nobody asked, or serves an older document. Through all of it
// a real daemon, as root, keeps its three running slivers (accounts, homes, processes, records) and
// `nodemgr status` names what went wrong; once the authority behaves again the next sync applies.
//
// Every hostile document that does arrive is a well-formed, *newer* one that lists none of the
// node's slivers (or, for the cut one, only part of them): should the daemon take any of them for
// a document in force, it would destroy slivers, and the test would see it.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import type { NodeDatabase, SyncOutcome, SyncStatus } from '../../src/db/types.js';
import { healthPath, readHealth } from '../../src/status/health.js';
import {
  accountPrefix, isRoot, nodemgr, passwdEntries, processesOf, removeAccounts, sandbox, startDaemonProcess,
  stopDaemonProcess, waitFor, writeWorkFiles, type DaemonProcess, type Sandbox,
} from '../system/support/host.js';
import { publicKeys, slicesXml, type TestSlice } from '../system/support/slices.js';
import { scaled } from './support/scale.js';

const execute = promisify(execFile);
// npm puts node_modules/.bin first on PATH; the host's openssl is the one meant.
const OPENSSL = '/usr/bin/openssl';

const prefix = accountPrefix();
const NAMES = ['alpha', 'beta', 'gamma'].map((suffix) => `${prefix}_${suffix}`);
const ROUNDS = scaled(1, 5);
const IN_FORCE = 1000;
const MAX_BYTES = 16 * 1024;
// Long enough for a good document over loopback, short enough that a drip is given up quickly.
const TIMEOUT_SECONDS = 2;
// A process of each sliver that must live through every mode: a destroyed or restarted sliver loses it.
const MARKER = 'sleep 86399';
const INITSCRIPT = `#!/bin/sh\n${MARKER} &\n`;

const cleanups: Array<() => Promise<unknown>> = [];

const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('authority chaos: needs root (real accounts, homes, processes and a real daemon)', () => undefined);

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (isRoot) await removeAccounts(prefix);
});

// ---------------------------------------------------------------------------------------------
// Documents

/** A well-formed document newer than the one in force that lists no sliver of this node, with `padding` more bytes in a comment. */
function destructiveDocument(padding = 0): string {
  const body = slicesXml(9000, []);
  if (padding === 0) return body;
  const end = body.lastIndexOf('</slices>');
  return `${body.slice(0, end)}<!--${' '.repeat(padding)}-->\n${body.slice(end)}`;
}

// ---------------------------------------------------------------------------------------------
// A misbehaving authority

type Respond = (req: IncomingMessage, res: ServerResponse) => void;

interface Authority {
  /** The URL of the document, as the daemon is configured with it. */
  readonly url: string;
  /** How the next requests are answered. */
  respond: Respond;
  /** Every request seen: its path and whether it carried validators (a conditional GET). */
  readonly requests: Array<{ path: string; conditional: boolean }>;
  /** Nothing listens on the port any more (connections are refused), until listenAgain. */
  stopListening(): Promise<void>;
  listenAgain(): Promise<void>;
  close(): Promise<void>;
}

async function startAuthority(server: HttpServer | HttpsServer, scheme: 'http' | 'https', initial: Respond): Promise<Authority> {
  const requests: Authority['requests'] = [];
  let listening = false;
  let port = 0;
  const authority = {
    url: '',
    respond: initial,
    requests,
    async stopListening() {
      if (!listening) return;
      listening = false;
      const closed = new Promise<void>((done) => server.close(() => done()));
      server.closeAllConnections();
      await closed;
    },
    async listenAgain() {
      if (listening) return;
      await new Promise<void>((done, fail) => {
        server.once('error', fail);
        server.listen(port, '127.0.0.1', () => {
          server.off('error', fail);
          done();
        });
      });
      listening = true;
    },
    // Closing every connection also ends a drip (its timer stops when its response closes).
    close: () => authority.stopListening(),
  };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    requests.push({
      path: req.url ?? '',
      conditional: req.headers['if-none-match'] !== undefined || req.headers['if-modified-since'] !== undefined,
    });
    // A client that hangs up mid-answer is what several modes are about, not a test failure.
    res.on('error', () => undefined);
    authority.respond(req, res);
  });
  server.on('clientError', (_error, socket) => socket.destroy());
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  listening = true;
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('the test authority has no address');
  port = address.port;
  authority.url = `${scheme}://127.0.0.1:${port}/slices.xml`;
  return authority;
}

// Without an ETag or Last-Modified: the daemon has no validators to send, so none of its requests
// is conditional and a 304 is never one it asked for.
const serveXml = (body: string): Respond => (_req, res) => {
  res.writeHead(200, { 'content-type': 'text/xml' }).end(body);
};

// ---------------------------------------------------------------------------------------------
// The chaos modes

interface ChaosMode {
  readonly name: string;
  /** The outcome the sync status must record, and the words in its detail that name the cause. */
  readonly outcome: SyncOutcome;
  readonly cause: RegExp;
  /** Makes the authority misbehave. */
  begin(authority: Authority): Promise<void> | void;
  /** Undoes what answering well again does not (e.g. listening again). */
  end?(authority: Authority): Promise<void> | void;
  /** What the authority must have seen of the attempt (beyond at least one request). */
  check?(t: ExecutionContext, seen: Authority['requests']): void;
}

function httpModes(slices: TestSlice[], localDocument: string): ChaosMode[] {
  const oversize = destructiveDocument(4 * MAX_BYTES);
  // Spaces compress about a thousandfold: 8 MiB of document in a body of about 8 KiB, below the
  // limit, so it is the size after decoding that has to stop it.
  const bomb = gzipSync(destructiveDocument(8 * 1024 * 1024), { level: 9 });
  const full = slicesXml(9000, slices);
  // Cut inside the second slice: a parser that took what it got would keep one sliver of three.
  const cut = full.slice(0, full.indexOf(`name="${NAMES[1]}"`) + 10);
  const larger = new RegExp(`document larger than ${MAX_BYTES} bytes`);
  return [
    {
      name: 'down (nothing listening)',
      outcome: 'unreachable',
      cause: /connection refused/,
      begin: (a) => a.stopListening(),
      end: (a) => a.listenAgain(),
      check: (t, seen) => t.is(seen.length, 0, 'nothing answered while the authority was down'),
    },
    {
      name: 'slow drip (1 byte/s)',
      outcome: 'unreachable',
      cause: new RegExp(`timed out after ${TIMEOUT_SECONDS} s`),
      begin: (a) => {
        a.respond = (_req, res) => {
          const body = Buffer.from(destructiveDocument());
          res.writeHead(200, { 'content-type': 'text/xml', 'content-length': body.length });
          res.flushHeaders();
          let sent = 0;
          const drip = setInterval(() => {
            if (sent >= body.length) return;
            res.write(body.subarray(sent, sent + 1));
            sent++;
          }, 1000);
          res.on('close', () => clearInterval(drip));
        };
      },
    },
    {
      name: 'over the size limit, with Content-Length',
      // The authority answered: what it sent is refused, as a malformed document is.
      outcome: 'rejected',
      cause: larger,
      begin: (a) => {
        a.respond = (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/xml', 'content-length': Buffer.byteLength(oversize) }).end(oversize);
        };
      },
    },
    {
      name: 'over the size limit, chunked (no Content-Length)',
      // The authority answered: what it sent is refused, as a malformed document is.
      outcome: 'rejected',
      cause: larger,
      begin: (a) => {
        a.respond = (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/xml' });
          for (let at = 0; at < oversize.length; at += 4096) res.write(oversize.slice(at, at + 4096));
          res.end();
        };
      },
    },
    {
      name: `gzip bomb (${bomb.length} bytes inflating to 8 MiB)`,
      // The authority answered: what it sent is refused, as a malformed document is.
      outcome: 'rejected',
      cause: larger,
      begin: (a) => {
        a.respond = (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/xml', 'content-encoding': 'gzip', 'content-length': bomb.length }).end(bomb);
        };
      },
      check: (t) => t.true(bomb.length < MAX_BYTES, `the bomb's compressed body (${bomb.length} bytes) is itself within the limit`),
    },
    {
      name: 'truncated (Content-Length larger than sent, then closed)',
      outcome: 'unreachable',
      cause: /connection (closed before the document was complete|reset by the server)/,
      begin: (a) => {
        a.respond = (req, res) => {
          // What arrives is a complete, newer document listing nothing: only the length says it is not all.
          const body = Buffer.from(destructiveDocument());
          res.writeHead(200, { 'content-type': 'text/xml', 'content-length': body.length + 1000 });
          res.write(body, () => req.socket.destroy());
        };
      },
    },
    {
      name: 'truncated XML (a document cut in the middle)',
      outcome: 'rejected',
      cause: /line \d+ column \d+: .*(not closed|ends|end of)/,
      begin: (a) => {
        a.respond = serveXml(cut);
      },
    },
    {
      name: 'redirect loop',
      outcome: 'unreachable',
      cause: /too many redirects/,
      begin: (a) => {
        a.respond = (req, res) => {
          const next = req.url === '/slices.xml' ? '/moved/slices.xml' : '/slices.xml';
          res.writeHead(302, { location: next }).end();
        };
      },
      check: (t, seen) => t.true(seen.length > 5, `the loop was followed a few times, then given up (${seen.length} requests)`),
    },
    {
      name: 'redirect from http to file: (refused)',
      outcome: 'unreachable',
      cause: new RegExp(`redirect to file:${escapeRegExp(localDocument)} refused`),
      begin: (a) => {
        a.respond = (_req, res) => {
          res.writeHead(302, { location: `file://${localDocument}` }).end();
        };
      },
    },
    {
      name: '500s',
      outcome: 'unreachable',
      cause: /HTTP 500 Internal Server Error/,
      begin: (a) => {
        a.respond = (_req, res) => {
          res.writeHead(500, { 'content-type': 'text/plain' }).end('the authority is having a bad day\n');
        };
      },
    },
    {
      name: '304 without a prior fetch',
      outcome: 'unreachable',
      cause: /HTTP 304 Not Modified to a request that had no validators/,
      begin: (a) => {
        a.respond = (req, res) => {
          const conditional = req.headers['if-none-match'] !== undefined || req.headers['if-modified-since'] !== undefined;
          // Only a request without validators gets the 304: one with validators would have a right to it.
          if (conditional) serveXml(goodDocument(slices))(req, res);
          else res.writeHead(304).end();
        };
      },
      check: (t, seen) => t.false(seen.some((r) => r.conditional), 'the daemon asked without validators, so the 304 was unasked for'),
    },
    {
      name: 'an older timestamp',
      outcome: 'older',
      cause: new RegExp(`document timestamp 500 is older than ${IN_FORCE} in force; ignored`),
      begin: (a) => {
        // Older and listing nothing: applied, it would be a rollback that destroys every sliver.
        a.respond = serveXml(slicesXml(500, []));
      },
    },
  ];
}

function goodDocument(slices: TestSlice[]): string {
  return slicesXml(IN_FORCE, slices);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---------------------------------------------------------------------------------------------
// Throwaway CAs: A, the one the node trusts, and B, which signs a certificate for the same address.

interface Pki {
  dir: string;
  caA: string;
  keyA: string;
  certA: string;
  keyB: string;
  certB: string;
}

async function makePki(): Promise<Pki> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-chaos-pki-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const openssl = (...args: string[]) => execute(OPENSSL, args, { cwd: dir });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  const authority = async (ca: string) => {
    await openssl('req', '-x509', ...ec, '-keyout', `${ca}.key`, '-out', `${ca}.pem`, '-days', '2',
      '-subj', `/CN=nodemgr chaos test ${ca}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    await openssl('req', '-new', ...ec, '-keyout', `server-${ca}.key`, '-out', `server-${ca}.csr`, '-subj', '/CN=127.0.0.1');
    await openssl('x509', '-req', '-in', `server-${ca}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-set_serial', '2',
      '-days', '2', '-extfile', 'server.ext', '-out', `server-${ca}.pem`);
  };
  await Promise.all([authority('ca-a'), authority('ca-b')]);
  const read = (name: string) => readFile(join(dir, name), 'utf8');
  return {
    dir,
    caA: join(dir, 'ca-a.pem'),
    keyA: await read('server-ca-a.key'),
    certA: await read('server-ca-a.pem'),
    keyB: await read('server-ca-b.key'),
    certB: await read('server-ca-b.pem'),
  };
}

// ---------------------------------------------------------------------------------------------
// The node

const dbOf = (box: Sandbox): Promise<NodeDatabase> => readDatabaseSnapshot(join(box.stateDir, 'nodemgr.json'));

function start(box: Sandbox): DaemonProcess {
  const daemon = startDaemonProcess(box.config);
  cleanups.push(() => stopDaemonProcess(daemon, 'SIGKILL'));
  return daemon;
}

/** The marker processes of each sliver, by pid. */
async function markerPids(): Promise<Map<string, string[]>> {
  const found = new Map<string, string[]>();
  for (const name of NAMES) {
    found.set(name, (await processesOf(name)).filter((line) => line.includes(MARKER)).map((line) => line.split(' ')[0]!).sort());
  }
  return found;
}

/** The converge passes that followed the daemon's fetches so far (log_level debug logs every one). */
function passesOf(daemon: DaemonProcess): string[] {
  return daemon.output().match(/converge (?:planned|unchanged) trigger=poll\b[^\n]*/g) ?? [];
}

/**
 * Makes the daemon sync now and waits until the status that `nodemgr status` shows (the running
 * daemon's health, brought up to date every second) is that of this attempt, and until the
 * converge pass that follows every attempt is over: whatever the attempt would have the node
 * destroy is planned by then.
 */
async function syncNow(daemon: DaemonProcess, box: Sandbox): Promise<{ sync: SyncStatus; pass: string }> {
  const asked = Date.now();
  const passesBefore = passesOf(daemon).length;
  daemon.child.kill('SIGHUP');
  return waitFor(`a sync after SIGHUP\n${daemon.output().slice(-2000)}`, async () => {
    if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) {
      throw new Error(`the daemon exited (${daemon.child.exitCode ?? daemon.child.signalCode})\n${daemon.output().slice(-3000)}`);
    }
    const sync = (await readHealth(healthPath(join(box.dir, 'run'))))?.lastSync;
    const pass = passesOf(daemon)[passesBefore];
    return sync && Date.parse(sync.at) >= asked && pass ? { sync, pass } : null;
  }, 30_000);
}

interface Node {
  box: Sandbox;
  /** The daemon the node started with (the https part restarts it). */
  daemon: DaemonProcess;
  homes: Map<string, string>;
  pids: Map<string, string[]>;
}

/** Everything that makes up the three slivers is as it was: nothing destroyed, stopped or rolled back. */
async function assertNothingDestroyed(t: ExecutionContext, node: Node, daemon: DaemonProcess, when: string): Promise<void> {
  const entries = await passwdEntries(prefix);
  t.deepEqual(entries.map((e) => e.name).sort(), [...NAMES].sort(), `${when}: every sliver's account is still there`);
  for (const [name, file] of node.homes) {
    t.is(await readFile(file, 'utf8').catch((error: Error) => error.message), `the work of ${name}\n`, `${when}: ${name}'s home and its file are intact`);
  }
  t.deepEqual(await markerPids(), node.pids, `${when}: the slivers' processes run on, untouched`);
  const db = await dbOf(node.box);
  t.is(db.records['timestamp']?.timestamp, IN_FORCE, `${when}: the document in force is still the good one`);
  for (const name of NAMES) {
    t.truthy(db.records[`sliver_${name}`], `${when}: the database still holds ${name}'s record`);
    t.is(db.accounts[name]?.state, 'running', `${when}: ${name} is running`);
  }
  t.notRegex(daemon.output(), /op=destroy/, `${when}: the daemon destroyed nothing, nor planned to`);
  t.is(daemon.child.exitCode, null, `${when}: the daemon is still running`);
}

/** Slivers of the three whose account is gone from the host. */
async function destroyedSlivers(): Promise<number> {
  const entries = await passwdEntries(prefix);
  return NAMES.filter((name) => !entries.some((e) => e.name === name)).length;
}

interface Totals {
  modes: Set<string>;
  chaosSyncs: number;
  syncs: number;
}

/** One mode: misbehave, sync, check nothing went and status names the cause; behave, sync, check it applies. */
async function runMode(t: ExecutionContext, mode: ChaosMode, authority: Authority, good: Respond, daemon: DaemonProcess, node: Node, totals: Totals) {
  await mode.begin(authority);
  const seenBefore = authority.requests.length;
  const { sync, pass } = await syncNow(daemon, node.box);
  const seen = authority.requests.slice(seenBefore);
  totals.syncs++;
  totals.chaosSyncs++;
  totals.modes.add(mode.name);

  const status = await nodemgr(['status', '--config', node.box.config]);
  t.is(status.code, 0, status.stderr);
  const line = status.stdout.split('\n').find((l) => l.startsWith('last sync: ')) ?? '(no last sync line)';
  t.regex(line, new RegExp(`^last sync: \\S+ ${mode.outcome} from ${escapeRegExp(authority.url)} — `), `${mode.name}: the status says what happened`);
  t.regex(line, mode.cause, `${mode.name}: the status names the cause`);
  t.is(sync.outcome, mode.outcome);
  for (const name of NAMES) t.regex(status.stdout, new RegExp(`^${name}\\s+sliver\\s+unix\\s+running`, 'm'), `${mode.name}: status shows ${name} running`);
  t.regex(pass, /\bops=0\b/, `${mode.name}: the converge pass after it planned nothing for the slivers`);
  t.log(`${mode.name}: ${sync.outcome} — ${sync.detail}`);
  if (mode.check) mode.check(t, seen);
  else t.true(seen.length > 0, `${mode.name}: the authority was asked`);
  await assertNothingDestroyed(t, node, daemon, mode.name);

  authority.respond = good;
  await mode.end?.(authority);
  const { sync: recovered, pass: recoveredPass } = await syncNow(daemon, node.box);
  totals.syncs++;
  t.true(['unchanged', 'applied'].includes(recovered.outcome), `after ${mode.name}, the good document applies again (${recovered.outcome}: ${recovered.detail})`);
  t.is(recovered.source, authority.url);
  t.regex(recoveredPass, /\bops=0\b/, `after ${mode.name}: the good document, as in force, asks for no change`);
  await assertNothingDestroyed(t, node, daemon, `after ${mode.name}`);
}

serial('through every kind of authority chaos the node destroys no sliver, and status names the cause', async (t) => {
  t.timeout(scaled(3, 20) * 60_000);
  const began = Date.now();
  const [key] = await publicKeys(1);
  const slices: TestSlice[] = NAMES.map((name, i) => ({ name, users: { [i + 1]: key! }, resources: { cpu_share: 8, initscript: INITSCRIPT } }));
  const good = serveXml(goodDocument(slices));
  const pki = await makePki();

  const plain = await startAuthority(createHttpServer(), 'http', good);
  cleanups.push(() => plain.close());
  const box = await sandbox({
    authority_url: plain.url,
    authority_timeout: TIMEOUT_SECONDS,
    document_max_bytes: MAX_BYTES,
    // Every sync is the test's (SIGHUP): no retry of its own comes between a mode and the next.
    poll_period: 3600,
    fetch_backoff_initial: 3600,
    fetch_backoff_max: 3600,
    // Every converge pass is logged, so that the test knows when the one after a sync is over.
    log_level: 'debug',
  });
  cleanups.push(() => box.cleanup());
  // A newer document on the node's own disk that lists nothing: what a followed file: redirect would apply.
  const localDocument = join(box.dir, 'local-slices.xml');
  await writeFile(localDocument, destructiveDocument());

  // The node as it is before any chaos: three running slivers, each with its user's work at home.
  const daemon = start(box);
  await waitFor(`three running slivers with their processes\n${daemon.output().slice(-3000)}`, async () => {
    const db = await dbOf(box);
    if (db.records['timestamp']?.timestamp !== IN_FORCE || !NAMES.every((n) => db.accounts[n]?.state === 'running')) return false;
    return [...(await markerPids()).values()].every((pids) => pids.length === 1);
  }, 90_000);
  const homes = await writeWorkFiles(prefix);
  const node: Node = { box, daemon, homes, pids: await markerPids() };
  const totals: Totals = { modes: new Set(), chaosSyncs: 0, syncs: 0 };
  t.log(`node ready in ${((Date.now() - began) / 1000).toFixed(1)} s: ${NAMES.join(', ')}`);
  try {
    await chaos(t, { node, plain, good, slices, localDocument, pki, totals });
  } finally {
    // Also when a mode failed: how far the campaign got, and what it cost the node.
    t.log(`${totals.modes.size} modes, ${ROUNDS} round(s): ${totals.chaosSyncs} chaos syncs, ${totals.syncs} syncs in all; ` +
      `slivers destroyed: ${await destroyedSlivers()} of ${NAMES.length}; ${((Date.now() - began) / 1000).toFixed(1)} s`);
  }
});

interface Campaign {
  node: Node;
  plain: Authority;
  good: Respond;
  slices: TestSlice[];
  localDocument: string;
  pki: Pki;
  totals: Totals;
}

/** Every mode over http, then the wrong CA over https, ROUNDS times each. */
async function chaos(t: ExecutionContext, { node, plain, good, slices, localDocument, pki, totals }: Campaign): Promise<void> {
  const { box } = node;
  const daemon = node.daemon;

  const modes = httpModes(slices, localDocument);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of modes) await runMode(t, mode, plain, good, daemon, node, totals);
  }

  // TLS with the wrong CA: the daemon reads its configuration only at start, so it restarts on an
  // https authority whose CA file holds CA A. The authority first shows a certificate of CA A, then
  // one of CA B for the same address.
  const secureServer = createHttpsServer({ key: pki.keyA, cert: pki.certA });
  const secure = await startAuthority(secureServer, 'https', good);
  cleanups.push(() => secure.close());
  t.is(await stopDaemonProcess(daemon), 0, 'the daemon stops cleanly for its new configuration');
  const config = (await readFile(box.config, 'utf8')).replace(/^authority_url = .*$/m, `authority_url = ${secure.url}`);
  await writeFile(box.config, `${config}authority_ca_file = ${pki.caA}\n`);
  const restartedAt = Date.now();
  const restarted = start(box);
  const first = await waitFor(`the first sync over https\n${restarted.output().slice(-2000)}`, async () => {
    const sync = (await readHealth(healthPath(join(box.dir, 'run'))))?.lastSync;
    const pass = passesOf(restarted)[0];
    return sync && Date.parse(sync.at) >= restartedAt && pass ? { sync, pass } : null;
  }, 30_000);
  totals.syncs++;
  t.true(['unchanged', 'applied'].includes(first.sync.outcome), `the https authority with CA A's certificate is trusted (${first.sync.outcome}: ${first.sync.detail})`);
  t.regex(first.pass, /\bops=0\b/, 'the restarted daemon finds the slivers as they should be');
  // A restart of the daemon is not one of the slivers: their processes run on, the very same ones.
  await assertNothingDestroyed(t, node, restarted, 'restart on https');

  const wrongCa: ChaosMode = {
    name: 'TLS with the wrong CA',
    outcome: 'unreachable',
    cause: /certificate verification failed \([A-Z_]+\)/,
    begin: () => secureServer.setSecureContext({ key: pki.keyB, cert: pki.certB }),
    end: () => secureServer.setSecureContext({ key: pki.keyA, cert: pki.certA }),
    // The handshake fails before any request is made.
    check: (t2, seen) => t2.is(seen.length, 0, 'no request got past the handshake'),
  };
  for (let round = 1; round <= ROUNDS; round++) await runMode(t, wrongCa, secure, good, restarted, node, totals);

  t.is(await destroyedSlivers(), 0, 'no sliver was destroyed');
  t.is(await stopDaemonProcess(restarted), 0, 'the daemon stops cleanly');
}
