// The location of the authority document: an http:, https: or file: URL. One parser serves the
// configuration (at start) and the fetch (at every poll), so a value the configuration accepts is
// one the fetch can use, and both refuse the same things for the same reasons.
import { resolve as resolvePath } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describeError } from '../util/errors.js';

const ANY = 'an http:, https: or file: URL';
const LOCAL_FILE = 'a file: URL of this host';
const A_FILE = 'a file: URL naming a file';

/**
 * Why a value is not a usable authority URL, in parts, so that each caller can word its message
 * in its own style ("expected ..., got ..." in the configuration) without rewording the reasons.
 */
export class AuthorityUrlError extends Error {
  override name = 'AuthorityUrlError';

  constructor(
    /** The value as it may be shown: credentials masked. */
    readonly shown: string,
    /** What a good value looks like: "an http:, https: or file: URL". */
    readonly expected: string,
    /** What is wrong with this one: `scheme "ftp:" is not supported`. */
    readonly problem: string,
    /** How to write what was probably meant, where there is a likely mistake. */
    readonly hint: string | null = null,
  ) {
    super(shown === ''
      ? `authority URL is empty; use ${expected}`
      : `authority URL ${JSON.stringify(shown)}: ${problem}; use ${expected}${hint === null ? '' : ` (${hint})`}`);
  }
}

/**
 * The text with "user:password@" masked as "***@", also where it is no valid URL that `redactUrl`
 * could take apart: messages end up in logs.
 */
export function maskCredentials(text: string): string {
  return text.replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:)?(\/\/)?[^/?#]*@/, '$1$2***@');
}

/** Removes the credentials of a URL where a message or log could show them. */
export function redactUrl(url: URL | string): string {
  let parsed: URL;
  try {
    parsed = typeof url === 'string' ? new URL(url) : new URL(url.href);
  } catch {
    return String(url).replace(/\/\/[^/@]*@/, '//');
  }
  // A local path reads better as file:/etc/nodemgr/slices.xml than as file:///etc/...
  if (parsed.protocol === 'file:') return `file:${parsed.pathname}`;
  parsed.username = '';
  parsed.password = '';
  return parsed.href;
}

/**
 * Validates the configured location of the authority document. http: and https: URLs may carry
 * credentials (sent as basic authentication, never shown). A file: URL names a file of this host,
 * absolute (file:/etc/nodemgr/slices.xml, file:///etc/...) or relative to baseDir
 * (file:slices.xml), and is returned in one canonical form. Throws AuthorityUrlError.
 */
export function parseAuthorityUrl(text: string, baseDir: string): URL {
  const value = text.trim();
  const refuse = (expected: string, problem: string, hint: string | null = null): never => {
    throw new AuthorityUrlError(maskCredentials(value), expected, problem, hint);
  };
  if (value === '') return refuse(ANY, 'empty');
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(value)?.[1]?.toLowerCase();
  if (scheme === undefined) return refuse(ANY, 'not a URL (no scheme)', 'a local file is written file:PATH');
  if (scheme !== 'http' && scheme !== 'https' && scheme !== 'file') return refuse(ANY, `scheme "${scheme}:" is not supported`);
  let url: URL;
  try {
    // With a file: base, "file:slices.xml" resolves against baseDir while "file:/x" stays absolute.
    url = scheme === 'file' ? new URL(value, pathToFileURL(resolvePath(baseDir) + '/')) : new URL(value);
  } catch {
    return refuse(ANY, 'not a valid URL');
  }
  if (scheme !== 'file') return url.hostname === '' ? refuse(ANY, 'no host') : url;
  // Stated here rather than left to fileURLToPath, whose answer differs between platforms.
  if (url.host !== '' && url.host !== 'localhost') return refuse(LOCAL_FILE, `a file: URL names a local file, not one on host "${url.host}"`);
  if (url.username !== '' || url.password !== '') return refuse(LOCAL_FILE, 'a file: URL takes no credentials');
  if (url.search !== '' || url.hash !== '') return refuse(A_FILE, 'a file: URL takes no query or fragment');
  if (url.pathname.endsWith('/')) return refuse(A_FILE, 'names a directory');
  let file: string;
  try {
    file = fileURLToPath(url);
  } catch (error) {
    return refuse(LOCAL_FILE, `not a usable file path (${describeError(error)})`);
  }
  if (file.includes('\0')) return refuse(LOCAL_FILE, 'not a usable file path (it contains a NUL byte)');
  return pathToFileURL(file);
}
