// ssh connection setup through the gateway beside Debian's OpenSSH server (sshd), with the same
// client (ssh2's), key type (ed25519, for the client and the host) and session: TCP connect, key
// exchange, public key login until the session can be used, then one exec whose stdin is an
// XML-RPC request and whose output is read to the end, at 1 and at 20 concurrent clients. The
// gateway runs in its own process, as in the daemon; sshd is started by the bench on a loopback
// port with a configuration of its own (bench/lib/openssh-server.ts). On the gateway the exec is a
// delegate's API session (answered in the gateway process); on sshd it is `cat` (a forked shell
// command echoing the request), so the "with one request" column is comparable only roughly; the
// setup column and the logins/s are the like-for-like figures.
//
//   node --import tsx bench/ssh.ts [connections per client count] [rounds]   (sshd needs root)
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ssh2 from 'ssh2';
import { generateKeyPair } from '../src/ssh/host-key.js';
import { sshdUnavailable, startOpenSsh, type OpenSshServer } from './lib/openssh-server.js';

const perLevel = Number(process.argv[2] ?? 200);
const rounds = Number(process.argv[3] ?? 3);
const here = dirname(fileURLToPath(import.meta.url));
const pair = generateKeyPair('bench@nodemgr');

const server = spawn(process.execPath, ['--import', 'tsx', join(here, 'lib', 'ssh-server.ts'), pair.public], { stdio: ['pipe', 'pipe', 'inherit'] });
const gatewayPort = await new Promise<number>((resolve, reject) => {
  let out = '';
  server.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const m = /port (\d+)/.exec(out);
    if (m) resolve(Number(m[1]));
  });
  server.on('exit', (code) => reject(new Error(`the gateway exited (${code})`)));
});

interface Target {
  readonly label: string;
  readonly port: number;
  readonly username: string;
  /** What the session runs: '' is the gateway's API session for a delegate. */
  readonly command: string;
}

/** ms from connect() to ready, and until the one-request session has its answer. */
function connectOnce(target: Target): Promise<{ setup: number; call: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const client = new ssh2.Client();
    client.on('error', reject);
    client.on('ready', () => {
      const setup = performance.now() - started;
      client.exec(target.command, (error, channel) => {
        if (error) return reject(error);
        channel.on('data', () => undefined);
        channel.stderr.on('data', () => undefined);
        channel.on('close', () => {
          client.end();
          resolve({ setup, call: performance.now() - started });
        });
        channel.end('<?xml version="1.0"?><methodCall><methodName>Help</methodName></methodCall>');
      });
    });
    client.connect({ host: '127.0.0.1', port: target.port, username: target.username, privateKey: pair.private });
    // as OpenSSH's client does for its sessions: no waiting for delayed ACKs
    client.setNoDelay(true);
  });
}

interface Level {
  setup: number[];
  call: number[];
  rate: number;
}

async function level(target: Target, concurrency: number): Promise<Level> {
  const setup: number[] = [];
  const call: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < perLevel) {
      const r = await connectOnce(target);
      setup.push(r.setup);
      call.push(r.call);
    }
  }));
  return { setup, call, rate: perLevel / ((performance.now() - started) / 1000) };
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;
const median = (xs: number[]) => pct(xs, 50);

const targets: Target[] = [{ label: 'nodemgr gateway', port: gatewayPort, username: 'bench_ctl', command: '' }];
let sshd: OpenSshServer | null = null;
const unavailable = sshdUnavailable();
if (unavailable === null) {
  sshd = await startOpenSsh(pair.public);
  targets.push({ label: `OpenSSH sshd (${sshd.version})`, port: sshd.port, username: sshd.username, command: 'cat' });
}
try {
  for (const target of targets) await level(target, 1); // warm up: JIT, key caches, sshd's page cache
  console.log(`ssh logins, ${perLevel} connections per level, ${rounds} rounds taken in turn (median of rounds):`);
  for (const concurrency of [1, 20]) {
    // The servers take turns round after round, so that the host's noise falls on both alike.
    const results = new Map<Target, Level[]>(targets.map((t) => [t, []]));
    for (let r = 0; r < rounds; r++) for (const target of targets) results.get(target)!.push(await level(target, concurrency));
    for (const target of targets) {
      const runs = results.get(target)!;
      const f = (pick: (x: Level) => number) => median(runs.map(pick)).toFixed(1);
      console.log(`  ${target.label.padEnd(28)} ${String(concurrency).padStart(2)} clients: ${f((x) => x.rate).padStart(6)} logins/s;` +
        ` setup p50 ${f((x) => pct(x.setup, 50))} ms, p99 ${f((x) => pct(x.setup, 99))} ms; with the session p50 ${f((x) => pct(x.call, 50))} ms` +
        `   (logins/s of each round: ${runs.map((x) => x.rate.toFixed(0)).join(' ')})`);
    }
  }
  if (unavailable !== null) console.log(`  OpenSSH sshd: not run (${unavailable})`);
} finally {
  await sshd?.stop();
  server.stdin.end();
}
