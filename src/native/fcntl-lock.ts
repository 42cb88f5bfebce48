// The fcntl record lock addon built by native/build.sh (fcntl_lock.node). Node has no fcntl, and the
// lock that shadow-utils and glibc's lckpwdf take on /etc/.pwd.lock is an fcntl write lock, which a
// flock(2) lock does not exclude on Linux.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describeError } from '../util/errors.js';
import { nativeBuildDir } from './peercred.js';

interface FcntlLockAddon {
  tryWriteLock(fd: number): boolean;
}

let addon: FcntlLockAddon | null = null;

function loadAddon(): FcntlLockAddon {
  if (addon !== null) return addon;
  const file = join(nativeBuildDir(), 'fcntl_lock.node');
  if (!existsSync(file)) throw new Error(`the fcntl lock addon ${file} is missing: run \`npm run build:native\``);
  try {
    addon = createRequire(import.meta.url)(file) as FcntlLockAddon;
  } catch (error) {
    throw new Error(`cannot load the fcntl lock addon ${file} (${describeError(error)}): run \`npm run build:native\``);
  }
  return addon;
}

/**
 * Takes a write lock on the whole file open at `fd` without waiting: true when taken, false when
 * another process holds a conflicting lock. The lock lasts until the process closes a descriptor of
 * that file (any of them) or exits.
 */
export function tryWriteLock(fd: number): boolean {
  return loadAddon().tryWriteLock(fd);
}
