// The authority document (slices.xml) -> this node's slivers and delegates.
//
// The reader's state machine (reader.ts) gathers each <slice> as raw attribute text into scratch
// arrays reused for every slice; only a slice that names this node becomes objects (gathered.ts,
// build.ts). Most of a document concerns other nodes, so it costs a few string comparisons and no
// allocation of ours. The reader is fed by the plain-subset scanner (scanner.ts), which reads a
// document as authorities write it several times faster than a character-by-character parser; a
// document it does not vouch for (outside its subset, or not well-formed) is read by the streaming
// parser saxes, which checks all of XML and says where and why a document is not well-formed.
import { SaxesParser } from 'saxes';
import { decodeDocument } from './decode.js';
import { finishDocument, type Gathered } from './gathered.js';
import { closeElement, fail, newReaderState, openElement, readCdata, readText, type EventSource } from './reader.js';
import { readPlainDocument } from './scanner.js';
import { describeSyntaxError } from './syntax-errors.js';
import type { SlicesDocument } from './types.js';

export { DocumentError } from './errors.js';
export { strayAmpersand } from './syntax-errors.js';

export interface ParseOptions {
  /** This node's id: a slice is this node's when one of its <node id> equals it. */
  readonly nodeId: number;
  /** Documents larger than this many bytes are refused before parsing. */
  readonly maxBytes: number;
  /** Name of the document in messages (a file or a redacted URL); "slices.xml" by default. */
  readonly source?: string;
}

/**
 * Parses and validates an authority document for node `options.nodeId`. Invalid entries for this
 * node are left out and listed in `skipped`; the rest applies. Throws DocumentError when the
 * document as a whole cannot be trusted: too large, not well-formed XML, a DOCTYPE or an entity
 * other than XML's own, a root other than <slices>, or an unreadable document timestamp or bwcap.
 */
export function parseSlicesDocument(input: string | Uint8Array, options: ParseOptions): SlicesDocument {
  const source = options.source ?? 'slices.xml';
  const text = decodeDocument(input, options.maxBytes, source);
  const gathered = readPlainDocument(text, source, options.nodeId) ?? readWithSaxes(text, source, options.nodeId);
  return finishDocument(gathered, options.nodeId);
}

/**
 * Reads any XML document with saxes; throws the DocumentError of the first fault it meets. (Exported
 * so that tests can hold the plain-subset scanner's reading against it.)
 */
export function readWithSaxes(text: string, source: string, nodeId: number): Gathered {
  const parser = new SaxesParser({ xmlns: false, position: false });
  const onText = (chunk: string) => readText(reader, chunk);
  const events: EventSource = {
    get position() {
      return parser.position;
    },
    wantText: (wanted) => (wanted ? parser.on('text', onText) : parser.off('text')),
  };
  const reader = newReaderState(text, source, nodeId, events);

  parser.on('opentag', (tag) => openElement(reader, tag));
  parser.on('closetag', (tag) => closeElement(reader, tag.name));
  parser.on('cdata', (data) => readCdata(reader, data));
  parser.on('doctype', () => {
    fail(reader, text.lastIndexOf('<!DOCTYPE', parser.position), 'DOCTYPE is not allowed');
  });
  parser.on('error', (error) => {
    const { at, why } = describeSyntaxError(text, parser.position, error.message, reader.lastClosed);
    fail(reader, at, why);
  });
  parser.write(text).close();
  return reader.gathered;
}
