// Writes ~/.ssh/authorized_keys of an account as root, in a home the account can write to.
//
// The account may plant symlinks or swap directories at any moment, so no path inside the home is
// trusted beyond one lookup: the home and its .ssh are opened with O_NOFOLLOW and checked through
// their descriptors, and everything after that goes through /proc/self/fd/<n>/..., which resolves
// to the very directory that was checked even if its name has been moved or replaced since. Node
// has no openat()/renameat(); those paths give the same guarantee.
import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { describeError } from '../../util/errors.js';

const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW, O_WRONLY, O_CREAT, O_EXCL } = constants;

export interface KeysOwner {
  readonly uid: number;
  readonly gid: number;
}

export class UnsafeHomeError extends Error {
  override readonly name = 'UnsafeHomeError';
}

const viaFd = (dir: FileHandle, entry: string) => `/proc/self/fd/${dir.fd}/${entry}`;

/** The content of authorized_keys for `keys`: one per line, an empty file for none. */
export function authorizedKeysText(keys: readonly string[]): string {
  for (const key of keys) {
    // A line break would let one "key" add a second line, i.e. another key or options.
    if (/[\r\n\0]/.test(key)) throw new Error(`an ssh key contains a line break or NUL: ${JSON.stringify(key.slice(0, 40))}...`);
  }
  return keys.length === 0 ? '' : keys.join('\n') + '\n';
}

function isEnoent(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}

async function openDirectory(path: string): Promise<FileHandle | null> {
  try {
    return await open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ELOOP: a symlink; ENOTDIR: some other kind of file; ENOENT: nothing there.
    if (code === 'ELOOP' || code === 'ENOTDIR' || code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Opens `<home>/.ssh` as a real directory, replacing whatever else is there (a symlink, a file):
 * it is the account's own entry in its own home, and removing an entry never follows it.
 */
async function openSshDir(home: FileHandle, log: (message: string) => void): Promise<FileHandle> {
  const path = viaFd(home, '.ssh');
  for (let attempt = 0; attempt < 5; attempt++) {
    const dir = await openDirectory(path);
    if (dir) return dir;
    let found: Stats | null = null;
    try {
      found = await lstat(path);
    } catch (err) {
      if (!isEnoent(err)) throw err;
    }
    if (found) {
      log(`~/.ssh is ${found.isSymbolicLink() ? 'a symlink' : 'not a directory'}; replaced by a directory`);
      await unlink(path).catch((err) => {
        if (!isEnoent(err)) throw err;
      });
    }
    await mkdir(path, { mode: 0o700 }).catch((err) => {
      // Something appeared in between: look again.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    });
  }
  throw new UnsafeHomeError('~/.ssh keeps changing under us; not writing authorized_keys');
}

/** Writes authorized_keys atomically (a temp file in .ssh, then rename), owned by the account. */
export async function writeAuthorizedKeys(
  homePath: string,
  owner: KeysOwner,
  keys: readonly string[],
  log: (message: string) => void = () => undefined,
): Promise<void> {
  const text = authorizedKeysText(keys);
  const home = await open(homePath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW).catch((err) => {
    throw new UnsafeHomeError(`home ${homePath} is not a directory we can use: ${describeError(err)}`);
  });
  try {
    const homeStat = await home.stat();
    if (homeStat.uid !== owner.uid) {
      throw new UnsafeHomeError(`home ${homePath} belongs to uid ${homeStat.uid}, not to the account (uid ${owner.uid})`);
    }
    const ssh = await openSshDir(home, log);
    try {
      await ssh.chown(owner.uid, owner.gid);
      await ssh.chmod(0o700);
      const finalPath = viaFd(ssh, 'authorized_keys');
      // One fixed temp name, so a write cut short leaves nothing behind after the next one. Whatever
      // is there is removed first (unlink never follows); O_EXCL then never follows a symlink and
      // never opens an existing file, so the file written is one that we created.
      const tempPath = viaFd(ssh, '.authorized_keys.nodemgr-tmp');
      await unlink(tempPath).catch((err) => {
        if (!isEnoent(err)) throw err;
      });
      const temp = await open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      try {
        try {
          await temp.writeFile(text, 'utf8');
          await temp.chown(owner.uid, owner.gid);
          await temp.chmod(0o600);
          await temp.sync();
        } finally {
          await temp.close();
        }
        try {
          await rename(tempPath, finalPath);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'EISDIR' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
          // The account put a directory named authorized_keys there. Moving it aside (a rename,
          // which follows nothing) is safer than deleting a tree the account can change under us.
          const aside = viaFd(ssh, `authorized_keys.moved-${Date.now()}`);
          await rename(finalPath, aside);
          log('~/.ssh/authorized_keys was a directory; moved aside');
          await rename(tempPath, finalPath);
        }
      } catch (err) {
        await unlink(tempPath).catch(() => undefined);
        throw err;
      }
      await ssh.sync();
    } finally {
      await ssh.close();
    }
  } finally {
    await home.close();
  }
}
