// The ssh gateway end to end, as root: a real daemon on loopback, the real OpenSSH client with key
// pairs made by ssh-keygen, slivers' shells checked from the inside (uid, terminal, cgroup), and a
// delegate's API request through ssh. Password and keyboard-interactive logins are tried with the
// ssh2 client, since OpenSSH in batch mode cannot offer a password.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Client } from 'ssh2';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import {
  accountPrefix, freePort, isRoot, nodemgr, processesOf, removeAccounts, run, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess, waitFor,
  type DaemonProcess, type DocumentServer, type Sandbox,
} from './support/host.js';
import { sshLogin } from '../support/ssh-client.js';
import { slicesXml, type TestDelegate, type TestSlice } from './support/slices.js';

const prefix = accountPrefix();
const name = (suffix: string) => `${prefix}_${suffix}`;
const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('the ssh gateway end to end: needs root (real accounts and a real daemon)', () => undefined);
// node-pty is an optional native build: where it could not be built, the terminal tests say so.
const ptyBuilt = await import('node-pty').then(() => true, () => false);
function terminalTest(title: string, run: (t: ExecutionContext) => Promise<void>): void {
  if (ptyBuilt) serial(title, run);
  else test.skip(`${title} (skipped: node-pty is not built on this machine)`, run);
}

