// The value types of the configuration file: each turns the text after "=" into a typed value, or
// throws a ValueError with the reason alone (the loader adds the file, the line and the key).
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { invalidAccountName } from '../host/account-names.js';
import { AuthorityUrlError, parseAuthorityUrl } from '../host/url.js';

/** Thrown by a value type with the reason only; the parser adds file, line and key. */
export class ValueError extends Error {}

export interface ValueType<T> {
  parse(text: string, baseDir: string): T;
  /** How a value is written in the file (the inverse of parse, for documentation). */
  show(value: T): string;
}

/** A value as quoted in a message: cut at 80 characters so a pasted blob does not flood the log. */
export function got(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
}

// ---- numbers ----------------------------------------------------------------------------------

// Timers take at most 2^31-1 ms; a longer duration would fire at once.
const LONGEST_TIMER_MS = 2 ** 31 - 1;

/** A whole number in [min, max]; `unit` is spelt in messages ("seconds") and `scale` converts it. */
function wholeNumber(min: number, max: number, opts: { unit?: string; scale?: number; showRange?: boolean } = {}): ValueType<number> {
  const scale = opts.scale ?? 1;
  const unit = opts.unit === undefined ? '' : ` of ${opts.unit}`;
  const expected = opts.showRange ? `from ${min} to ${max}` : `>= ${min}`;
  return {
    parse(text) {
      const n = /^[0-9]+$/.test(text) ? Number(text) : NaN;
      if (Number.isNaN(n) || n < min) throw new ValueError(`expected a whole number${unit} ${expected}, got ${got(text)}`);
      if (n > max) throw new ValueError(`expected a whole number${unit} from ${min} to ${max}, got ${got(text)}`);
      return n * scale;
    },
    show: (value) => String(value / scale),
  };
}

export const count = (min: number, max = Number.MAX_SAFE_INTEGER) => wholeNumber(min, max);
export const range = (min: number, max: number) => wholeNumber(min, max, { showRange: true });
export const seconds = (min: number) =>
  wholeNumber(min, Math.floor(LONGEST_TIMER_MS / 1000), { unit: 'seconds', scale: 1000 });
export const milliseconds = (min: number, max: number) => wholeNumber(min, max, { unit: 'milliseconds' });
export const kbits = (min: number) => wholeNumber(min, 100_000_000, { unit: 'kbit/s' });

/** A multiplier written as a decimal ("4", "1.5") in [min, max]. */
export function factor(min: number, max: number): ValueType<number> {
  return {
    parse(text) {
      const n = /^[0-9]+(\.[0-9]+)?$/.test(text) ? Number(text) : NaN;
      if (Number.isNaN(n) || n < min || n > max) throw new ValueError(`expected a number from ${min} to ${max} (such as 1.5), got ${got(text)}`);
      return n;
    },
    show: (value) => String(value),
  };
}

// ---- text -------------------------------------------------------------------------------------

/**
 * Text taken as written once `accepts` it; `expected` says what it should have been. Most keys
 * naming a device, a group or a URI are this one check and this one message.
 */
function textWhere(accepts: (text: string) => boolean, expected: string): ValueType<string> {
  return {
    parse(text) {
      if (!accepts(text)) throw new ValueError(`expected ${expected}, got ${got(text)}`);
      return text;
    },
    show: (value) => value,
  };
}

/** `type`, or null for any of the `none` spellings; null is written back as `shownAs`. */
function orNone<T>(type: ValueType<T>, none: readonly string[], shownAs: string): ValueType<T | null> {
  return {
    parse: (text, baseDir) => (none.includes(text) ? null : type.parse(text, baseDir)),
    show: (value) => (value === null ? shownAs : type.show(value)),
  };
}

export function oneOf<T extends string>(...choices: readonly T[]): ValueType<T> {
  return textWhere((text) => (choices as readonly string[]).includes(text), `one of ${choices.join(', ')}`) as ValueType<T>;
}

export const path: ValueType<string> = {
  parse(text, baseDir) {
    if (text === '') throw new ValueError('expected a path, got an empty value');
    if (text.includes('\0')) throw new ValueError(`expected a path, got ${got(text)} (contains a NUL byte)`);
    return resolve(baseDir, text);
  },
  show: (value) => value,
};

export const optionalPath = orNone(path, [''], '');

// sun_path holds 108 bytes including the terminating NUL.
export const SOCKET_PATH_MAX = 107;

export const socketPath: ValueType<string> = {
  parse(text, baseDir) {
    const value = path.parse(text, baseDir);
    const bytes = Buffer.byteLength(value);
    if (bytes > SOCKET_PATH_MAX) throw new ValueError(`${got(value)} is ${bytes} bytes long; a Unix socket path may have at most ${SOCKET_PATH_MAX}`);
    return value;
  },
  show: (value) => value,
};

const accountName: ValueType<string> = {
  parse(text) {
    const bad = invalidAccountName(text);
    if (bad !== null) throw new ValueError(`expected an account name, got ${got(text)}: ${bad}`);
    return text;
  },
  show: (value) => value,
};

export const optionalAccountName = orNone(accountName, [''], '');

export const authorityUrl: ValueType<string> = {
  parse(text, baseDir) {
    try {
      return parseAuthorityUrl(text, baseDir).href;
    } catch (error) {
      if (!(error instanceof AuthorityUrlError)) throw error;
      if (error.shown === '') throw new ValueError(`expected ${error.expected}, got an empty value`);
      throw new ValueError(`expected ${error.expected}, got ${got(error.shown)} (${error.hint ?? error.problem})`);
    }
  },
  show: (value) => value,
};

