// A throwaway Debian 12 virtual machine with systemd as PID 1, for the tests of nodemgr's unit.
// test/systemd-setup.sh makes (once) and caches its image; each boot runs over a copy-on-write
// overlay that is deleted afterwards, so every test run starts from the same clean system.
//
// The test reaches the guest only over ssh, on a port QEMU forwards from the host's loopback; the
// guest's network is QEMU's user-mode network with `restrict=on`, so it has a real interface
// (virtio-net with an address and a default route, which nodemgr shapes) but sends nothing beyond
// QEMU itself. Files come in read-only over a 9p share.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { waitFor } from '../../support/wait.js';
import { freePort, projectRoot } from '../../system/support/host.js';

const run = promisify(execFile);

export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number;
}

export interface Guest {
  /** Runs a shell script in the guest as root; never throws for a non-zero exit. */
  sh(script: string, timeoutMs?: number): Promise<CommandResult>;
  /** As sh, but throws with the script's output unless it exits 0; returns its stdout. */
  must(script: string, timeoutMs?: number): Promise<string>;
  /** What the guest's kernel and systemd wrote on the serial console. */
  console(): Promise<string>;
  /** Powers the guest off (kills QEMU) and deletes its overlay. */
  destroy(): Promise<void>;
  /** How QEMU runs the guest: kvm or tcg (software emulation). */
  readonly accel: 'kvm' | 'tcg';
}

/** Where the mount tag of the share is mounted in the guest. */
export const SHARE_MOUNT = '/mnt/host';
const SHARE_TAG = 'host';
/** A software-emulated boot of Debian's kernel and systemd takes a minute or two on a busy 2-core host. */
const BOOT_TIMEOUT_MS = 6 * 60_000;
const COMMAND_TIMEOUT_MS = 5 * 60_000;

/** Makes (or finds in the cache) the guest image; its directory. */
export async function guestImage(): Promise<string> {
  const { stdout } = await run('bash', [join(projectRoot, 'test/systemd-setup.sh')], { maxBuffer: 16 << 20, timeout: 30 * 60_000 });
  return stdout.trim().split('\n').at(-1)!;
}

/** Boots a guest from the image in `imageDir`, sharing the host directory `share` read-only. */
export async function bootGuest(imageDir: string, share: string): Promise<Guest> {
  const work = await mkdtemp(join(tmpdir(), 'nodemgr-guest-'));
  const overlay = join(work, 'overlay.qcow2');
  const consoleFile = join(work, 'console.log');
  const key = join(imageDir, 'id_ed25519');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', join(imageDir, 'base.img'), overlay]);
  const accel = await access('/dev/kvm').then(() => 'kvm' as const, () => 'tcg' as const);
  const port = await freePort();
  const qemu: ChildProcess = spawn('qemu-system-x86_64', [
    '-accel', accel, '-m', '2048', '-smp', '2', '-nodefaults', '-display', 'none', '-no-reboot',
    '-kernel', join(imageDir, 'vmlinuz'), '-initrd', join(imageDir, 'initrd.img'),
    // Debian 12's defaults, said out loud: the unified cgroup hierarchy with every controller.
    '-append', 'root=LABEL=nodemgr-root rw console=ttyS0 panic=-1 systemd.unified_cgroup_hierarchy=1',
    '-drive', `file=${overlay},if=virtio,format=qcow2,cache=unsafe`,
    '-netdev', `user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:${port}-:22`, '-device', 'virtio-net-pci,netdev=net0',
    '-virtfs', `local,path=${share},mount_tag=${SHARE_TAG},security_model=none,readonly=on`,
    '-serial', `file:${consoleFile}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let qemuErrors = '';
  qemu.stderr?.on('data', (chunk: Buffer) => (qemuErrors += chunk.toString()));
  const exited = new Promise<void>((done) => qemu.once('exit', () => done()));

  const sshArgs = [
    '-i', key, '-p', String(port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=10', '-o', 'ServerAliveInterval=15', 'root@127.0.0.1',
  ];
  const sh = async (script: string, timeoutMs = COMMAND_TIMEOUT_MS): Promise<CommandResult> => {
    try {
      const { stdout, stderr } = await run('ssh', [...sshArgs, script], { timeout: timeoutMs, maxBuffer: 64 << 20 });
      return { stdout, stderr, code: 0 };
    } catch (error) {
      const e = error as { stdout?: string; stderr?: string; code?: number | string };
      if (typeof e.code !== 'number') throw error;
      return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: e.code };
    }
  };
  const guestConsole = () => readFile(consoleFile, 'utf8').catch(() => '');
  const destroy = async () => {
    if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    await exited;
    await rm(work, { recursive: true, force: true });
  };

  try {
    await waitFor('the guest to boot and answer ssh', async () => {
      if (qemu.exitCode !== null) throw new Error(`qemu exited (${qemu.exitCode}): ${qemuErrors}`);
      return (await sh('systemctl is-system-running --wait >/dev/null; true', 60_000).catch(() => null))?.code === 0;
    }, { timeoutMs: BOOT_TIMEOUT_MS, intervalMs: 2_000 });
    const mounted = await sh(`mkdir -p ${SHARE_MOUNT} && mount -t 9p -o trans=virtio,version=9p2000.L,ro ${SHARE_TAG} ${SHARE_MOUNT}`);
    if (mounted.code !== 0) throw new Error(`cannot mount the host's share in the guest: ${mounted.stderr}`);
  } catch (error) {
    const tail = (await guestConsole()).slice(-4000);
    await destroy();
    throw new Error(`${String(error)}\nthe guest's console ended with:\n${tail}`);
  }

  const must = async (script: string, timeoutMs?: number) => {
    const result = await sh(script, timeoutMs);
    if (result.code !== 0) throw new Error(`in the guest, \`${script}\` exited ${result.code}:\n${result.stdout}${result.stderr}`);
    return result.stdout;
  };
  return { sh, must, console: guestConsole, destroy, accel };
}