let server: DocumentServer;
let box: Sandbox;
let daemon: DaemonProcess;
let port = 0;
let parent = '';
let timestamp = 1000;
let slices: TestSlice[] = [];
let delegates: TestDelegate[] = [];
const keys: Record<string, { path: string; line: string; privateKey: Buffer }> = {};

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The OpenSSH client as `user` with the key named `key`; `input` on its stdin. */
function ssh(user: string, key: string, args: string[], input = '', extra: string[] = []): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn('ssh', [
      '-p', String(port), '-i', keys[key]!.path, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
      '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
      ...extra, `${user}@127.0.0.1`, ...args,
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(input);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const db = () => readDatabaseSnapshot(join(box.stateDir, 'nodemgr.json'));
const stateOf = async (account: string) => (await db()).accounts[account]?.state ?? 'absent';

function publish() {
  timestamp += 10;
  server.set(slicesXml(timestamp, slices, delegates));
}

async function synced(what: string, check: () => Promise<boolean>) {
  daemon.child.kill('SIGHUP');
  await waitFor(`${what}\n${daemon.output().slice(-2000)}`, async () => (await check()) || null);
}

function getRSpecRequest(sliver: string): string {
  return `<?xml version="1.0"?><methodCall><methodName>GetRSpec</methodName><params><param><value><string>${sliver}</string></value></param></params></methodCall>`;
}

test.before(async () => {
  if (!isRoot) return;
  box = await sandbox({ authority_url: 'http://127.0.0.1:1/' });
  for (const key of ['user', 'stranger', 'delegate', 'removed']) {
    const path = join(box.dir, `id_${key}`);
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${key}@test`, '-f', path]);
    keys[key] = { path, line: (await readFile(`${path}.pub`, 'utf8')).trim(), privateKey: await readFile(path) };
  }
  slices = [
    { name: name('web'), users: { 1: keys['user']!.line, 2: keys['removed']!.line }, controllers: [name('ctl')], resources: { cpu_share: 2 } },
    { name: name('off'), users: { 1: keys['user']!.line }, resources: { enabled: 0 } },
    { name: name('other'), users: { 1: keys['user']!.line }, resources: { cpu_share: 3 } },
  ];
  delegates = [{ name: name('ctl'), keys: [keys['delegate']!.line] }];
  server = await serveDocument(slicesXml(timestamp, slices, delegates));
  port = await freePort();
  const config = (await readFile(box.config, 'utf8'))
    .replace(/^authority_url = .*$/m, `authority_url = ${server.url}`)
    .replace(/^ssh_port = .*$/m, `ssh_port = ${port}`);
  await writeFile(box.config, `${config}ssh_address = 127.0.0.1\nssh_max_sessions_per_account = 60\nssh_max_auth_attempts = 3\n`);
  parent = /^cgroup_parent = (.*)$/m.exec(config)![1]!;
  daemon = startDaemonProcess(box.config);
  await waitFor(`the accounts to run\n${daemon.output().slice(-2000)}`, async () =>
    (await stateOf(name('web'))) === 'running' && (await stateOf(name('other'))) === 'running' && (await stateOf(name('ctl'))) === 'running');
});

test.after.always(async () => {
  if (!isRoot) return;
  if (daemon) await stopDaemonProcess(daemon);
  await removeAccounts(prefix);
  await box?.cleanup();
  await server?.close();
});

terminalTest('a slice user\'s key opens a terminal shell as the sliver, inside its cgroup', async (t) => {
  const web = name('web');
  const uid = (await db()).accounts[web]!.uid;
  const out = await ssh(web, 'user', [], 'id -u; tty; cat /proc/self/cgroup; echo "home=$HOME user=$USER"; exit 3\n', ['-tt']);
  t.is(out.code, 3, out.stderr);
  t.regex(out.stdout, new RegExp(`^${uid}\\r?$`, 'm'));
  t.regex(out.stdout, /^\/dev\/pts\/\d+\r?$/m);
  t.regex(out.stdout, new RegExp(`^\\d+:cpu:/${parent}/${web}\\r?$`, 'm'));
  t.regex(out.stdout, new RegExp(`home=/home/${web} user=${web}`));
});

/** The daemon's resident memory, in bytes. */
async function daemonRss(): Promise<number> {
  const status = await readFile(`/proc/${daemon.child.pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]) * 1024;
}

terminalTest('a program that does not read its terminal makes the client wait, not the daemon hold what it sends', async (t) => {
  const client = await sshLogin(port, name('web'), keys['user']!.privateKey);
  const channel = await new Promise<import('ssh2').ClientChannel>((resolve, reject) =>
    client.exec('stty raw -echo; echo ready; exec sleep 60', { pty: { rows: 24, cols: 80, term: 'xterm' } }, (error, c) => (error ? reject(error) : resolve(c))));
  await new Promise<void>((resolve) => channel.once('data', () => resolve()));
  const before = await daemonRss();
  // 64 MiB offered at once: ssh2's client keeps what the gateway's window does not let through.
  const chunk = Buffer.alloc(1024 * 1024, 'x');
  for (let i = 0; i < 64; i++) channel.write(chunk);
  let most = 0;
  for (let i = 0; i < 25; i++) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    most = Math.max(most, (await daemonRss()) - before);
  }
  t.log(`the daemon grew by ${(most / 1048576).toFixed(1)} MiB at most`);
  t.true(most < 48 * 1024 * 1024, `the daemon grew by ${(most / 1048576).toFixed(1)} MiB while 64 MiB were offered`);
  channel.close();
  client.end();
});

terminalTest('the terminal has the client\'s size and follows its window changes', async (t) => {
  const client = await sshLogin(port, name('web'), keys['user']!.privateKey);
  const output = await new Promise<string>((resolve, reject) => {
    // After the resize the shell waits (up to 5 s) for the terminal to have changed size, instead of
    // the client waiting a while before it lets the shell go on.
    const afterResize = 'for i in $(seq 100); do [ "$(stty size)" = "30 100" ] || break; sleep 0.05; done; stty size';
    client.exec(`stty size; read line; ${afterResize}`, { pty: { rows: 30, cols: 100, term: 'xterm' } }, (error, channel) => {
      if (error) return reject(error);
      let out = '';
      channel.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('30 100') && !out.includes('resized')) {
          out += 'resized';
          channel.setWindow(40, 120, 0, 0);
          channel.write('go\n');
        }
      });
      channel.on('close', () => resolve(out));
    });
  });
  client.end();
  t.regex(output, /30 100/);
  t.regex(output, /40 120/);
});

serial('an exec runs one command as the sliver and returns its exit status and output', async (t) => {
  const web = name('web');
  const ok = await ssh(web, 'user', ['echo hello; id -un; echo to-stderr >&2']);
  t.is(ok.code, 0);
  t.is(ok.stdout, `hello\n${web}\n`);
  t.is(ok.stderr, 'to-stderr\n');
  t.is((await ssh(web, 'user', ['exit 42'])).code, 42);
  const fingerprint = /SHA256:\S+/.exec((await run('ssh-keygen', ['-lf', `${keys['user']!.path}.pub`])).stdout)![0];
  await waitFor('the session logged', async () => daemon.output().includes('command="exit 42"'));
  const line = daemon.output().split('\n').find((l) => l.includes('ssh session ended') && l.includes('command="exit 42"'))!;
  for (const part of [`account=${web}`, `key=${fingerprint}`, 'remote=127.0.0.1:', 'exit_status=42', 'duration_ms=']) t.true(line.includes(part), `${part} in ${line}`);
  t.is((await ssh(web, 'user', ['cat'], 'through stdin\n')).stdout, 'through stdin\n');
});

