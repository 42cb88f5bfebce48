// QEMU's guest agent for the test guest: Debian's qemu-ga and the shared libraries it loads, taken
// out of their packages (apt-get download, dpkg-deb -x; nothing is installed on the host). Which
// libraries it needs is read from the ELF files themselves (their interpreter and NEEDED entries),
// so the initramfs holds what qemu-ga loads and nothing more.
import { lstat, mkdir, readFile, readdir, readlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { runCommand } from '../../../src/host/exec.js';

export const AGENT_PACKAGE = 'qemu-guest-agent';
/** Where qemu-ga is inside the guest (and in its package). */
export const AGENT_BINARY = 'usr/sbin/qemu-ga';
/** Where the guest's libraries go: a directory Debian's dynamic loader searches without a cache. */
const GUEST_LIBRARY_DIR = 'lib/x86_64-linux-gnu';
/** Where the packages put libraries, inside the unpacked tree. */
const LIBRARY_DIRS = ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu', 'lib64', 'usr/lib64'];

export interface GuestFile {
  /** Its path inside the guest, without the leading "/". */
  readonly name: string;
  readonly mode: number;
  readonly data: Buffer;
}

/** The agent package's version as apt would download it: a new one is a new test guest. */
export async function agentPackageVersion(): Promise<string> {
  const { stdout } = await runCommand('apt-cache', ['policy', AGENT_PACKAGE]);
  const version = /Candidate:\s*(\S+)/.exec(stdout)?.[1];
  if (!version || version === '(none)') throw new Error(`test guest: apt-cache policy ${AGENT_PACKAGE} offers no version (apt-get update?)`);
  return version;
}

/** What an ELF file asks of the dynamic loader: its interpreter (PT_INTERP) and its NEEDED libraries. Pure. */
export function elfDependencies(elf: Buffer): { interpreter: string | null; needed: string[] } {
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) throw new Error('not a 64-bit little-endian ELF file');
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  const headers = Array.from({ length: phnum }, (_, i) => {
    const at = phoff + i * phentsize;
    return {
      type: elf.readUInt32LE(at), offset: Number(elf.readBigUInt64LE(at + 8)),
      vaddr: Number(elf.readBigUInt64LE(at + 16)), filesz: Number(elf.readBigUInt64LE(at + 32)),
    };
  });
  const cString = (at: number) => elf.toString('latin1', at, elf.indexOf(0, at));
  const interp = headers.find((h) => h.type === 3); // PT_INTERP
  const dynamic = headers.find((h) => h.type === 2); // PT_DYNAMIC
  const needed: number[] = [];
  let strtab: number | null = null;
  for (let at = dynamic?.offset ?? 0; dynamic && at < dynamic.offset + dynamic.filesz; at += 16) {
    const tag = Number(elf.readBigInt64LE(at));
    const value = Number(elf.readBigUInt64LE(at + 8));
    if (tag === 0) break; // DT_NULL
    if (tag === 1) needed.push(value); // DT_NEEDED: an offset into the string table
    if (tag === 5) strtab = value; // DT_STRTAB: an address, mapped to the file by its PT_LOAD
  }
  const load = headers.find((h) => h.type === 1 && strtab !== null && strtab >= h.vaddr && strtab < h.vaddr + h.filesz);
  if (needed.length > 0 && (strtab === null || !load)) throw new Error('ELF file names libraries but its string table is not in a loaded segment');
  const table = load ? load.offset + (strtab! - load.vaddr) : 0;
  return { interpreter: interp ? cString(interp.offset) : null, needed: needed.map((offset) => cString(table + offset)) };
}

/** The agent's package and the library packages it depends on, all the way down (not the tools its scripts use). */
async function packagesToFetch(): Promise<string[]> {
  const dependsOf = async (names: string[], recurse: boolean) => {
    const flags = ['--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', '--no-pre-depends'];
    const { stdout } = await runCommand('apt-cache', ['depends', ...(recurse ? ['--recurse'] : []), ...flags, ...names]);
    return stdout;
  };
  // Its own Depends are libraries; its Pre-Depends (init-system-helpers) would pull in perl.
  const direct = [...(await dependsOf([AGENT_PACKAGE], false)).matchAll(/^\s+Depends: ([^<\s]\S*)$/gm)].map((m) => m[1]!);
  const all = (await dependsOf(direct, true)).split('\n').filter((line) => /^[a-z0-9]/.test(line)).map((line) => line.trim());
  return [...new Set([AGENT_PACKAGE, ...all])];
}

/** A path inside the unpacked tree with every link resolved inside the tree. */
async function resolveInTree(tree: string, path: string): Promise<string> {
  let at = path;
  for (let hops = 0; hops < 16; hops++) {
    const st = await lstat(join(tree, at)).catch(() => null);
    if (!st) throw new Error(`test guest: ${at} is not in the unpacked agent packages`);
    if (!st.isSymbolicLink()) return at;
    const target = await readlink(join(tree, at));
    at = target.startsWith('/') ? target.slice(1) : join(dirname(at), target);
  }
  throw new Error(`test guest: too many links from ${path} in the unpacked agent packages`);
}

/**
 * Downloads the agent's packages into `work`, unpacks them, and returns qemu-ga with every library
 * it loads, directly or through another, as files of the guest (each under its soname, the
 * loader at the path qemu-ga names).
 */
export async function agentFiles(work: string): Promise<GuestFile[]> {
  const downloads = join(work, 'agent-debs');
  const tree = join(work, 'agent-tree');
  await mkdir(downloads, { recursive: true });
  await mkdir(tree, { recursive: true });
  const packages = await packagesToFetch();
  await runCommand('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', ...packages], { cwd: downloads, timeoutMs: 600_000 });
  for (const deb of (await readdir(downloads)).filter((name) => name.endsWith('.deb'))) {
    await runCommand('dpkg-deb', ['-x', join(downloads, deb), tree], { timeoutMs: 300_000 });
  }
  const binary = await readFile(join(tree, AGENT_BINARY));
  const files: GuestFile[] = [{ name: AGENT_BINARY, mode: 0o100755, data: binary }];
  const { interpreter, needed } = elfDependencies(binary);
  if (interpreter === null) throw new Error(`test guest: ${AGENT_BINARY} names no interpreter`);
  files.push({ name: interpreter.slice(1), mode: 0o100755, data: await readFile(join(tree, await resolveInTree(tree, interpreter.slice(1)))) });
  const queue = [...needed];
  const seen = new Set<string>();
  while (queue.length > 0) {
    const soname = queue.shift()!;
    if (seen.has(soname)) continue;
    seen.add(soname);
    const dir = await findLibrary(tree, soname);
    const data = await readFile(join(tree, await resolveInTree(tree, join(dir, soname))));
    files.push({ name: join(GUEST_LIBRARY_DIR, soname), mode: 0o100755, data });
    queue.push(...elfDependencies(data).needed);
  }
  return files;
}

async function findLibrary(tree: string, soname: string): Promise<string> {
  for (const dir of LIBRARY_DIRS) {
    if (await lstat(join(tree, dir, soname)).then(() => true, () => false)) return dir;
  }
  throw new Error(`test guest: no package of the agent's dependencies has ${soname}`);
}
