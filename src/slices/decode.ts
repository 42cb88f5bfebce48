// Bytes of an authority document -> text, within a size limit, honouring the encoding that its
// XML declaration names. The seed documents declare iso-8859-1; later ones are UTF-8.
import { Buffer, isUtf8 } from 'node:buffer';
import { DocumentError, documentErrorAt } from './errors.js';
import { quoted } from '../util/text.js';

const LATIN1_NAMES = new Set(['iso-8859-1', 'iso8859-1', 'iso_8859-1', 'latin1', 'latin-1', 'l1', 'us-ascii', 'ascii']);
const UTF8_NAMES = new Set(['utf-8', 'utf8']);

// Only the start of the document can hold the declaration; it is read as latin1, which maps every
// byte to one character, so offsets in it are byte offsets.
const DECLARATION = /^<\?xml[ \t\r\n][^?>]*?encoding[ \t\r\n]*=[ \t\r\n]*(["'])([^"']*)\1/;

function tooLarge(source: string, size: string, maxBytes: number): DocumentError {
  return new DocumentError(`${source}: document is ${size}, more than the limit of ${maxBytes} bytes`);
}

/** Index of the first byte that does not start a valid UTF-8 sequence (only called on failure). */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    let extra: number;
    let min: number;
    if (b < 0x80) { i++; continue; }
    else if (b >= 0xc2 && b <= 0xdf) { extra = 1; min = 0x80; }
    else if (b >= 0xe0 && b <= 0xef) { extra = 2; min = 0x800; }
    else if (b >= 0xf0 && b <= 0xf4) { extra = 3; min = 0x10000; }
    else return i;
    let cp = b & (0x3f >> extra);
    for (let k = 1; k <= extra; k++) {
      const next = bytes[i + k];
      if (next === undefined || (next & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (next & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += extra + 1;
  }
  return bytes.length;
}

/**
 * Returns the document's text. A string is taken as already decoded; bytes are decoded as UTF-8
 * unless the declaration names ISO-8859-1 (or ASCII, its subset). Throws DocumentError when the
 * document exceeds `maxBytes`, names an encoding this program does not read, or is not valid
 * in the encoding it claims.
 */
export function decodeDocument(input: string | Uint8Array, maxBytes: number, source: string): string {
  if (typeof input === 'string') {
    // A UTF-16 code unit is at most 3 bytes of UTF-8, so most strings need no byte count.
    if (input.length * 3 > maxBytes) {
      const size = Buffer.byteLength(input, 'utf8');
      if (size > maxBytes) throw tooLarge(source, `${size} bytes`, maxBytes);
    }
    return input;
  }
  if (input.byteLength > maxBytes) throw tooLarge(source, `${input.byteLength} bytes`, maxBytes);
  const bytes = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);

  if ((bytes[0] === 0xfe && bytes[1] === 0xff) || (bytes[0] === 0xff && bytes[1] === 0xfe)) {
    throw new DocumentError(`${source} line 1 column 1: UTF-16 documents are not supported (use UTF-8 or ISO-8859-1)`, 1, 1);
  }
  const hasBom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf;
  const head = bytes.toString('latin1', hasBom ? 3 : 0, Math.min(bytes.length, 512));
  const declared = DECLARATION.exec(head);
  let encoding = 'utf-8';
  if (declared) {
    const name = declared[2]!.toLowerCase();
    if (LATIN1_NAMES.has(name) && !hasBom) encoding = 'latin1';
    else if (!UTF8_NAMES.has(name) && !LATIN1_NAMES.has(name)) {
      const at = declared.index + declared[0].length - declared[2]!.length - 1;
      throw documentErrorAt(source, head, at, `encoding ${quoted(declared[2]!)} is not supported (use UTF-8 or ISO-8859-1)`);
    }
  }
  if (encoding === 'latin1') return bytes.toString('latin1');
  if (!isUtf8(bytes)) {
    const bad = firstInvalidUtf8(bytes);
    // Locate in the text before the fault, which is valid, so columns count characters.
    const before = bytes.toString('utf8', 0, bad);
    throw documentErrorAt(source, before, before.length, `byte 0x${bytes[bad]?.toString(16).padStart(2, '0') ?? '??'} at offset ${bad} is not valid UTF-8 (declare encoding="iso-8859-1" for a Latin-1 document)`);
  }
  return bytes.toString('utf8');
}