serial('a delegate calls the API through ssh: results for slices it controls, fault 108 for others', async (t) => {
  const ctl = name('ctl');
  const mine = await ssh(ctl, 'delegate', [], getRSpecRequest(name('web')));
  t.is(mine.code, 0, mine.stderr);
  t.regex(mine.stdout, /<name>cpu_share<\/name><value><int>2<\/int><\/value>/);
  const notMine = await ssh(ctl, 'delegate', [], getRSpecRequest(name('other')));
  t.is(notMine.code, 0);
  t.regex(notMine.stdout, /<name>faultCode<\/name><value><int>108<\/int>/);
});

serial('wrong key, unknown user, disabled sliver, password and keyboard-interactive are refused alike', async (t) => {
  for (const [user, key] of [[name('web'), 'stranger'], ['nosuchuser', 'user'], [name('off'), 'user'], [name('web'), 'delegate']] as const) {
    const out = await ssh(user, key, ['true']);
    t.is(out.code, 255, `${user} with ${key}`);
    t.regex(out.stderr, /Permission denied \(publickey\)/, `${user} with ${key}`);
  }
  for (const method of ['password', 'keyboard-interactive'] as const) {
    const error = await new Promise<Error | null>((resolve) => {
      const client = new Client();
      client.on('ready', () => {
        client.end();
        resolve(null);
      });
      client.on('error', resolve);
      client.on('keyboard-interactive', (_n, _i, _l, _p, finish) => finish(['secret']));
      client.connect({
        host: '127.0.0.1', port, username: name('web'), readyTimeout: 10_000,
        ...(method === 'password' ? { password: 'secret' } : { tryKeyboard: true }),
      });
    });
    t.regex(String(error), /authentication methods failed/, method);
  }
});

serial('a key that leaves the document stops working at the next sync', async (t) => {
  const web = name('web');
  t.is((await ssh(web, 'removed', ['true'])).code, 0);
  slices[0] = { ...slices[0]!, users: { 1: keys['user']!.line } };
  publish();
  await synced('the key removed', async () => (await db()).records[`sliver_${web}`]?.type === 'sliver'
    && !((await db()).records[`sliver_${web}`] as unknown as { keys: string[] }).keys.includes(keys['removed']!.line));
  const out = await ssh(web, 'removed', ['true']);
  t.is(out.code, 255);
  t.is((await ssh(web, 'user', ['true'])).code, 0);
});

/**
 * Logs in as `user` knowing only a public key: a signature of 64 zero bytes, made by no private
 * key, under the public key algorithm `algorithm`. ssh2's client has no public way to send a
 * signature of one's own, hence its protocol object. True when the gateway let it in.
 */
function loginWithPublicKeyOnly(user: string, publicKeyLine: string, algorithm: string): Promise<boolean> {
  return new Promise((resolve) => {
    const client = new Client();
    let tried = false;
    client.on('ready', () => {
      client.end();
      resolve(true);
    });
    client.on('error', () => resolve(false));
    client.on('close', () => resolve(false));
    client.connect({
      host: '127.0.0.1', port, username: user, readyTimeout: 10_000,
      authHandler: (_methods, _partial, next) => {
        if (tried) return next(false as never);
        tried = true;
        const protocol = (client as unknown as { _protocol: { authPK(user: string, key: string, algorithm: string, sign: (data: Buffer, done: (signature: Buffer) => void) => void): void } })._protocol;
        protocol.authPK(user, publicKeyLine, algorithm, (_data, done) => done(Buffer.alloc(64)));
      },
    });
  });
}

