// A new account's home, as `useradd -m` makes it: the directory (0750: the account and its private
// group only) and a copy of the skeleton directory, every copy owned by the account.
import { chmod, copyFile, lchown, lstat, mkdir, readdir, readlink, rename, symlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { removeTree } from './remove-tree.js';

export const SKELETON_DIR = '/etc/skel';
export const HOME_MODE = 0o750;
/** A home being made is named so beside it (no account name starts with a dot). */
const MAKING_PREFIX = '.nodemgr-making-';

interface Owner {
  readonly uid: number;
  readonly gid: number;
}

/**
 * Copies the skeleton's tree into `to` (which exists and only root can enter), with the
 * skeleton's modes; root's still. Returns what it made, parents before children.
 */
async function copySkeleton(from: string, to: string, made: string[] = []): Promise<string[]> {
  for (const name of await readdir(from)) {
    const source = join(from, name);
    const target = join(to, name);
    const st = await lstat(source);
    if (st.isDirectory()) {
      await mkdir(target, { mode: 0o700 });
      made.push(target);
      await copySkeleton(source, target, made);
      await chmod(target, st.mode & 0o7777);
    } else if (st.isSymbolicLink()) {
      await symlink(await readlink(source), target);
      made.push(target);
    } else if (st.isFile()) {
      // COPYFILE_EXCL: the home was made empty just now; a file already there is not ours to replace.
      await copyFile(source, target, 1);
      await chmod(target, st.mode & 0o777);
      made.push(target);
    }
    // Devices, fifos and sockets in a skeleton are not copied: a home needs none of them.
  }
  return made;
}

/**
 * Makes the home with the skeleton in it; false (and nothing done) when the path exists already.
 * The home's name lies in the home base, which only root can change, so creating by path cannot be
 * sent elsewhere; and the home is the account's only after its contents are in place.
 */
export async function makeHome(home: string, owner: Owner, skeleton = SKELETON_DIR): Promise<boolean> {
  if (await lstat(home).then(() => true, () => false)) return false;
  // Made under a name of its own beside the home and filled while it is root's and 0700: no other
  // process can enter it to put a symlink where root then writes or changes modes (a uid used
  // before may still run something, from a program it left setuid elsewhere). Then given away
  // without following links, itself last, and renamed into place: the home is whole or absent.
  const making = join(dirname(home), `${MAKING_PREFIX}${basename(home)}`);
  // What a make killed before its rename left (only then: an rm per new home would be wasted).
  if (await lstat(making).then(() => true, () => false)) await removeTree(making);
  await mkdir(making, { mode: 0o700 });
  const hasSkeleton = await lstat(skeleton).then((st) => st.isDirectory(), () => false);
  const made = hasSkeleton ? await copySkeleton(skeleton, making) : [];
  for (const path of made) await lchown(path, owner.uid, owner.gid);
  await chmod(making, HOME_MODE);
  await lchown(making, owner.uid, owner.gid);
  await rename(making, home);
  return true;
}
