// Why a file could not be opened or read, in the words an operator acts on.
import { describeError } from '../util/errors.js';

export function describeFileError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT': return 'no such file';
    case 'ENOTDIR': return 'no such file (a component of the path is not a directory)';
    case 'EACCES':
    case 'EPERM': return 'permission denied';
    case 'EISDIR': return 'not a regular file';
    case 'ELOOP': return 'too many levels of symbolic links';
    default: return describeError(error);
  }
}
