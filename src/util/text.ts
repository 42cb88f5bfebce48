// Text from outside (a document, a request) shown in a message: quoted, so that control characters
// cannot reach an operator's terminal or split a log line, and cut, so that a huge value cannot
// flood either.

/** `text` as a JSON string of at most `max` characters of it (then "..."). */
export function quoted(text: string, max = 64): string {
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}...` : text);
}

/** `text` with control characters shown as escapes (\u001b), for a terminal or a log line. */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** 1536 -> "1.5 KiB"; exact byte counts below 1 KiB. */
export function formatBytes(bytes: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes;
  let unit = -1;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number(value.toFixed(value < 10 ? 2 : 1))} ${units[unit]}`;
}

/** V8 cuts a substring of at least this many characters as a view of the string it came from. */
const SLICED_MIN_LENGTH = 13;

/**
 * `text` as a string that holds its own characters. A substring (split, slice) of 13 characters
 * or more is a view of the whole string it was cut from and keeps that alive: the names of ten
 * thousand accounts, each cut from the /etc/passwd of the day it was read, held a dozen versions of
 * the file (4 MB), and a node whose accounts come and go one by one would hold one version per
 * account. Shorter substrings are copies already.
 */
export function ownString(text: string): string {
  return text.length < SLICED_MIN_LENGTH ? text : Buffer.from(text, 'utf8').toString('utf8');
}