serial('a client that knows only the public key is refused, whatever algorithm it names for it', async (t) => {
  // rsa-sha2-256 for an ed25519 key made ssh2's check throw, and its Error passed for a signature.
  for (const algorithm of ['ssh-ed25519', 'rsa-sha2-256', 'rsa-sha2-512', 'ssh-rsa', 'ecdsa-sha2-nistp256']) {
    t.false(await loginWithPublicKeyOnly(name('web'), keys['user']!.line, algorithm), algorithm);
    t.false(await loginWithPublicKeyOnly(name('ctl'), keys['delegate']!.line, algorithm), `delegate, ${algorithm}`);
  }
  t.is((await ssh(name('web'), 'user', ['echo still open'])).stdout, 'still open\n', 'the right key still logs in');
});

serial('a command killed by a signal ssh cannot name (SIGBUS, SIGXCPU) ends with 128 + its number, and the gateway goes on', async (t) => {
  const web = name('web');
  t.is((await ssh(web, 'user', ['kill -BUS $$'])).code, 128 + 7);
  t.is((await ssh(web, 'user', ['kill -XCPU $$'])).code, 128 + 24);
  t.is((await ssh(web, 'user', ['echo still here'])).stdout, 'still here\n');
  t.is(daemon.child.exitCode, null, 'the daemon runs');
});

serial('a session ends when its client goes: its program gets SIGHUP, and one that ignores it runs on without holding the session', async (t) => {
  const web = name('web');
  // A sleep no other test runs: its argument marks it (and names it in the session's log line).
  const marker = `3000.${Date.now() % 1_000_000}`;
  const client = await sshLogin(port, web, keys['user']!.privateKey);
  // The hangup ignored, and still so after the exec; it writes nothing, so no SIGPIPE ends it.
  const command = `trap "" HUP; echo started; exec sleep ${marker}`;
  const channel = await new Promise<import('ssh2').ClientChannel>((resolve, reject) =>
    client.exec(command, (error, c) => (error ? reject(error) : resolve(c))));
  await new Promise<void>((resolve) => channel.once('data', () => resolve()));
  client.end();
  await waitFor('the session logged as ended', async () =>
    daemon.output().split('\n').some((l) => l.includes('ssh session ended') && l.includes(marker)));
  const line = daemon.output().split('\n').find((l) => l.includes('ssh session ended') && l.includes(marker))!;
  t.true(line.includes('exit_status=HUP'), line);
  const lingering = (await processesOf(web)).filter((p) => p.includes(marker));
  t.true(lingering.length > 0, 'the program that ignores SIGHUP runs on in the sliver');
  await run('pkill', ['-KILL', '-u', web, '-f', marker]).catch(() => undefined);
});

serial('50 sessions at once all succeed, and a client that stops reading does not hold up the others', async (t) => {
  const web = name('web');
  // A session whose output nobody reads: it fills its window and must then wait alone.
  const stalled = await sshLogin(port, web, keys['user']!.privateKey);
  const stream = await new Promise<import('ssh2').ClientChannel>((resolve, reject) =>
    stalled.exec('yes nodemgr', (error, channel) => (error ? reject(error) : resolve(channel))));
  stream.pause();
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => ssh(web, 'user', [`echo session ${i}`])));
  t.deepEqual(results.map((r) => r.code), Array(50).fill(0));
  t.deepEqual(results.map((r) => r.stdout), Array.from({ length: 50 }, (_, i) => `session ${i}\n`));
  stalled.end();
});

serial('a stopped sliver is refused with a message; nodemgr status shows the host key\'s fingerprint', async (t) => {
  const web = name('web');
  const stop = await nodemgr(['call', '--config', box.config, 'Stop', JSON.stringify(web)]);
  t.is(stop.code, 0, stop.stderr);
  await waitFor('the sliver stopped', async () => (await stateOf(web)) === 'stopped');
  const out = await ssh(web, 'user', ['true']);
  t.is(out.code, 1);
  t.regex(out.stderr, /is stopped/);
  const scan = await run('sh', ['-c', `ssh-keyscan -p ${port} -t ed25519 127.0.0.1 2>/dev/null | ssh-keygen -lf -`]);
  const fingerprint = /SHA256:\S+/.exec(scan.stdout)![0];
  const status = await nodemgr(['status', '--config', box.config]);
  t.regex(status.stdout, new RegExp(`ssh gateway: 127\\.0\\.0\\.1:${port}, host key ${fingerprint.replace(/[+/]/g, '\\$&')}`));
});
