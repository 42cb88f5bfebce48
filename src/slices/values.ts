// Validation of the scalar values an authority document carries: integers, public keys, image
// names. Each returns the typed value or says why not; none of them throws.
import { Buffer } from 'node:buffer';
import { quoted } from '../util/text.js';

/**
 * A decimal integer >= 0 as written in a document (surrounding whitespace allowed), else NaN.
 * "1e3", "0x10", "-1", "3.5", "" and anything above 2^53 - 1 are not.
 */
export function parseCount(text: string): number {
  const t = text.trim();
  const n = t.length;
  if (n === 0 || n > 20) return Number.NaN;
  for (let i = 0; i < n; i++) {
    const c = t.charCodeAt(i);
    if (c < 48 || c > 57) return Number.NaN;
  }
  const value = Number(t);
  return Number.isSafeInteger(value) ? value : Number.NaN;
}

/** Why `raw` is not a usable integer attribute, for messages. */
export function describeCount(field: string, raw: string | undefined): string {
  if (raw === undefined) return `${field} is missing`;
  return `${field} ${quoted(raw)} is not a decimal integer >= 0`;
}

// OpenSSH public key algorithms that may appear in authorized_keys. The ecdsa and security-key
// families are open-ended on purpose: new curves keep the same shape.
const KEY_TYPE = /^(?:ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-[a-z0-9]+|sk-[a-z0-9-]+@openssh\.com)$/;
// `<type> <base64> [comment]`, no control characters but tab; one regular expression is about
// twice as fast here as a hand-written scan.
const KEY_LINE = /^(\S+)[ \t]+([A-Za-z0-9+/]+={0,2})(?:[ \t]+([^\0-\x08\x0a-\x1f\x7f]*))?$/;
const CONTROL = /[\0-\x08\x0a-\x1f\x7f]/;
const MAX_KEY_LENGTH = 16 * 1024;

/**
 * Returns null when `line` is an OpenSSH public key line (`<type> <base64> [comment]`) whose key
 * blob names the same type, else the reason. Option prefixes (`command="..."`) are refused: the
 * authority gives keys, not policies.
 */
export function invalidPublicKey(line: string): string | null {
  if (line.length === 0) return 'key is empty';
  if (line.length > MAX_KEY_LENGTH) return `key is ${line.length} characters long, more than ${MAX_KEY_LENGTH}`;
  const match = KEY_LINE.exec(line);
  if (!match) {
    if (CONTROL.test(line)) return 'key contains a line break or control character';
    return 'key is not an OpenSSH public key line ("<type> <base64> [comment]")';
  }
  const type = match[1]!;
  const base64 = match[2]!;
  if (!KEY_TYPE.test(type)) return `key type ${JSON.stringify(type.slice(0, 40))} is not an OpenSSH public key type`;
  if (base64.length % 4 !== 0) return 'key data is not valid base64';
  const blob = Buffer.from(base64, 'base64');
  const named = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  if (named !== type.length || blob.length < 4 + named || blob.toString('latin1', 4, 4 + named) !== type) {
    return `key data does not hold a ${type} key`;
  }
  return null;
}

const VREF = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

/** Returns null when `vref` may name an image (it becomes part of a path), else the reason. */
export function invalidVref(vref: string): string | null {
  if (VREF.test(vref)) return null;
  return `vref "${vref.slice(0, 64)}" is not an image name (a letter or digit, then up to 127 of A-Z a-z 0-9 . _ + -)`;
}

const IMAGE_URI_SCHEMES = new Set(['http:', 'https:', 'file:']);
const MAX_IMAGE_URI = 2048;

/** True when `ref` is written as a URI rather than as a cached image's name. */
export function isImageUri(ref: string): boolean {
  return /^[a-z][a-z0-9+.-]*:/i.test(ref);
}

/**
 * Returns null when `ref` (the value of attribute `field`) names a cached image or is an
 * http(s)/file URI that the image cache can fetch, else the reason.
 */
export function invalidImageRef(field: string, ref: string): string | null {
  if (!isImageUri(ref)) {
    if (VREF.test(ref)) return null;
    return `${field} "${ref.slice(0, 64)}" is neither an image name (a letter or digit, then up to 127 of A-Z a-z 0-9 . _ + -) nor an http, https or file URI`;
  }
  if (ref.length > MAX_IMAGE_URI) return `${field} is a URI of ${ref.length} characters, more than ${MAX_IMAGE_URI}`;
  if (/[\0-\x20\x7f]/.test(ref)) return `${field} URI contains a space or control character`;
  let url: URL;
  try {
    url = new URL(ref);
  } catch {
    return `${field} "${ref.slice(0, 64)}" is not a valid URI`;
  }
  if (!IMAGE_URI_SCHEMES.has(url.protocol)) return `${field} URI scheme ${JSON.stringify(url.protocol)} is not one of http, https, file`;
  return null;
}