export const interfaceName = textWhere(
  // The kernel's rule for device names: 1 to 15 bytes, no "/", no white space, not "." or "..".
  (text) => text === 'auto' || text === 'none' || (/^[A-Za-z0-9_.:@-]{1,15}$/.test(text) && text !== '.' && text !== '..'),
  'a network device name (1 to 15 letters, digits, "_", "-", ".", ":" or "@"), "auto" or "none"',
);

const CGROUP_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

/**
 * "nodemgr" or "system.slice/nodemgr.service/slivers": a group below the hierarchy's root, so that
 * the slivers' groups can live in the subtree systemd delegates to the daemon's unit.
 */
export const cgroupPath = textWhere(
  (text) => text.split('/').every((part) => CGROUP_NAME.test(part)),
  'a cgroup directory name, or names joined by "/" below the hierarchy\'s root (letters, digits, "_", "-", "." not first, at most 64 each)',
);

/** "10.0.0.0/8, 2001:db8::/32": IPv4 or IPv6 prefixes, comma separated; empty for none. */
export const prefixList: ValueType<string[]> = {
  parse(text) {
    if (text.trim() === '') return [];
    return text.split(',').map((item) => {
      const prefix = item.trim();
      const m = /^([0-9a-fA-F.:]+)\/(\d{1,3})$/.exec(prefix);
      const family = m ? isIP(m[1]!) : 0;
      if (!m || family === 0 || Number(m[2]) > (family === 4 ? 32 : 128)) {
        throw new ValueError(`expected address prefixes such as 10.0.0.0/8 or 2001:db8::/32, separated by commas, got ${got(prefix)}`);
      }
      return prefix;
    });
  },
  show: (value) => value.join(', '),
};

/** Comma-separated items each checked by `item` (what `expected` names); empty for none. */
function listOf(item: (text: string) => boolean, expected: string): ValueType<string[]> {
  return {
    parse(text) {
      if (text.trim() === '') return [];
      return text.split(',').map((part) => {
        const value = part.trim();
        if (!item(value)) throw new ValueError(`expected ${expected}, separated by commas, got ${got(value)}`);
        return value;
      });
    },
    show: (value) => value.join(', '),
  };
}

/** "8.8.8.8, 1.1.1.1": IPv4 addresses. */
export const ipv4List = listOf((text) => isIP(text) === 4, 'IPv4 addresses such as 192.0.2.53');
/** Absolute paths, a "*" allowed in the last component. */
export const globList = listOf((text) => /^\/[^\0\s,]*$/.test(text) && !text.split('/').includes('..'), 'absolute paths (a "*" allowed in the last part)');
export const optionalIpv4 = orNone(textWhere((text) => isIP(text) === 4, 'an IPv4 address'), [''], '');
export const ipv4Prefix = textWhere((text) => /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(text) && isIP(text.split('/')[0]!) === 4 && Number(text.split('/')[1]) <= 30, 'an IPv4 subnet such as 10.1.0.0/16 (at most /30)');
export const dnsDomain = textWhere((text) => /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(text), 'a DNS domain such as cluster.local (lower case)');

export const ipAddress = textWhere((text) => isIP(text) !== 0, 'an IPv4 or IPv6 address such as 0.0.0.0 or ::');

export const libvirtUri = textWhere(
  (text) => /^[a-z][a-z0-9+]*:\/\/[^\s]*$/.test(text),
  'a libvirt connection URI such as qemu:///system',
);

export const bridgeName = orNone(
  textWhere((text) => /^[A-Za-z0-9_.-]{1,15}$/.test(text), 'a bridge device name (1 to 15 letters, digits, "_", "-" or ".") or none'),
  ['', 'none'],
  'none',
);

export const readyMarker = textWhere(
  (text) => /^[\x21-\x7e][\x20-\x7e]{0,62}[\x21-\x7e]$/.test(text),
  '2 to 64 printable ASCII characters',
);

/**
 * The URL of a directory served over http(s), or of one of this host (file:, relative to the
 * file's directory), written back with a final "/" so that names resolve inside it. No credentials:
 * the URLs of what is fetched from it are kept in the image cache's index, which every local user
 * may list.
 */
const directoryUrl: ValueType<string> = {
  parse(text, baseDir) {
    const expected = 'an http:, https: or file: URL of a directory';
    const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(text)?.[1]?.toLowerCase();
    if (scheme !== 'http' && scheme !== 'https' && scheme !== 'file') throw new ValueError(`expected ${expected}, got ${got(text)}`);
    let url: URL;
    try {
      url = scheme === 'file' ? new URL(text, pathToFileURL(resolve(baseDir) + '/')) : new URL(text);
    } catch {
      throw new ValueError(`expected ${expected}, got ${got(text)} (not a valid URL)`);
    }
    if (scheme !== 'file' && url.hostname === '') throw new ValueError(`expected ${expected}, got ${got(text)} (no host)`);
    if (scheme === 'file' && url.host !== '' && url.host !== 'localhost') throw new ValueError(`expected ${expected}, got ${got(text)} (a file: URL names a directory of this host)`);
    if (url.username !== '' || url.password !== '') throw new ValueError(`expected ${expected} without credentials (the URLs of its files are shown to every local user)`);
    if (url.search !== '' || url.hash !== '') throw new ValueError(`expected ${expected}, got ${got(text)} (a query or fragment would be lost: names are resolved inside the directory)`);
    if (!url.pathname.endsWith('/')) url.pathname += '/';
    return url.href;
  },
  show: (value) => value,
};

export const optionalDirectoryUrl = orNone(directoryUrl, [''], '');
