// Description text -> a small element tree, under the rules of every document the node reads: a
// size limit, no DOCTYPE (so no entity declarations), well-formed XML. vc-in.xml has no namespace
// and embeds libvirt domains whose elements it reads a few of, so a plain tree is enough; names
// with a prefix (a domain's <qemu:commandline>) are kept as written.
import { SaxesParser, type SaxesTagPlain } from 'saxes';
import { decodeDocument } from '../slices/decode.js';
import { DocumentError, elementErrorAt, Refusal as GenericRefusal } from '../slices/errors.js';
import { describeSyntaxError } from '../slices/syntax-errors.js';
import { VcInError } from './vc-in-types.js';

export interface VcElement {
  readonly name: string;
  readonly attributes: ReadonlyMap<string, string>;
  readonly children: VcElement[];
  /** Its own text (and CDATA), not its children's. */
  text: string;
  /** Offset of its "<" in the document. */
  readonly at: number;
}

/** A refusal at an element, turned into a VcInError with line and column at the top. */
export class Refusal extends GenericRefusal<VcElement> {}

export function refuse(element: VcElement, why: string): never {
  throw new Refusal(element, why);
}

export function errorAt(source: string, text: string, index: number, element: string, why: string): VcInError {
  return elementErrorAt(VcInError, source, text, index, element, why);
}

/** The text of the description, or a VcInError for its size or encoding. */
export function decodeVcIn(input: string | Uint8Array, maxBytes: number, source: string): string {
  try {
    return decodeDocument(input, maxBytes, source);
  } catch (error) {
    if (!(error instanceof DocumentError)) throw error;
    const placed = `${source} line ${error.line} column ${error.column}: `;
    const reason = error.message.startsWith(placed) ? error.message.slice(placed.length)
      : error.message.startsWith(`${source}: `) ? error.message.slice(source.length + 2) : error.message;
    const where = error.line === null ? `${source}: ` : placed;
    throw new VcInError(`${where}document: ${reason}`, error.line, error.column, 'document', reason);
  }
}

type PlainParser = SaxesParser<{ xmlns: false; position: false }>;

/** The document's root element with its whole subtree. */
export function buildTree(text: string, source: string): VcElement {
  const parser: PlainParser = new SaxesParser({ xmlns: false, position: false });
  const open: VcElement[] = [];
  let root: VcElement | null = null;
  let lastClosed = '';
  const fail = (at: number, element: string, why: string): never => {
    throw errorAt(source, text, at, element, why);
  };
  const addText = (chunk: string) => {
    const top = open[open.length - 1];
    if (top !== undefined) top.text += chunk;
  };
  parser.on('opentag', (tag: SaxesTagPlain) => {
    const element: VcElement = {
      name: tag.name, attributes: new Map(Object.entries(tag.attributes)), children: [], text: '',
      at: text.lastIndexOf('<', parser.position - 1),
    };
    const parent = open[open.length - 1];
    if (parent === undefined) {
      if (root !== null) fail(element.at, element.name, 'a second root element');
      root = element;
    } else {
      parent.children.push(element);
    }
    open.push(element);
  });
  parser.on('closetag', (tag) => {
    lastClosed = tag.name;
    open.pop();
  });
  parser.on('text', addText);
  parser.on('cdata', addText);
  parser.on('doctype', () => {
    fail(text.lastIndexOf('<!DOCTYPE', parser.position), 'document', 'DOCTYPE is not allowed (nor, with it, entity declarations)');
  });
  parser.on('error', (error) => {
    const innermost = open[open.length - 1]?.name ?? 'document';
    const { at, why } = describeSyntaxError(text, parser.position, error.message, lastClosed);
    // On a mismatched close tag saxes has already closed the element left open: that is the one at fault.
    fail(at, error.message.startsWith('unexpected close tag') ? lastClosed : innermost, why);
  });
  parser.write(text).close();
  if (root === null) fail(text.length, 'document', 'no root element');
  return root!;
}

// ---- reading elements -------------------------------------------------------------------------

/** How often a child may appear: exactly once, at most once, any number of times. */
export type Occurs = 'one' | 'optional' | 'many';

export interface Children {
  /** The child named `name`, or null when absent. */
  opt(name: string): VcElement | null;
  /** The child named `name` (declared 'one': its presence was checked). */
  one(name: string): VcElement;
  all(name: string): readonly VcElement[];
}

/**
 * The children of one of pragma's own elements, checked against `spec`: an unknown child is
 * refused (a misspelt <boot_dependancy> must not be ignored), and so is text between them.
 */
export function readChildren(element: VcElement, spec: Readonly<Record<string, Occurs>>): Children {
  const stray = element.text.trim();
  if (stray !== '') refuse(element, `has text ${JSON.stringify(stray.slice(0, 40))} where only elements belong`);
  const groups = new Map<string, VcElement[]>();
  for (const child of element.children) {
    const occurs = spec[child.name];
    if (occurs === undefined) {
      const expected = Object.keys(spec);
      refuse(child, expected.length === 0 ? `${element.name} has no child elements`
        : `unknown element in ${element.name} (expected: ${expected.join(', ')})`);
    }
    const group = groups.get(child.name);
    if (group === undefined) groups.set(child.name, [child]);
    else if (occurs === 'many') group.push(child);
    else refuse(child, `a second ${child.name} in ${element.name}; only one is allowed`);
  }
  for (const [name, occurs] of Object.entries(spec)) {
    if (occurs === 'one' && !groups.has(name)) refuse(element, `has no <${name}>`);
  }
  return {
    opt: (name) => groups.get(name)?.[0] ?? null,
    one: (name) => groups.get(name)![0]!,
    all: (name) => groups.get(name) ?? [],
  };
}

/** The children named `name`, wherever the (libvirt) element puts other ones. */
export function childrenNamed(element: VcElement, name: string): VcElement[] {
  return element.children.filter((c) => c.name === name);
}

/** The trimmed text of a text-only element; child elements are refused. */
export function textOf(element: VcElement): string {
  if (element.children.length > 0) refuse(element, 'has child elements where only text belongs');
  return element.text.trim();
}

/** The attribute's value, refused when absent or empty. */
export function requiredAttribute(element: VcElement, name: string): string {
  const value = element.attributes.get(name)?.trim();
  if (value === undefined || value === '') refuse(element, `has no ${name} attribute`);
  return value!;
}
