// Who may call over TLS: XenBEE's allowed-users file, one certificate subject per line in OpenSSL's
// one-line form (`/OU=Persons/CN=test user 1`), `#` starting a comment line, blank lines ignored; a
// subject is allowed when it equals a line exactly. The file is read again when it changes, so an
// operator grants or withdraws access by editing it, without a restart.
import { rereadWhenChanged } from '../host/changed-file.js';
import { describeFileError } from '../host/file-errors.js';
import type { Logger } from '../log.js';

export interface AllowedUsersList {
  readonly subjects: ReadonlySet<string>;
  /** Lines that cannot be a subject, with why (they allow nobody). */
  readonly ignored: ReadonlyArray<{ readonly line: number; readonly reason: string }>;
}

/**
 * The subjects a file's text lists. A line is taken whole, but for the white space around it: a
 * subject may hold " #" or any other text, and only a line that starts with "#" is a comment.
 */
export function parseAllowedUsers(text: string): AllowedUsersList {
  const subjects = new Set<string>();
  const ignored: Array<{ line: number; reason: string }> = [];
  text.replace(/^\uFEFF/, '').split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    // Every subject in the one-line form starts with "/"; anything else would never match and
    // is most likely another form of the subject (RFC 2253's "CN=x,O=y") pasted by mistake.
    if (!line.startsWith('/')) {
      ignored.push({ line: index + 1, reason: `not a subject in OpenSSL's one-line form (/O=.../CN=...): ${JSON.stringify(line.slice(0, 80))}` });
      return;
    }
    subjects.add(line);
  });
  return { subjects, ignored };
}

export interface AllowedUsers {
  readonly path: string;
  /** The subjects listed now; none while the file is missing or cannot be read. */
  subjects(): Promise<ReadonlySet<string>>;
  allows(subject: string): Promise<boolean>;
}

const NONE: ReadonlySet<string> = new Set();

/** The file at `path`, read again when it changes; its state is logged once per change. */
export function allowedUsersFile(path: string, logger: Logger): AllowedUsers {
  // The last problem logged: a file missing for a week is one line, not one per call.
  let problemLogged: string | null = null;
  const file = rereadWhenChanged(path, (text) => {
    const list = parseAllowedUsers(text);
    problemLogged = null;
    logger.info('allowed users loaded', { file: path, subjects: list.subjects.size });
    for (const { line, reason } of list.ignored) logger.warn('allowed users line ignored', { file: path, line, reason });
    return list.subjects;
  });
  const subjects = () =>
    file.current().catch((error: unknown) => {
      const reason = describeFileError(error);
      if (problemLogged !== reason) logger.warn('allowed users file not read: no certificate caller is allowed', { file: path, reason });
      problemLogged = reason;
      return NONE;
    });
  return {
    path,
    subjects,
    allows: async (subject) => (await subjects()).has(subject),
  };
}
