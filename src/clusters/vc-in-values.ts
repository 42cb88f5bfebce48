// The values of a description, each checked on its own: file paths next to the description,
// libvirt's memory sizes, whole numbers, IPv4 addresses and netmasks. Each function returns the
// typed value or the reason it cannot be one; the caller says at which element.
import { isIPv4 } from 'node:net';
import { posix } from 'node:path';

/**
 * A path relative to a directory (by default the description's), normalised ("./a//b.img" -> "a/b.img"), or why
 * it is not one: absolute, a URL, leading out of the directory with "..", or naming no file. The
 * description may come from a URL, so the path is resolved as a URL reference too: no "\", "?",
 * "#" or "%" that would make it mean something else there.
 */
export function relativeFilePath(text: string, within = "the description's directory"): string | { reason: string } {
  if (text === '') return { reason: 'the path is empty' };
  if (/[\0-\x1f\x7f]/.test(text)) return { reason: 'the path contains a control character' };
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(text)) return { reason: `a URL is not accepted; give a path relative to ${within}` };
  if (text.startsWith('/')) return { reason: `an absolute path is not accepted; give a path relative to ${within}` };
  if (/[\\?#%]/.test(text)) return { reason: 'the path contains "\\", "?", "#" or "%", which a URL would read differently' };
  const normal = posix.normalize(text);
  if (normal === '..' || normal.startsWith('../')) return { reason: `the path leads out of ${within} ("..")` };
  if (normal === '.' || normal.endsWith('/')) return { reason: 'the path names a directory, not a file' };
  return normal;
}

const LIBVIRT_UNITS = 'b, bytes, KiB (k), MiB (M), GiB (G), TiB (T), PiB (P), EiB (E), KB, MB, GB, TB, PB, EB';

/**
 * Bytes per unit of a libvirt scaled integer's unit attribute (absent: KiB, as for <memory>).
 * libvirt reads the unit's letter in either case: "k" and "KiB" are 1024, "KB" is 1000.
 */
export function memoryUnitBytes(unit: string | undefined): number | { reason: string } {
  if (unit === undefined) return 1024;
  const u = unit.trim().toLowerCase();
  if (u === 'b' || u === 'bytes') return 1;
  const m = /^([kmgtpe])(ib|b)?$/.exec(u);
  if (m === null) return { reason: `unit ${JSON.stringify(unit.slice(0, 20))} is not a libvirt memory unit (${LIBVIRT_UNITS})` };
  const power = 'kmgtpe'.indexOf(m[1]!) + 1;
  return (m[2] === 'b' ? 1000 : 1024) ** power;
}

/** A whole number in [min, max] written in decimal digits, or why not. */
export function wholeNumber(text: string, min: number, max: number): number | { reason: string } {
  const shown = JSON.stringify(text.slice(0, 40));
  if (!/^[0-9]+$/.test(text)) return { reason: `${shown} is not a whole number` };
  const n = Number(text);
  if (n < min || n > max) return { reason: `${shown} is not from ${min} to ${max}` };
  return n;
}

/** The 32-bit value of a dotted IPv4 address, or null. */
export function ipv4Value(text: string): number | null {
  if (!isIPv4(text)) return null;
  return text.split('.').reduce((value, octet) => value * 256 + Number(octet), 0);
}

/** The netmask's prefix length when it is a contiguous dotted IPv4 mask, else null. */
export function netmaskPrefix(text: string): number | null {
  const value = ipv4Value(text);
  if (value === null) return null;
  for (let prefix = 0; prefix <= 32; prefix++) {
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    if (mask === value) return prefix;
  }
  return null;
}

/** `value` & `mask` for 32-bit values held in JavaScript numbers. */
export const networkOf = (value: number, mask: number): number => (value & mask) >>> 0;
