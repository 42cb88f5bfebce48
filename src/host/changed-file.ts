// A configuration file the daemon reads again only when it has changed (device, inode, size,
// modification or change time): an edited file is in force at its next use without a restart, and
// an unchanged one costs one stat. Both an editor's rename and an in-place append are seen.
import { readFile, stat } from 'node:fs/promises';

export interface ChangedFile<T> {
  readonly path: string;
  /**
   * The file's contents as `parse` made them from its current version; rejects with the stat or
   * read error (an ErrnoException, or an Error for a path that is not a regular file).
   */
  current(): Promise<T>;
}

/**
 * `parse` runs once per version of the file, so it may log what it finds (the entries loaded, the
 * lines it ignores) without repeating itself at every use.
 */
export function rereadWhenChanged<T>(path: string, parse: (text: string) => T): ChangedFile<T> {
  let cached: { version: string; value: T } | null = null;
  let loading: Promise<T> | null = null;

  async function load(): Promise<T> {
    try {
      const st = await stat(path, { bigint: true });
      if (!st.isFile()) throw new Error('not a regular file');
      const version = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
      if (cached?.version === version) return cached.value;
      // Stat before read: a change while reading gives a newer version, which the next use reads again.
      const value = parse(await readFile(path, 'utf8'));
      cached = { version, value };
      return value;
    } catch (error) {
      // A file that comes back is read afresh, even if it comes back with the same times.
      cached = null;
      throw error;
    }
  }

  return {
    path,
    current() {
      // Uses arriving while the file is being read share that read.
      loading ??= load().finally(() => {
        loading = null;
      });
      return loading;
    },
  };
}
