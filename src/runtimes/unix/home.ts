// A new account's home, as `useradd -m` makes it: the directory (0750: the account and its private
// group only) and a copy of the skeleton directory, every copy owned by the account.
import { chmod, chown, copyFile, lchown, lstat, mkdir, readdir, readlink, symlink } from 'node:fs/promises';
import { join } from 'node:path';

export const SKELETON_DIR = '/etc/skel';
export const HOME_MODE = 0o750;

interface Owner {
  readonly uid: number;
  readonly gid: number;
}

/** Copies the skeleton's tree into `to` (which exists), giving everything to the owner. */
async function copySkeleton(from: string, to: string, owner: Owner): Promise<void> {
  for (const name of await readdir(from)) {
    const source = join(from, name);
    const target = join(to, name);
    const st = await lstat(source);
    if (st.isDirectory()) {
      await mkdir(target, { mode: st.mode & 0o7777 });
      await chown(target, owner.uid, owner.gid);
      await chmod(target, st.mode & 0o7777);
      await copySkeleton(source, target, owner);
    } else if (st.isSymbolicLink()) {
      await symlink(await readlink(source), target);
      await lchown(target, owner.uid, owner.gid);
    } else if (st.isFile()) {
      // COPYFILE_EXCL: the home was made empty just now; a file already there is not ours to replace.
      await copyFile(source, target, 1);
      await chown(target, owner.uid, owner.gid);
      await chmod(target, st.mode & 0o777);
    }
    // Devices, fifos and sockets in a skeleton are not copied: a home needs none of them.
  }
}

/**
 * Makes the home with the skeleton in it; false (and nothing done) when the path exists already.
 * The home's name lies in the home base, which only root can change, so creating by path cannot be
 * sent elsewhere; and the home is the account's only after its contents are in place.
 */
export async function makeHome(home: string, owner: Owner, skeleton = SKELETON_DIR): Promise<boolean> {
  try {
    await mkdir(home, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  // Root works in a directory of the account's below, which is safe only because nothing can run as
  // the account yet: it has no keys before configure and no initscript before start.
  // The account's at once: a kill from here on leaves its own home (the skeleton perhaps not all
  // copied), never one of root's that it could not use. A kill before this line leaves an empty
  // directory of root's, which ensureHome recognises.
  await chown(home, owner.uid, owner.gid);
  const hasSkeleton = await lstat(skeleton).then((st) => st.isDirectory(), () => false);
  if (hasSkeleton) await copySkeleton(skeleton, home, owner);
  await chmod(home, HOME_MODE);
  return true;
}
