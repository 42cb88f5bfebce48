// QEMU's guest agent for the test guest: Debian's qemu-ga (package qemu-guest-agent, installed by
// test/libvirt-setup.sh) and the shared libraries that ldd says it loads, copied from the host into
// the initramfs at the paths the dynamic loader looks for them.
import { readFile } from 'node:fs/promises';
import { runCommand } from '../../../src/host/exec.js';

export const AGENT_PACKAGE = 'qemu-guest-agent';
/** Where qemu-ga is inside the guest (and on the host, from its package). */
export const AGENT_BINARY = 'usr/sbin/qemu-ga';

export interface GuestFile {
  /** Its path inside the guest, without the leading "/". */
  readonly name: string;
  readonly mode: number;
  readonly data: Buffer;
}

/** The installed agent package's version: a new one is a new test guest. */
export async function agentPackageVersion(): Promise<string> {
  const { stdout } = await runCommand('dpkg-query', ['-W', '-f=${Version}', AGENT_PACKAGE]).catch(() => {
    throw new Error(`test guest: the ${AGENT_PACKAGE} package is not installed (test/libvirt-setup.sh installs it)`);
  });
  return stdout.trim();
}

/** The libraries (and the loader) in the output of `ldd`: their paths on the host. Pure. */
export function lddPaths(output: string): string[] {
  const paths: string[] = [];
  for (const line of output.split('\n')) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)";
    // the vDSO has no file.
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line);
    if (m) paths.push(m[1]!);
  }
  return paths;
}

/** qemu-ga and every library it loads, as files of the guest at the same paths as on the host. */
export async function agentFiles(): Promise<GuestFile[]> {
  const binary = `/${AGENT_BINARY}`;
  const { stdout } = await runCommand('ldd', [binary]);
  const files: GuestFile[] = [{ name: AGENT_BINARY, mode: 0o100755, data: await readFile(binary) }];
  for (const path of lddPaths(stdout)) files.push({ name: path.slice(1), mode: 0o100755, data: await readFile(path) });
  return files;
}
