// ssh connection setup through the gateway: TCP connect, key exchange, host key check and public
// key login until the session can be used, at 1 and at 20 concurrent clients (ssh2's client,
// ed25519 keys). The gateway runs in its own process, as in the daemon.
//
//   node --import tsx bench/ssh.ts [connections per client count] [rounds]
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ssh2 from 'ssh2';
import { generateKeyPair } from '../src/ssh/host-key.js';

const perLevel = Number(process.argv[2] ?? 200);
const rounds = Number(process.argv[3] ?? 3);
const here = dirname(fileURLToPath(import.meta.url));
const pair = generateKeyPair('bench@nodemgr');

const server = spawn(process.execPath, ['--import', 'tsx', join(here, 'lib', 'ssh-server.ts'), pair.public], { stdio: ['pipe', 'pipe', 'inherit'] });
const port = await new Promise<number>((resolve, reject) => {
  let out = '';
  server.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const m = /port (\d+)/.exec(out);
    if (m) resolve(Number(m[1]));
  });
  server.on('exit', (code) => reject(new Error(`the gateway exited (${code})`)));
});

/** ms from connect() to ready, and until a one-request API session has its answer. */
function connectOnce(): Promise<{ setup: number; call: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const client = new ssh2.Client();
    client.on('error', reject);
    client.on('ready', () => {
      const setup = performance.now() - started;
      client.exec('', (error, channel) => {
        if (error) return reject(error);
        channel.on('data', () => undefined);
        channel.on('close', () => {
          client.end();
          resolve({ setup, call: performance.now() - started });
        });
        channel.end('<?xml version="1.0"?><methodCall><methodName>Help</methodName></methodCall>');
      });
    });
    client.connect({ host: '127.0.0.1', port, username: 'bench_ctl', privateKey: pair.private });
    // as OpenSSH's client does for its sessions: no waiting for delayed ACKs
    client.setNoDelay(true);
  });
}

interface Level {
  setup: number[];
  call: number[];
  rate: number;
}

async function level(concurrency: number): Promise<Level> {
  const setup: number[] = [];
  const call: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < perLevel) {
      const r = await connectOnce();
      setup.push(r.setup);
      call.push(r.call);
    }
  }));
  return { setup, call, rate: perLevel / ((performance.now() - started) / 1000) };
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;
const median = (xs: number[]) => pct(xs, 50);

await level(1); // warm up: JIT, key caches
console.log(`ssh connection setup through the gateway, ${perLevel} connections per level, ${rounds} rounds (median of rounds):`);
for (const concurrency of [1, 20]) {
  const results: Level[] = [];
  for (let r = 0; r < rounds; r++) results.push(await level(concurrency));
  const f = (pick: (x: Level) => number) => median(results.map(pick)).toFixed(1);
  console.log(`  ${String(concurrency).padStart(2)} clients: setup p50 ${f((x) => pct(x.setup, 50))} ms, p99 ${f((x) => pct(x.setup, 99))} ms;` +
    ` with one API request p50 ${f((x) => pct(x.call, 50))} ms; ${f((x) => x.rate)} connections/s`);
}
server.stdin.end();
