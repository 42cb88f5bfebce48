// Paths inside a container's root as the host reaches them. The container owns everything under
// its root, and the host works there as root: a link the container made must never lead the host
// out of it. So a path is resolved one component at a time, each link read and followed by hand:
// an absolute target from the container's root (as the container would see it), and any ".." that
// would climb above the root refused. A file is then opened without following a link, and where
// the opened file really is, is checked (/proc/self/fd), which catches a directory swapped for a
// link between the resolution and the open.
import { constants } from 'node:fs';
import { lstat, mkdir, readlink, realpath, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentError } from './guest-agent.js';

/** More links than this on one path is a loop. */
const MAX_LINKS = 40;

export interface ResolveOptions {
  /** Follow a link in the last component (reading a file); else the link itself is the target (replacing it). */
  readonly followLast: boolean;
  /** Make missing directories on the way (mode 0755). */
  readonly makeParents?: boolean;
}

/**
 * The host path of `guestPath` inside `root`; the last component need not exist. AgentError, naming
 * `guest`, when a link leads out of the root, a directory on the way is missing (without
 * makeParents) or is not a directory, or links loop.
 */
export async function resolveInRoot(guest: string, root: string, guestPath: string, options: ResolveOptions): Promise<string> {
  const refuse = (why: string) => new AgentError(`${guestPath} in ${guest} refused: ${why}`);
  if (!guestPath.startsWith('/') || guestPath.includes('\0')) throw refuse('not an absolute path');
  const pending = guestPath.split('/').filter((p) => p !== '');
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      if (done.length === 0) throw refuse("it leads above the container's root");
      done.pop();
      continue;
    }
    const host = join(root, ...done, part);
    const last = pending.length === 0;
    let st = await lstat(host).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return null;
      throw refuse(error.message);
    });
    if (st === null && !last && options.makeParents) {
      await mkdir(host, { mode: 0o755 }).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EEXIST') throw refuse(error.message);
      });
      st = await lstat(host);
    }
    if (st === null) {
      if (last) return host;
      throw refuse(`${join('/', ...done, part)} does not exist`);
    }
    if (st.isSymbolicLink() && (!last || options.followLast)) {
      if (++links > MAX_LINKS) throw refuse('too many links (a loop?)');
      const target = await readlink(host);
      if (target.startsWith('/')) done.length = 0;
      pending.unshift(...target.split('/').filter((p) => p !== ''));
      continue;
    }
    if (!last && !st.isDirectory()) throw refuse(`${join('/', ...done, part)} is not a directory`);
    done.push(part);
  }
  return join(root, ...done);
}

/** Throws (closing nothing) unless the open file is really inside `root`, whatever links changed since its path was resolved. */
export async function checkOpenedInRoot(guest: string, guestPath: string, root: string, handle: FileHandle): Promise<void> {
  const rootReal = await realpath(root);
  const where = await realpath(`/proc/self/fd/${handle.fd}`);
  if (!where.startsWith(`${rootReal}/`)) throw new AgentError(`${guestPath} in ${guest} refused: it was moved out of the container's root while it was opened`);
}

/** Flags of an open that never follows a link in the last component, and never waits on a FIFO. */
export const NO_FOLLOW = constants.O_NOFOLLOW | constants.O_NONBLOCK;
