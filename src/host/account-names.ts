// Validation of account names before they reach any command.
import { quoted } from '../util/text.js';

// Debian's default NAME_REGEX, without the trailing "$" that Samba machine accounts use,
// and the 32-character limit of utmp and shadow-utils.
const ACCOUNT_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;

// Names that must never be managed even if no such account exists yet on this host.
const RESERVED = new Set([
  'root', 'daemon', 'bin', 'sys', 'sync', 'games', 'man', 'lp', 'mail', 'news', 'uucp', 'proxy',
  'www-data', 'backup', 'list', 'irc', 'gnats', 'nobody', 'systemd-network', 'systemd-resolve',
  'messagebus', 'sshd', 'nodemgr', 'admin', 'sudo', 'wheel', 'staff', 'users', 'adm', 'shadow',
  'utmp', 'tty', 'disk', 'kmem', 'dialout', 'operator',
]);

/** Returns null when `name` may be a managed account name, else the reason it may not. */
export function invalidAccountName(name: string): string | null {
  if (!ACCOUNT_NAME.test(name)) {
    return `${quoted(name)} is not a valid account name (lower-case letter or "_" first, then up to 31 of a-z 0-9 _ -)`;
  }
  if (RESERVED.has(name)) return `${quoted(name)} is a reserved system account name`;
  return null;
}
