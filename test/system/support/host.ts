// Helpers for system tests that run the real daemon against the real host (as root).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { createSliverCgroups } from '../../../src/limits/cgroups.js';
import { waitFor } from '../../support/wait.js';
import { LEASE_DIR, leaseUids, type UidLease, type UidRange } from './uid-leases.js';

export { waitFor };
export type { UidLease, UidRange };

export const run = promisify(execFile);
/** Whether the tests run as root: the one test of it for every test that needs root. */
export const isRoot = process.getuid?.() === 0;
export const projectRoot = resolve(import.meta.dirname, '../../..');
export const cli = join(projectRoot, 'dist/src/cli/main.js');

/** A short random prefix so that accounts of one run never meet another's. */
export function accountPrefix(): string {
  return `nt${randomBytes(3).toString('hex')}`;
}

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  gecos: string;
  home: string;
  shell: string;
}

export async function passwdEntries(prefix: string): Promise<PasswdEntry[]> {
  const text = await readFile('/etc/passwd', 'utf8');
  return text
    .split('\n')
    .filter((line) => line.startsWith(prefix))
    .map((line) => {
      const [name, , uid, gid, gecos, home, shell] = line.split(':');
      return { name: name!, uid: Number(uid), gid: Number(gid), gecos: gecos!, home: home!, shell: shell! };
    });
}

/** Removes every account (and its processes and home) whose name starts with the prefix. */
export async function removeAccounts(prefix: string): Promise<void> {
  for (const entry of await passwdEntries(prefix)) {
    await run('pkill', ['-KILL', '-u', entry.name]).catch(() => undefined);
    await run('userdel', ['-r', '-f', entry.name]).catch(() => undefined);
    await rm(entry.home, { recursive: true, force: true });
  }
}

export interface DocumentServer {
  url: string;
  requests: number;
  set(body: string): void;
  /** Makes the server answer 503 (true) or serve again (false). */
  fail(failing: boolean): void;
  close(): Promise<void>;
}

