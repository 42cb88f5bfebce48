// The delegates' login shell, made usable at daemon start: a copy of the forward_api_calls built
// with the package is put where every delegate can execute it (the package itself may live in a
// directory only root can enter, such as a clone under /root), and its path is listed in
// /etc/shells, which sshd's and PAM's shell checks consult.
import { randomBytes } from 'node:crypto';
import { access, appendFile, chmod, constants, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface DelegateShellOptions {
  /** The configured login shell of delegate accounts. */
  readonly target: string;
  /** The forward_api_calls built with the package. */
  readonly built: string;
  readonly shellsFile?: string;
}

export interface DelegateShellResult {
  /** The target was written (missing, or different from the built program). */
  readonly installed: boolean;
  /** The target's line was added to the shells file. */
  readonly listed: boolean;
  /** Directories on the way to the target that other users cannot enter (so delegates cannot run it). */
  readonly unreachableBy: readonly string[];
}

async function readOrNull(path: string): Promise<Buffer | null> {
  return readFile(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return null;
    throw error;
  });
}

/** Ancestors of `path` that lack the search bit for others. */
async function unreachableAncestors(path: string): Promise<string[]> {
  const blocked: string[] = [];
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const st = await stat(dir).catch(() => null);
    if (st && (st.mode & 0o001) === 0) blocked.push(dir);
    if (dirname(dir) === dir) return blocked.reverse();
  }
}

export async function installDelegateShell(options: DelegateShellOptions): Promise<DelegateShellResult> {
  const { target, built } = options;
  const shellsFile = options.shellsFile ?? '/etc/shells';
  let installed = false;
  if (target !== built) {
    const program = await readOrNull(built);
    if (program === null) throw new Error(`the delegates' shell ${built} has not been built: run \`npm run build:native\``);
    const current = await readOrNull(target);
    if (current === null || !current.equals(program)) {
      await mkdir(dirname(target), { recursive: true, mode: 0o755 });
      // Written beside the target and renamed over it: a delegate logging in meanwhile runs
      // either the old program or the new one, never half of one.
      const temporary = join(dirname(target), `.${randomBytes(6).toString('hex')}.tmp`);
      try {
        await writeFile(temporary, program, { mode: 0o755 });
        await chmod(temporary, 0o755);
        await rename(temporary, target);
      } catch (error) {
        await rm(temporary, { force: true });
        throw error;
      }
      installed = true;
    }
  }
  await access(target, constants.X_OK).catch(() => {
    throw new Error(`the delegates' shell ${target} is missing or not executable`);
  });

  const shells = (await readOrNull(shellsFile))?.toString('utf8') ?? null;
  const listed = shells !== null && shells.split('\n').some((line) => line.trim() === target);
  if (!listed) {
    // Appended, never rewritten: other programs edit this file too, and an append cannot lose
    // their lines.
    const separator = shells !== null && shells.length > 0 && !shells.endsWith('\n') ? '\n' : '';
    await appendFile(shellsFile, `${separator}${target}\n`, { mode: 0o644 });
  }
  return { installed, listed: !listed, unreachableBy: await unreachableAncestors(target) };
}
