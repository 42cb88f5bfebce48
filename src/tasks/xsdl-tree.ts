// XSDL text -> a small element tree, under the same rules as the authority's document: a size
// limit, no DOCTYPE (so no entity declarations), well-formed XML with namespaces. A job is a few
// kilobytes and its meaning depends on elements that come later (the file systems that paths
// name follow the application), so a tree is simpler than a streaming state machine here.
import { SaxesParser, type SaxesTagNS } from 'saxes';
import { decodeDocument } from '../slices/decode.js';
import { DocumentError, elementErrorAt, Refusal as GenericRefusal } from '../slices/errors.js';
import { describeSyntaxError } from '../slices/syntax-errors.js';
import { XsdlError } from './xsdl-types.js';

/** The namespaces of an XSDL job, under the prefixes messages use for them. */
export const NAMESPACES = {
  jsdl: 'http://schemas.ggf.org/jsdl/2005/11/jsdl',
  'jsdl-posix': 'http://schemas.ggf.org/jsdl/2005/11/jsdl-posix',
  xsdl: 'http://www.example.com/schemas/xbe/2007/01/xsdl',
  xbe: 'http://www.example.com/schemas/xbe/2007/01/xbe',
} as const;
export type Prefix = keyof typeof NAMESPACES;

const PREFIX_OF = new Map<string, Prefix>(Object.entries(NAMESPACES).map(([p, uri]) => [uri, p as Prefix]));

/** An element of a known namespace; elements of other namespaces are not kept (JSDL's ##other). */
export interface XmlElement {
  /** "prefix:Local" with the prefix of NAMESPACES, whatever prefix the document binds. */
  readonly key: string;
  /** Null only for a root of another namespace, which the caller refuses. */
  readonly prefix: Prefix | null;
  readonly local: string;
  /** The name as written in the document, for messages. */
  readonly name: string;
  /** Attributes without a namespace (those of other namespaces, xmlns among them, are JSDL's ##other). */
  readonly attributes: ReadonlyMap<string, string>;
  readonly children: XmlElement[];
  /** Its own text (and CDATA), not its children's. */
  text: string;
  /** True when it has child elements of any namespace: a text-only element must not. */
  markup: boolean;
  /** Offset of its "<" in the document. */
  readonly at: number;
}

/** A refusal at an element, turned into a XsdlError with line and column at the top. */
export class Refusal extends GenericRefusal<XmlElement> {}

export function refuse(element: XmlElement, why: string): never {
  throw new Refusal(element, why);
}

export function errorAt(source: string, text: string, index: number, element: string, why: string): XsdlError {
  return elementErrorAt(XsdlError, source, text, index, element, why);
}

/** The decoder's DocumentError (size, encoding) in this module's terms. */
function fromDocumentError(error: DocumentError, source: string): XsdlError {
  const placed = `${source} line ${error.line} column ${error.column}: `;
  const reason = error.message.startsWith(placed) ? error.message.slice(placed.length)
    : error.message.startsWith(`${source}: `) ? error.message.slice(source.length + 2) : error.message;
  const where = error.line === null ? `${source}: ` : placed;
  return new XsdlError(`${where}document: ${reason}`, error.line, error.column, 'document', reason);
}

export function decodeXsdl(input: string | Uint8Array, maxBytes: number, source: string): string {
  try {
    return decodeDocument(input, maxBytes, source);
  } catch (error) {
    if (error instanceof DocumentError) throw fromDocumentError(error, source);
    throw error;
  }
}

type NsParser = SaxesParser<{ xmlns: true; position: false }>;

/**
 * The document's root element with its known-namespace subtree. The root is kept whatever its
 * namespace (as key "{uri}Local" when unknown) so that the caller can say what it is.
 */
export function buildTree(text: string, source: string): XmlElement {
  const parser: NsParser = new SaxesParser({ xmlns: true, position: false });
  const open: XmlElement[] = [];
  let root: XmlElement | null = null;
  // Depth inside an element of another namespace whose subtree is skipped; 0 when none.
  let skipping = 0;
  let lastClosed = '';
  const fail = (at: number, element: string, why: string): never => {
    throw errorAt(source, text, at, element, why);
  };
  const addText = (chunk: string) => {
    const top = open[open.length - 1];
    if (top !== undefined && skipping === 0) top.text += chunk;
  };

  parser.on('opentag', (tag) => {
    const parent = open[open.length - 1];
    if (skipping !== 0 || (parent !== undefined && !PREFIX_OF.has(tag.uri))) {
      if (parent !== undefined) parent.markup = true;
      skipping++;
      return;
    }
    const element = newElement(tag, text.lastIndexOf('<', parser.position - 1));
    if (parent === undefined) {
      if (root !== null) fail(element.at, element.name, 'a second root element');
      root = element;
    } else {
      parent.markup = true;
      parent.children.push(element);
    }
    open.push(element);
  });
  parser.on('closetag', (tag) => {
    lastClosed = tag.name;
    if (skipping !== 0) skipping--;
    else open.pop();
  });
  parser.on('text', addText);
  parser.on('cdata', addText);
  parser.on('doctype', () => {
    fail(text.lastIndexOf('<!DOCTYPE', parser.position), 'document', 'DOCTYPE is not allowed (nor, with it, entity declarations)');
  });
  parser.on('error', (error) => {
    const innermost = open[open.length - 1]?.name ?? 'document';
    if (error.message.startsWith('unbound namespace prefix')) {
      // saxes reports it at the end of the tag; the tag's start is where to look.
      const at = text.lastIndexOf('<', parser.position - 1);
      const name = /^<([^\s/>]+)/.exec(text.slice(at))?.[1] ?? innermost;
      fail(at, name, `${error.message.replace(/\.$/, '')} (declare it with xmlns:prefix="...")`);
    }
    const { at, why } = describeSyntaxError(text, parser.position, error.message, lastClosed);
    // On a mismatched close tag saxes has already closed the element left open: that is the one at fault.
    fail(at, error.message.startsWith('unexpected close tag') ? lastClosed : innermost, why);
  });
  parser.write(text).close();
  if (root === null) fail(text.length, 'document', 'no root element');
  return root!;
}

function newElement(tag: SaxesTagNS, at: number): XmlElement {
  const prefix = PREFIX_OF.get(tag.uri);
  const attributes = new Map<string, string>();
  for (const attribute of Object.values(tag.attributes)) {
    if (attribute.uri === '') attributes.set(attribute.local, attribute.value);
  }
  return {
    key: prefix === undefined ? `{${tag.uri}}${tag.local}` : `${prefix}:${tag.local}`,
    prefix: prefix ?? null, local: tag.local, name: tag.name,
    attributes, children: [], text: '', markup: false, at,
  };
}
