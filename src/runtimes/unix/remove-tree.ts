// Removing a tree that another user may change while it is removed (a home whose owner made it
// writable to others, whose processes are not the dying account's and are not killed). Node's
// fs.rm walks by path: a directory swapped for a symlink between its listing and the unlink of its
// entries sends root's unlinks wherever the link points. GNU rm walks by directory descriptors
// (openat, O_NOFOLLOW, checking each directory it returns to), so no swap can send it out of the
// tree; --one-file-system keeps it off anything mounted inside.
import { runCommand } from '../../host/exec.js';

/** Removes `path` and everything below it, never outside it; a missing path is no error. */
export async function removeTree(path: string): Promise<void> {
  await runCommand('rm', ['-rf', '--one-file-system', '--', path], { timeoutMs: 600_000 });
}