export async function serveDocument(initial: string): Promise<DocumentServer> {
  let body = initial;
  let failing = false;
  const state = { requests: 0 };
  const server: Server = createServer((req, res) => {
    state.requests++;
    if (failing) {
      res.writeHead(503).end('authority down');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/xml' }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no address');
  return {
    url: `http://127.0.0.1:${address.port}/slices.xml`,
    get requests() {
      return state.requests;
    },
    set: (b) => {
      body = b;
    },
    fail: (f) => {
      failing = f;
    },
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** A TCP port free on 127.0.0.1 a moment ago. */
export async function freePort(): Promise<number> {
  const probe = createTcpServer();
  await new Promise<void>((done) => probe.listen(0, '127.0.0.1', done));
  const address = probe.address();
  await new Promise((done) => probe.close(done));
  return typeof address === 'object' && address ? address.port : 0;
}

export interface Sandbox {
  dir: string;
  config: string;
  stateDir: string;
  /** The daemon's sliver_uid_min..sliver_uid_max: leased for this sandbox, or the range it was given. */
  uids: UidLease;
  cleanup(): Promise<void>;
}

export interface SandboxOptions {
  /**
   * How many uids to lease for the daemon (default 100), or a lease held elsewhere for it to share
   * (a second state directory over the same accounts); a shared lease is not released at cleanup.
   */
  uids?: number | UidLease;
}

/** Which lease each sandbox's configuration uses, so that its daemons hold the lease too. */
const leaseOfConfig = new Map<string, UidLease>();

/**
 * The marked accounts (a daemon's: GECOS "nodemgr sliver" or "nodemgr delegate") with a uid in
 * the range, with their processes and homes. Only for a range the caller holds: what is there is
 * what an earlier holder's daemon left (a crashed run) or what the caller's own daemon made.
 */
export async function removeAccountsInRange(range: UidRange): Promise<void> {
  const text = await readFile('/etc/passwd', 'utf8');
  for (const line of text.split('\n')) {
    const [name, , uid, , gecos, home] = line.split(':');
    if (!name || !/^nodemgr (sliver|delegate)$/.test(gecos ?? '')) continue;
    if (Number(uid) < range.min || Number(uid) > range.max) continue;
    await run('pkill', ['-KILL', '-u', name]).catch(() => undefined);
    await run('userdel', ['-r', '-f', name]).catch(() => undefined);
    if (home?.endsWith(`/${name}`)) await rm(home, { recursive: true, force: true });
  }
}

/**
 * A uid range from the tests' one allocator (support/uid-leases.ts) for `purpose` (say, the test
 * file), found clean and left clean: as root, the marked accounts in it are removed when it is
 * leased (a crashed holder's) and when it is released (what the holder's daemons made).
 */
export async function leaseTestUids(count: number, purpose: string): Promise<UidLease> {
  // A test that is not root can neither make accounts nor run anything as another uid: its leases
  // (a sandbox's, say) are its own business, kept apart from root's.
  const dir = isRoot ? LEASE_DIR : join(tmpdir(), `nodemgr-test-uid-leases-${process.getuid?.()}`);
  const lease = await leaseUids({ count, purpose, dir });
  if (isRoot) await removeAccountsInRange(lease);
  return {
    min: lease.min,
    max: lease.max,
    hold: (pid) => lease.hold(pid),
    async release() {
      if (isRoot) await removeAccountsInRange(lease);
      await lease.release();
    },
  };
}

/**
 * A configuration whose state, run and log directories live in a fresh temp directory, and whose
 * uid range is leased from the tests' one allocator (support/uid-leases.ts): never pass
 * sliver_uid_min or sliver_uid_max, ask for a size (or share a lease) in `options.uids`.
 */
export async function sandbox(settings: Record<string, string | number>, options: SandboxOptions = {}): Promise<Sandbox> {
  for (const key of ['sliver_uid_min', 'sliver_uid_max']) {
    if (key in settings) throw new Error(`sandbox: ${key} comes from the uid allocator; ask for { uids } instead`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-test-'));
  // the run directory holds the initscripts, which the slivers' users must be able to reach
  await chmod(dir, 0o755);
  const stateDir = join(dir, 'state');
  const ownLease = typeof options.uids !== 'object';
  const uids = typeof options.uids === 'object' ? options.uids : await leaseTestUids(options.uids ?? 100, `a test daemon in ${dir}`);
  const lines = {
    state_dir: stateDir,
    run_dir: join(dir, 'run'),
    log_dir: join(dir, 'log'),
    poll_period: 3600,
    poll_jitter: 0,
    op_retry_initial: 1,
    op_retry_max: 2,
    // Daemons of tests run side by side: no fixed TCP port (each has its own Unix socket).
    api_port: 0,
    // Each daemon installs its own copy of the delegates' shell (and lists it in /etc/shells).
    delegate_shell: join(dir, 'libexec', 'forward_api_calls'),
    // Each daemon has its own cgroups, removed at cleanup, and shapes no device unless a test
    // gives it one of its own namespaces' (the host's uplink is not the tests' to shape).
    cgroup_parent: `nodemgr-test-${randomBytes(4).toString('hex')}`,
    shaping_device: 'none',
    // No fixed ssh port either: a test that wants the gateway gives it a free one.
    ssh_port: 0,
    // Nor for the metrics: a test that scrapes gives it a free one.
    metrics_port: 0,
    // A daemon destroys the marked accounts of its uid range that it does not want: every
    // daemon's range is leased, and no other test holds it while the lease lasts.
    sliver_uid_min: uids.min,
    sliver_uid_max: uids.max,
    // Images, guests' files and the address pool of each daemon are its own.
    image_cache_dir: join(dir, 'images'),
    guest_dir: join(dir, 'guests'),
    address_pool: join(dir, 'mac-addresses'),
    ...settings,
  };
  const config = join(dir, 'nodemgr.conf');
  await writeFile(config, Object.entries(lines).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
  leaseOfConfig.set(config, uids);
  const cleanup = async () => {
    leaseOfConfig.delete(config);
    await unlistShell(String(lines.delegate_shell));
    await removeCgroupParent(String(lines.cgroup_parent));
    await rm(dir, { recursive: true, force: true });
    if (ownLease) await uids.release();
  };
  return { dir, config, stateDir, uids, cleanup };
}

/** Removes a test daemon's cgroups: its slivers' groups (killing what runs in them), then its parent. */
export async function removeCgroupParent(parent: string, root = '/sys/fs/cgroup'): Promise<void> {
  const cgroups = await createSliverCgroups({ root, parent }).catch(() => null);
  if (!cgroups) return;
  for (const name of await cgroups.list().catch(() => [] as string[])) await cgroups.remove(name).catch(() => undefined);
  const hierarchies = [root, ...(await readdir(root).catch(() => [] as string[])).map((entry) => join(root, entry))];
  for (const dir of hierarchies) await rmdir(join(dir, parent)).catch(() => undefined);
}

/** Removes a test's shell from /etc/shells (the daemon only ever appends to it). */
export async function unlistShell(shell: string, shellsFile = '/etc/shells'): Promise<void> {
  const text = await readFile(shellsFile, 'utf8').catch(() => null);
  if (text === null || !text.split('\n').includes(shell)) return;
  const temporary = `${shellsFile}.nodemgr-test-${randomBytes(4).toString('hex')}`;
  await writeFile(temporary, text.split('\n').filter((line) => line !== shell).join('\n'), { mode: 0o644 });
  await rename(temporary, shellsFile);
}

export interface DaemonProcess {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

/**
 * Starts `nodemgr daemon` on a sandbox's configuration. The variables by which the daemon knows it
 * runs under systemd are left out (a test runner started by systemd has them), unless `env` gives them.
 */
export function startDaemonProcess(config: string, extraArgs: string[] = [], env: Record<string, string> = {}): DaemonProcess {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'INVOCATION_ID' && k !== 'JOURNAL_STREAM'));
  const child = spawn(process.execPath, [cli, 'daemon', '--config', config, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...inherited, ...env },
  });
  // The range stays leased while the daemon runs, even if this test process dies first.
  if (child.pid !== undefined) {
    try {
      leaseOfConfig.get(config)?.hold(child.pid);
    } catch {
      // it exited at once: it holds nothing
    }
  }
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, output: () => output, exited };
}

export async function stopDaemonProcess(daemon: DaemonProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (daemon.child.exitCode === null && daemon.child.signalCode === null) daemon.child.kill(signal);
  return daemon.exited;
}

export async function nodemgr(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args]);
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const e = error as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

export async function processesOf(user: string): Promise<string[]> {
  try {
    const { stdout } = await run('pgrep', ['-a', '-u', user]);
    return stdout.trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

/** Writes a file of the user's own into the home of each account of the prefix; their paths, by account. */
export async function writeWorkFiles(prefix: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const entry of await passwdEntries(prefix)) {
    const file = join(entry.home, 'work.txt');
    await writeFile(file, `the work of ${entry.name}\n`);
    await run('chown', [`${entry.uid}:${entry.gid}`, file]);
    files.set(entry.name, file);
  }
  return files;
}
