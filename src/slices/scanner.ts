// A tokenizer for the plain subset of XML that authority documents are written in: elements with
// quoted attributes, text, comments and an XML declaration, in ASCII names, without references,
// CDATA sections, processing instructions, a DOCTYPE or carriage returns. It finds each tag with
// indexOf and one sticky regular expression instead of reading the text character by character
// as saxes does, which is most of the time a 10,000-slice document takes.
//
// It only ever says yes to a document that is well-formed XML and that saxes would read into the
// very same events. Anything else, whether it is not well-formed or merely outside the subset,
// makes it give up (null), and the caller reads the document with saxes from the start, so every
// rejection is saxes's, with the same reason at the same line and column as before.
import type { Gathered } from './gathered.js';
import { closeElement, newReaderState, openElement, readText, type EventSource, type ReaderState } from './reader.js';

/**
 * A character outside the subset: one XML forbids (controls, U+FFFE, U+FFFF), a carriage return
 * (XML normalises line ends), "&" (a reference), any surrogate (a character beyond U+FFFF, or a
 * broken one), U+007F-U+009F; or "]]>", which XML forbids in text.
 */
const OUTSIDE_SUBSET = /[^\t\n\x20-\x25\x27-\x7e\xa0-\ud7ff\ue000-\ufffd]|\]\]>/;

/** The XML declaration as the seed documents write it (version 1.0, an encoding, standalone). */
const DECLARATION = /<\?xml[ \t\n]+version[ \t\n]*=[ \t\n]*(?:"1\.0"|'1\.0')(?:[ \t\n]+encoding[ \t\n]*=[ \t\n]*(?:"[A-Za-z][\w.-]*"|'[A-Za-z][\w.-]*'))?(?:[ \t\n]+standalone[ \t\n]*=[ \t\n]*(?:"(?:yes|no)"|'(?:yes|no)'))?[ \t\n]*\?>/y;

/**
 * A start or empty-element tag: its name, its attributes' text, and "/" when it is empty. Attribute
 * values hold no tab or newline (XML would turn them into spaces) and no "<".
 */
const OPEN_TAG = /<([A-Za-z_][\w.-]*)((?:[ \t\n]+[A-Za-z_][\w.-]*[ \t\n]*=[ \t\n]*(?:"[^"<\t\n]*"|'[^'<\t\n]*'))*)[ \t\n]*(\/?)>/y;
const ATTRIBUTE = /[ \t\n]+([A-Za-z_][\w.-]*)[ \t\n]*=[ \t\n]*(?:"([^"]*)"|'([^']*)')/g;
const CLOSE_TAG = /<\/([A-Za-z_][\w.-]*)[ \t\n]*>/y;

// A slice's content as authorities write it, to its end tag, matched in one go: each child in one
// fixed form, with distinct attributes in a fixed order (so none can be given twice) and numbers
// in their shortest decimal form (so that the text of a node id tells whether it is this node's).
const NUMBER = '(?:0|[1-9][0-9]{0,14})';
const VALUE = '[^"<\\t\\n]*';
const PLAIN_CHILD = [
  `<timestamp value="${NUMBER}"/>`, `<node id="${NUMBER}"/>`, `<user person_id="${NUMBER}"/>`,
  `<key person_id="${NUMBER}" value="${VALUE}"/>`, `<controller name="${VALUE}"/>`,
  '<resource name="[\\w.-]*"><value>[^<]*</value></resource>',
].join('|');
const PLAIN_SLICE_CONTENT = new RegExp(`[ \\t\\n]*(?:(?:${PLAIN_CHILD})[ \\t\\n]*)*</slice>`, 'y');
const TIMESTAMP = '<timestamp value="';

/** True when text[from, to) is XML white space only (the only text allowed outside the root). */
function isBlank(text: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c !== 32 && c !== 10 && c !== 9) return false;
  }
  return true;
}

/** The attributes of a start tag from their text; null when one is given twice (not well-formed). */
function attributesOf(text: string): Record<string, string> | null {
  const attributes: Record<string, string> = {};
  if (text.length === 0) return attributes;
  ATTRIBUTE.lastIndex = 0;
  for (let m = ATTRIBUTE.exec(text); m !== null; m = ATTRIBUTE.exec(text)) {
    const name = m[1]!;
    // `in` also sees Object.prototype's names, so "__proto__" and the like are left to saxes.
    if (name in attributes) return null;
    attributes[name] = m[2] ?? m[3]!;
  }
  return attributes;
}

class PlainScanner implements EventSource {
  position = 0;
  private textWanted = false;
  /** Where the next `<node id="N"` of this node is (past the end when there is none), -1 before it is looked for. */
  private nextOfThisNode = -1;
  private readonly thisNode: string;

