// Paths inside the guest. JSDL names a directory by a file system's logical name
// (filesystemName="WORK") whose MountPoint the Resources give; every path a job names is resolved
// here to one absolute, normalised path, so that the engine and the guest agent never interpret
// a relative path or a "..".
import { quoted } from '../util/text.js';

/** Logical file system name -> its mount point inside the guest (absolute, normalised). */
export type FileSystems = ReadonlyMap<string, string>;

/** JSDL's name for the guest's root, which needs no FileSystem element. */
export const ROOT_FILE_SYSTEM = 'ROOT';

/** An absolute path, or why the value cannot be one (`fileSystem`: the fault is the file system name). */
export type Resolved = { readonly path: string } | { readonly why: string; readonly fileSystem?: true };

// Control characters in a path are a pasted line break or worse, never a name anyone meant.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * `relative` appended to the absolute `base`, with "." and empty parts dropped and ".." taken
 * back; a ".." that would climb above `base` is refused (it leaves the file system, or the
 * directory, that the path is relative to).
 */
export function joinInside(base: string, relative: string): Resolved {
  if (CONTROL.test(relative)) return { why: `${quoted(relative)} contains a control character` };
  const parts = base.split('/').filter((p) => p !== '');
  const floor = parts.length;
  for (const part of relative.split('/')) {
    if (part === '' || part === '.') continue;
    if (part !== '..') parts.push(part);
    else if (parts.length > floor) parts.pop();
    else return { why: `${quoted(relative)} climbs above ${base} with ".."` };
  }
  return { path: `/${parts.join('/')}` };
}

/** An absolute path as written, normalised; a relative one is refused with `hint`. */
export function absolutePath(value: string, hint: string): Resolved {
  if (value === '') return { why: 'the path is empty' };
  if (!value.startsWith('/')) return { why: `${quoted(value)} is relative; ${hint}` };
  return joinInside('/', value);
}

/**
 * The guest path of `value` as a POSIXApplication element or a DataStaging gives it:
 * - with a file system name: relative to that file system's mount point (a leading "/" is
 *   taken as relative too, as XenBEE did; an empty value is the mount point itself);
 * - without: absolute as written, or relative to `relativeTo` when the caller has such a
 *   directory (JSDL's DataStaging FileName is relative to the working directory); else refused.
 */
export function guestPath(value: string, fileSystem: string | null, fileSystems: FileSystems, relativeTo: string | null): Resolved {
  if (fileSystem !== null) {
    const mount = fileSystems.get(fileSystem) ?? (fileSystem === ROOT_FILE_SYSTEM ? '/' : undefined);
    if (mount === undefined) {
      const known = [...new Set([ROOT_FILE_SYSTEM, ...fileSystems.keys()])].join(', ');
      return { why: `file system ${quoted(fileSystem)} is not defined (jsdl:FileSystem names: ${known})`, fileSystem: true };
    }
    // joinInside skips empty parts, so a leading "/" adds nothing.
    return joinInside(mount, value);
  }
  if (relativeTo !== null && value !== '' && !value.startsWith('/')) return joinInside(relativeTo, value);
  return absolutePath(value, 'give an absolute path or a file system name');
}
