// What saxes says about XML that is not well-formed, turned into a message that can be acted on
// without a hex editor: saxes reports where it stopped reading, so each message is moved back to
// the start of the offending construct, and that construct is named.
import { quoted as quote } from '../util/text.js';

const UNDEFINED_ENTITY_HINT = 'only &amp; &lt; &gt; &quot; &apos; and numeric character references are allowed';

/** Where in the document a syntax error is, and why it is one. */
export interface SyntaxFault {
  readonly at: number;
  readonly why: string;
}

/**
 * The fault behind saxes's `message`, reported with the parser at `position` of `text`.
 * `lastClosed` is the element saxes closed last: on an unexpected close tag, the one left open.
 */
export function describeSyntaxError(text: string, position: number, message: string, lastClosed: string): SyntaxFault {
  position = Math.min(position, text.length);
  const why = message.replace(/\.$/, '');
  if (why.startsWith('unexpected close tag') || why.startsWith('unmatched closing tag')) {
    const at = text.lastIndexOf('</', position - 1);
    const closing = text.slice(at, position);
    return { at, why: why.startsWith('unexpected') ? `unexpected close tag ${closing} (open element is <${lastClosed}>)` : `close tag ${closing} has no open element` };
  }
  if (why.includes('entity')) {
    const at = text.lastIndexOf('&', position - 1);
    const reference = text.slice(at, Math.min(position, at + 40));
    return { at, why: why.startsWith('undefined entity') ? `undefined entity ${reference} (${UNDEFINED_ENTITY_HINT})` : `${why}: ${reference}` };
  }
  if (why.startsWith('text data outside of root')) return textOutsideRoot(text, position);
  const atEnd = why.startsWith('document must contain') || why.startsWith('unexpected end');
  if (atEnd || why.startsWith('unclosed tag: ')) {
    // saxes reads an "&" that begins no reference (no ";") on to the end of the document; the
    // fault is that "&", wherever it is.
    const stray = strayAmpersand(text);
    if (stray !== null) return { at: stray, why: `"&" does not begin a reference (write &amp; for a literal "&"): ${quote(text.slice(stray, stray + 20))}` };
  }
  if (why.startsWith('unclosed tag: ')) {
    return { at: text.length, why: `element <${why.slice('unclosed tag: '.length)}> is not closed when the document ends` };
  }
  if (atEnd) return { at: text.length, why: `${why} (the document ends here)` };
  const at = Math.max(position - 1, 0);
  return { at, why: why.startsWith('disallowed character') ? `${why} ${JSON.stringify(text[at] ?? '')}` : why };
}

/** The text saxes found after the root element (or before it), from its first non-space character. */
function textOutsideRoot(text: string, position: number): SyntaxFault {
  const end = text.charCodeAt(position - 1) === 60 /* < */ ? position - 1 : position;
  let at = text.lastIndexOf('>', end - 1) + 1;
  while (at < end && /\s/.test(text[at]!)) at++;
  return { at, why: `text outside the root element: ${quote(text.slice(at, Math.min(end, at + 40)).trim())}` };
}

/**
 * The offset of the first "&" outside comments and CDATA sections that does not begin a
 * reference (`&name;`, `&#digits;`, `&#xhex;`), or null when there is none.
 */
export function strayAmpersand(text: string): number | null {
  const reference = /^&(?:[A-Za-z_:][\w.:-]*|#\d+|#x[0-9A-Fa-f]+);/;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 60 /* < */) {
      const close = text.startsWith('<!--', i) ? text.indexOf('-->', i + 4) : text.startsWith('<![CDATA[', i) ? text.indexOf(']]>', i + 9) : -2;
      if (close === -1) return null; // an unterminated comment or section: its own fault
      if (close >= 0) i = close + 2;
    } else if (c === 38 /* & */ && !reference.test(text.slice(i, i + 64))) {
      return i;
    }
  }
  return null;
}
