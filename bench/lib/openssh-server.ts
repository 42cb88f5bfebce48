// Debian's OpenSSH server as bench/ssh.ts's peer: sshd started by the bench on a loopback port with
// a configuration, host key (ed25519, like the gateway's) and authorized key of its own in a
// scratch directory; never the host's sshd, never port 22. It logs in as an account of its own,
// made for the run (/bin/sh, home in the scratch directory) and removed after: a login as root
// would run root's shell start-up files, which on a developer's host can take seconds (pyenv).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const SSHD = '/usr/sbin/sshd';
const BENCH_USER = 'nmbench_ssh';

export interface OpenSshServer {
  readonly port: number;
  readonly username: string;
  readonly version: string;
  stop(): Promise<void>;
}

/** Why sshd cannot be run here, or null when it can. */
export function sshdUnavailable(): string | null {
  if (!existsSync(SSHD)) return `${SSHD} is missing (Debian package openssh-server; test/host-setup.sh installs it)`;
  if (process.getuid?.() !== 0) return 'sshd needs root to log a user in (and the bench makes an account for it)';
  return null;
}

/** A free loopback port: bound once by us, then released for sshd. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/** Resolves once a connection to `port` succeeds; rejects if sshd exits or 10 s pass first. */
function waitForListening(port: number, child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 10_000;
    const exited = (code: number | null) => reject(new Error(`sshd exited (${code}) before listening`));
    child.once('exit', exited);
    const attempt = () => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        child.off('exit', exited);
        resolve();
      });
      socket.once('error', () => {
        if (Date.now() > deadline) reject(new Error('sshd did not listen within 10 s'));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/** Starts sshd taking `publicKey` (an OpenSSH public key line) for the bench's user. */
export async function startOpenSsh(publicKey: string): Promise<OpenSshServer> {
  const dir = mkdtempSync(join(tmpdir(), 'nodemgr-bench-sshd-'));
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const keygen = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey], { encoding: 'utf8' });
  if (keygen.status !== 0) throw new Error(`ssh-keygen failed: ${keygen.stderr}`);
  writeFileSync(join(dir, 'authorized_keys'), `${publicKey}\n`, { mode: 0o600 });
  const port = await freePort();
  const username = BENCH_USER;
  spawnSync('userdel', [BENCH_USER], { stdio: 'ignore' }); // one left by an interrupted run
  const useradd = spawnSync('useradd', ['-M', '-d', dir, '-s', '/bin/sh', '-p', '*', '-c', 'nodemgr ssh bench', BENCH_USER], { encoding: 'utf8' });
  if (useradd.status !== 0) throw new Error(`useradd ${BENCH_USER}: ${useradd.stderr.trim()}`);
  // (-p '*': no password, yet not locked, which sshd without PAM would refuse.)
  // sshd reads the authorized keys as the user: the user's own file, in a directory it may enter.
  const uid = Number(spawnSync('id', ['-u', BENCH_USER], { encoding: 'utf8' }).stdout.trim());
  chmodSync(dir, 0o755);
  chownSync(join(dir, 'authorized_keys'), uid, uid);
  // The settings a login costs with: public key only, no PAM session, no DNS lookups; enough
  // unauthenticated connections (MaxStartups) for 20 clients at once.
  writeFileSync(join(dir, 'sshd_config'), [
    `ListenAddress 127.0.0.1:${port}`, `HostKey ${hostKey}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'StrictModes no', `AllowUsers ${username}`,
    'PermitRootLogin no', 'PubkeyAuthentication yes', 'PasswordAuthentication no',
    'KbdInteractiveAuthentication no', 'UsePAM no', 'UseDNS no', 'MaxStartups 200', 'MaxSessions 10',
    'LogLevel QUIET', 'PrintMotd no', 'Subsystem sftp internal-sftp', '',
  ].join('\n'));
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // its privilege separation directory
  const check = spawnSync(SSHD, ['-t', '-f', join(dir, 'sshd_config')], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`sshd -t: ${check.stderr.trim()}`);
  const version = spawnSync(SSHD, ['-V'], { encoding: 'utf8' }).stderr.split('\n', 1)[0]!.split(',')[0]!;
  const child = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitForListening(port, child);
  return {
    port, username, version,
    stop: () => new Promise((resolve) => {
      child.once('exit', () => {
        spawnSync('userdel', [BENCH_USER], { stdio: 'ignore' });
        rmSync(dir, { recursive: true, force: true });
        resolve();
      });
      child.kill('SIGTERM');
    }),
  };
}
