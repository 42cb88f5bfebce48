// One node of the fleet: a real `nodemgr daemon` (the compiled one in dist/) in a network
// namespace of its own (fleet-net.ts) and a mount namespace of its own, where /etc is an overlay
// whose upper layer starts with copies of the host's account files (and hides the host's lock
// files), so that the node's useradd and userdel change only its own passwd, shadow, group and
// gshadow (shadow-utils replaces those files by rename, which a bind-mounted single file refuses
// with EBUSY), and where /home is a directory of its own. Its state, run and log directories, cgroup parent and uid range are its own too.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { readDatabaseSnapshot } from '../../src/db/store.js';
import { namespaceOf } from './fleet-net.js';

const run = promisify(execFile);
const projectRoot = resolve(import.meta.dirname, '../..');
const cli = join(projectRoot, 'dist/src/cli/main.js');

/** Each node's uids: a block of its own, far above the ranges the tests lease (60000-79999). */
export const UID_BASE = 200_000;
export const UIDS_PER_NODE = 100;

/** The lock files shadow-utils takes beside the account files (and lckpwdf's). */
const LOCK_FILES = ['passwd.lock', 'shadow.lock', 'group.lock', 'gshadow.lock', 'subuid.lock', 'subgid.lock', '.pwd.lock'];

export interface NodeSettings {
  readonly id: number;
  readonly dir: string;
  readonly authorityUrl: string;
  readonly authorityCert: string;
  readonly authorityDelegate: string;
  readonly pollPeriod: number;
  readonly pollJitter: number;
}

export function cgroupParentOf(node: number): string {
  return `nodemgr-fleet-${node}`;
}

/** The node's configuration: the defaults a fleet would run, but for what each node owns alone. */
export function nodeConfig(s: NodeSettings): string {
  const uidMin = UID_BASE + (s.id - 1) * UIDS_PER_NODE;
  const lines: Record<string, string | number> = {
    node_id: s.id,
    authority_url: s.authorityUrl,
    poll_period: s.pollPeriod,
    poll_jitter: s.pollJitter,
    authority_cert: s.authorityCert,
    authority_delegate: s.authorityDelegate,
    state_dir: join(s.dir, 'state'),
    run_dir: join(s.dir, 'run'),
    log_dir: join(s.dir, 'log'),
    sliver_uid_min: uidMin,
    sliver_uid_max: uidMin + UIDS_PER_NODE - 1,
    // The shell is copied at start when missing or different: one copy per node, never two
    // daemons writing the same file.
    delegate_shell: join(s.dir, 'libexec', 'forward_api_calls'),
    cgroup_parent: cgroupParentOf(s.id),
    image_cache_dir: join(s.dir, 'images'),
    vc_repository_dir: join(s.dir, 'vc-repository'),
    address_pool: join(s.dir, 'mac-addresses'),
  };
  return Object.entries(lines).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n';
}

/** Makes the node's directories, its copies of the account files and its configuration. */
export async function prepareNode(s: NodeSettings): Promise<void> {
  for (const sub of ['etc', 'etc-work', 'home', 'state', 'run', 'log', 'libexec']) {
    await mkdir(join(s.dir, sub), { recursive: true, mode: 0o755 });
  }
  // cp -p keeps shadow's and gshadow's owner group and mode.
  await run('cp', ['-p', '/etc/passwd', '/etc/shadow', '/etc/group', '/etc/gshadow', join(s.dir, 'etc')]);
  // The lock files beside them must be the node's too: through the overlay, a host's useradd's
  // lock would hold up every node. A whiteout (a 0/0 character device in the upper layer) hides
  // the host's, so each node's tools lock among themselves only.
  for (const lock of LOCK_FILES) await run('mknod', [join(s.dir, 'etc', lock), 'c', '0', '0']);
  await writeFile(join(s.dir, 'nodemgr.conf'), nodeConfig(s));
}

export interface RunningNode {
  readonly id: number;
  readonly pid: number;
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL if it has not ended after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

// Runs in the new mount namespace, then becomes the daemon (exec: the spawned pid is the daemon's).
const ENTER_NODE = [
  'set -e',
  'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/etc,workdir=$1/etc-work" /etc',
  'mount --bind "$1/home" /home',
  'exec "$2" "$3" daemon --config "$1/nodemgr.conf"',
].join('\n');

/** Starts the node's daemon: nsenter into its network namespace, unshare a mount namespace. */
export function startNode(s: NodeSettings): RunningNode {
  const console = openSync(join(s.dir, 'console.log'), 'a');
  // The variables by which the daemon would think it runs under systemd are left out.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'INVOCATION_ID' && k !== 'JOURNAL_STREAM'));
  const child: ChildProcess = spawn('nsenter', [
    `--net=/run/netns/${namespaceOf(s.id)}`, '--',
    'unshare', '--mount', '--propagation', 'private', '--',
    '/bin/sh', '-c', ENTER_NODE, 'enter-node', s.dir, process.execPath, cli,
  ], { stdio: ['ignore', console, console], env, detached: true });
  closeSync(console);
  if (child.pid === undefined) throw new Error(`node ${s.id}: nsenter could not be started`);
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return {
    id: s.id,
    pid: child.pid,
    exited,
    async stop(graceMs = 30_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

export interface NodeView {
  /** The timestamp of the document in force (null: none yet). */
  readonly documentTimestamp: number | null;
  readonly accounts: number;
  readonly running: number;
}

/** What the node's database says now (null while it has written none). */
export async function viewNode(dir: string): Promise<NodeView | null> {
  try {
    const db = await readDatabaseSnapshot(join(dir, 'state', 'nodemgr.json'));
    const record = db.records['timestamp'] as { timestamp?: number } | undefined;
    const accounts = Object.values(db.accounts);
    return { documentTimestamp: record?.timestamp ?? null, accounts: accounts.length, running: accounts.filter((a) => a.state === 'running').length };
  } catch {
    return null;
  }
}

/** The last lines of the node's console, for an error that names why it did not come up. */
export async function consoleTail(dir: string, lines = 15): Promise<string> {
  const text = await readFile(join(dir, 'console.log'), 'utf8').catch(() => '');
  return text.split('\n').slice(-lines).join('\n');
}

/** Resident set size in bytes from /proc/<pid>/status; null when the process is gone. */
export async function residentBytes(pid: number): Promise<number | null> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null);
  const kb = text ? /^VmRSS:\s+(\d+) kB$/m.exec(text)?.[1] : undefined;
  return kb === undefined ? null : Number(kb) * 1024;
}