  constructor(private readonly text: string, nodeId: number) {
    this.thisNode = `<node id="${nodeId}"`;
  }

  wantText(wanted: boolean): void {
    this.textWanted = wanted;
  }

  /** Feeds the whole document to `r`; false as soon as it leaves the subset or is not well-formed. */
  run(r: ReaderState): boolean {
    const text = this.text;
    const open: string[] = [];
    let i = 0;
    let rootSeen = false;
    if (text.startsWith('<?', 0)) {
      DECLARATION.lastIndex = 0;
      if (!DECLARATION.test(text)) return false;
      i = DECLARATION.lastIndex;
    }
    for (;;) {
      const lt = text.indexOf('<', i);
      const end = lt === -1 ? text.length : lt;
      if (end > i) {
        if (open.length === 0) {
          if (!isBlank(text, i, end)) return false;
        } else if (this.textWanted) readText(r, text.slice(i, end));
      }
      if (lt === -1) return rootSeen && open.length === 0;
      const next = text.charCodeAt(lt + 1);
      if (next === 47 /* / */) {
        CLOSE_TAG.lastIndex = lt;
        const m = CLOSE_TAG.exec(text);
        if (m === null || open.length === 0 || m[1] !== open[open.length - 1]) return false;
        open.pop();
        i = this.position = CLOSE_TAG.lastIndex;
        closeElement(r, m[1]!);
      } else if (next === 33 /* ! */) {
        i = this.comment(lt);
        if (i < 0) return false;
      } else {
        if (rootSeen && open.length === 0) return false; // a second root
        OPEN_TAG.lastIndex = lt;
        const m = OPEN_TAG.exec(text);
        const attributes = m === null ? null : attributesOf(m[2]!);
        if (m === null || attributes === null) return false;
        const name = m[1]!;
        i = this.position = OPEN_TAG.lastIndex;
        rootSeen = true;
        openElement(r, { name, attributes });
        if (m[3] === '/') closeElement(r, name);
        else if (name === 'slice' && open.length === 1 && this.skipSliceOfOtherNode(r, i)) i = this.position;
        else open.push(name);
      }
    }
  }

  /**
   * A <slice> whose content (from `from`) is all in its plain form and names other nodes only: the
   * reader is told of its timestamps and its end, the only events that count for a slice of another
   * node, and the scanner moves past it (true). False when the slice must be read element by element.
   */
  private skipSliceOfOtherNode(r: ReaderState, from: number): boolean {
    const text = this.text;
    PLAIN_SLICE_CONTENT.lastIndex = from;
    if (!PLAIN_SLICE_CONTENT.test(text)) return false;
    const end = PLAIN_SLICE_CONTENT.lastIndex;
    if (this.nextOfThisNode < from) {
      const at = text.indexOf(this.thisNode, from);
      this.nextOfThisNode = at < 0 ? text.length : at;
    }
    if (this.nextOfThisNode < end) return false;
    for (let at = text.indexOf(TIMESTAMP, from); at >= 0 && at < end; at = text.indexOf(TIMESTAMP, at + TIMESTAMP.length)) {
      const valueStart = at + TIMESTAMP.length;
      openElement(r, { name: 'timestamp', attributes: { value: text.slice(valueStart, text.indexOf('"', valueStart)) } });
      closeElement(r, 'timestamp');
    }
    this.position = end;
    closeElement(r, 'slice');
    return true;
  }

  /** Offset past the comment at `lt`, or -1 when it is not a well-formed comment. */
  private comment(lt: number): number {
    const text = this.text;
    if (!text.startsWith('<!--', lt)) return -1; // a DOCTYPE or a CDATA section: left to saxes
    const close = text.indexOf('-->', lt + 4);
    if (close < 0) return -1;
    const dashes = text.indexOf('--', lt + 4);
    // "--" may not occur inside a comment, nor may it end with "-" ("--->").
    if (dashes !== close || text.charCodeAt(close - 1) === 45) return -1;
    return close + 3;
  }
}

/**
 * Reads `text` for node `nodeId` when it is in the plain subset: the gathered document, or null when
 * it must be read by saxes (outside the subset, not well-formed, or refused by the reader).
 */
export function readPlainDocument(text: string, source: string, nodeId: number): Gathered | null {
  if (OUTSIDE_SUBSET.test(text)) return null;
  const scanner = new PlainScanner(text, nodeId);
  const reader = newReaderState(text, source, nodeId, scanner);
  try {
    return scanner.run(reader) ? reader.gathered : null;
  } catch {
    // The reader refused the document (its root, its timestamp): saxes reads it again, so that the
    // refusal is the one it has always been, with any syntax fault before it found first.
    return null;
  }
}
