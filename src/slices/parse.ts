// The authority document (slices.xml) -> this node's slivers and delegates.
//
// A streaming parser (saxes) drives a small state machine: a <slice> is gathered as raw attribute
// text into scratch arrays that are reused for every slice, and only a slice that names this node
// becomes objects. Most of a document concerns other nodes, so it costs a few string comparisons
// and no allocation of ours.
import { SaxesParser } from 'saxes';
import { quoted as quote } from '../util/text.js';
import { buildDelegate, buildSliver, held, describeSlice, type PendingSliver, type RawDelegate, type RawSlice } from './build.js';
import { decodeDocument } from './decode.js';
import { documentErrorAt, locate } from './errors.js';
import type { DelegateSpec, SkippedEntry, SliverSpec, SlicesDocument } from './types.js';
import { describeCount, parseCount } from './values.js';

export { DocumentError } from './errors.js';

export interface ParseOptions {
  /** This node's id: a slice is this node's when one of its <node id> equals it. */
  readonly nodeId: number;
  /** Documents larger than this many bytes are refused before parsing. */
  readonly maxBytes: number;
  /** Name of the document in messages (a file or a redacted URL); "slices.xml" by default. */
  readonly source?: string;
}

// Where the parser is; elements that mean nothing at their place are skipped with their subtree.
const BEFORE_ROOT = 0;
const IN_ROOT = 1;
const IN_SLICE = 2;
const IN_RESOURCE = 3;
const IN_VALUE = 4;
const IN_DELEGATE = 5;
const AFTER_ROOT = 6;

const UNDEFINED_ENTITY_HINT = 'only &amp; &lt; &gt; &quot; &apos; and numeric character references are allowed';

function newRawSlice(): RawSlice {
  return {
    id: undefined, name: undefined, expiry: undefined, instantiation: undefined, timestamp: undefined, timestampCount: 0,
    users: [], keyPersons: [], keyValues: [], resourceNames: [], resourceTexts: [], resourceIssues: [], controllers: [],
  };
}

/**
 * Parses and validates an authority document for node `options.nodeId`. Invalid entries for this
 * node are left out and listed in `skipped`; the rest applies. Throws DocumentError when the
 * document as a whole cannot be trusted: too large, not well-formed XML, a DOCTYPE or an entity
 * other than XML's own, a root other than <slices>, or an unreadable document timestamp or bwcap.
 */
export function parseSlicesDocument(input: string | Uint8Array, options: ParseOptions): SlicesDocument {
  const source = options.source ?? 'slices.xml';
  const nodeId = options.nodeId;
  const nodeIdText = String(nodeId);
  const text = decodeDocument(input, options.maxBytes, source);

  const fail = (index: number, why: string): never => {
    throw documentErrorAt(source, text, index, why);
  };

  const parser = new SaxesParser<{ xmlns: false; position: false }>({ xmlns: false, position: false });
  // Where the element just opened starts: the handlers run once its ">" has been read.
  const tagStart = (): number => text.lastIndexOf('<', parser.position - 1);

  let where = BEFORE_ROOT;
  let depth = 0;
  let skipDepth = 0; // depth of the element being skipped, 0 when none
  let lastClosed = '';

  let documentTimestamp: number | null = null;
  let newestSliceTimestamp = -1;
  let bwcapKbit: number | null = null;
  let slicesSeen = 0;

  const skipped: SkippedEntry[] = [];
  const pending: PendingSliver[] = [];
  const sliceNames = new Map<string, string>(); // this node's slice names -> how the first was described
  const rawDelegates: RawDelegate[] = [];

  const raw = newRawSlice();
  let sliceOnNode = false;
  /** A <node> of the slice whose id cannot be read: the slice may be this node's. */
  let sliceNodeUnreadable: string | null = null;
  let sliceStart = 0;
  let delegate: RawDelegate | null = null;
  let resourceName: string | undefined;
  let valueText = '';
  let valueCount = 0;
  let valueHasMarkup = false;

  const setDocumentTimestamp = (value: string | undefined, at: number): void => {
    const t = parseCount(value ?? '');
    if (Number.isNaN(t)) fail(at, describeCount('document timestamp', value));
    if (documentTimestamp !== null && documentTimestamp !== t) {
      fail(at, `document timestamp ${t} differs from ${documentTimestamp} given before`);
    }
    documentTimestamp = t;
  };

  const onValueText = (chunk: string): void => {
    valueText += chunk;
  };

  const beginSlice = (a: Record<string, string>): void => {
    raw.id = a.id;
    raw.name = a.name;
    raw.expiry = a.expiry;
    raw.instantiation = a.instantiation;
    raw.timestamp = undefined;
    raw.timestampCount = 0;
    raw.users.length = 0;
    raw.keyPersons.length = 0;
    raw.keyValues.length = 0;
    raw.resourceNames.length = 0;
    raw.resourceTexts.length = 0;
    raw.resourceIssues.length = 0;
    raw.controllers.length = 0;
    sliceOnNode = false;
    sliceNodeUnreadable = null;
    sliceStart = parser.position;
  };

  const endSlice = (): void => {
    slicesSeen++;
    if (raw.timestampCount === 1) {
      const t = parseCount(raw.timestamp ?? '');
      if (t > newestSliceTimestamp) newestSliceTimestamp = t;
    }
    if (!sliceOnNode) {
      // Whether the slice is this node's cannot be told: the sliver it names, if the node holds
      // one, is kept as it is (never destroyed on an unreadable id), and not changed either.
      const keep = sliceNodeUnreadable === null ? {} : held('sliver', raw.name, raw.id);
      if (keep.held) {
        const what = describeSlice(raw, () => locate(text, sliceStart).line);
        skipped.push({ what, reason: `${sliceNodeUnreadable}, so the slice may be this node's; a sliver of it is kept as it is`, ...keep });
      }
      return;
    }
    const what = describeSlice(raw, () => locate(text, sliceStart).line);
    if (raw.name !== undefined) {
      const first = sliceNames.get(raw.name);
      if (first !== undefined) {
        skipped.push({ what, reason: `name appears again for this node (first as ${first}); only the first applies` });
        return;
      }
      sliceNames.set(raw.name, what);
    }
    const sliver = buildSliver(raw, what, skipped);
    if (sliver) pending.push(sliver);
  };

  parser.on('opentag', (tag) => {
    depth++;
    if (skipDepth !== 0) return;
    const name = tag.name;
    const a = tag.attributes;
    switch (where) {
      case IN_SLICE:
        if (name === 'node') {
          if (!sliceOnNode) {
            const id = a.id;
            if (id === nodeIdText || (id !== undefined && parseCount(id) === nodeId)) sliceOnNode = true;
            else if (id === undefined || Number.isNaN(parseCount(id))) sliceNodeUnreadable ??= describeCount('<node> id', id);
          }
        } else if (name === 'key') {
          raw.keyPersons.push(a.person_id);
          raw.keyValues.push(a.value);
        } else if (name === 'resource') {
          resourceName = a.name;
          valueText = '';
          valueCount = 0;
          valueHasMarkup = false;
          where = IN_RESOURCE;
          return;
        } else if (name === 'user') {
          raw.users.push(a.person_id);
        } else if (name === 'timestamp') {
          raw.timestamp = a.value;
          raw.timestampCount++;
        } else if (name === 'controller') {
          raw.controllers.push(a.name);
        }
        skipDepth = depth;
        return;
      case IN_RESOURCE:
        if (name === 'value') {
          valueCount++;
          where = IN_VALUE;
          parser.on('text', onValueText);
          return;
        }
        skipDepth = depth;
        return;
      case IN_VALUE:
        valueHasMarkup = true;
        skipDepth = depth;
        return;
      case IN_ROOT:
        if (name === 'slice') {
          beginSlice(a);
          where = IN_SLICE;
          return;
        }
        if (name === 'delegate') {
          const start = parser.position;
          delegate = { name: a.name, expiry: a.expiry, timestamp: undefined, timestampCount: 0, keys: [], line: () => locate(text, start).line };
          where = IN_DELEGATE;
          return;
        }
        if (name === 'timestamp') setDocumentTimestamp(a.value, tagStart());
        else if (name === 'bwcap') {
          const cap = parseCount(a.value ?? '');
          if (Number.isNaN(cap)) fail(tagStart(), describeCount('bwcap value', a.value));
          if (bwcapKbit !== null && bwcapKbit !== cap) fail(tagStart(), `bwcap ${cap} differs from ${bwcapKbit} given before`);
          bwcapKbit = cap;
        }
        skipDepth = depth;
        return;
      case IN_DELEGATE:
        if (name === 'key') delegate!.keys.push(a.value);
        else if (name === 'timestamp') {
          delegate!.timestamp = a.value;
          delegate!.timestampCount++;
        }
        skipDepth = depth;
        return;
      case BEFORE_ROOT:
        if (name !== 'slices') fail(tagStart(), `the root element is <${name}>, expected <slices>`);
        if (a.timestamp !== undefined) setDocumentTimestamp(a.timestamp, tagStart());
        where = IN_ROOT;
        return;
      default:
        skipDepth = depth;
    }
  });

  parser.on('closetag', (tag) => {
    lastClosed = tag.name;
    if (skipDepth !== 0) {
      if (depth === skipDepth) skipDepth = 0;
      depth--;
      return;
    }
    depth--;
    switch (where) {
      case IN_VALUE:
        parser.off('text');
        where = IN_RESOURCE;
        return;
      case IN_RESOURCE:
        raw.resourceNames.push(resourceName);
        raw.resourceTexts.push(valueText);
        raw.resourceIssues.push(
          valueCount === 0 ? 'has no <value>'
            : valueCount > 1 ? `has ${valueCount} <value> elements, expected one`
              : valueHasMarkup ? 'has markup inside <value>' : null,
        );
        where = IN_SLICE;
        return;
      case IN_SLICE:
        endSlice();
        where = IN_ROOT;
        return;
      case IN_DELEGATE:
        rawDelegates.push(delegate!);
        delegate = null;
        where = IN_ROOT;
        return;
      case IN_ROOT:
        where = AFTER_ROOT;
        return;
    }
  });

  parser.on('cdata', (data) => {
    if (where === IN_VALUE && skipDepth === 0) valueText += data;
  });

  parser.on('doctype', () => {
    fail(text.lastIndexOf('<!DOCTYPE', parser.position), 'DOCTYPE is not allowed');
  });

  // saxes reports where it stopped reading; point at the start of the offending construct instead
  // and name it, so that the message can be acted on without a hex editor.
  parser.on('error', (error) => {
    const position = Math.min(parser.position, text.length);
    const why = error.message.replace(/\.$/, '');
    if (why.startsWith('unexpected close tag') || why.startsWith('unmatched closing tag')) {
      const at = text.lastIndexOf('</', position - 1);
      const closing = text.slice(at, position);
      fail(at, why.startsWith('unexpected') ? `unexpected close tag ${closing} (open element is <${lastClosed}>)` : `close tag ${closing} has no open element`);
    }
    if (why.includes('entity')) {
      const at = text.lastIndexOf('&', position - 1);
      const reference = text.slice(at, Math.min(position, at + 40));
      fail(at, why.startsWith('undefined entity') ? `undefined entity ${reference} (${UNDEFINED_ENTITY_HINT})` : `${why}: ${reference}`);
    }
    if (why.startsWith('text data outside of root')) {
      const end = text.charCodeAt(position - 1) === 60 /* < */ ? position - 1 : position;
      let at = text.lastIndexOf('>', end - 1) + 1;
      while (at < end && /\s/.test(text[at]!)) at++;
      fail(at, `text outside the root element: ${quote(text.slice(at, Math.min(end, at + 40)).trim())}`);
    }
    if (why.startsWith('unclosed tag: ') || why.startsWith('document must contain') || why.startsWith('unexpected end')) {
      // saxes reads an "&" that begins no reference (no ";") on to the end of the document; the
      // fault is that "&", wherever it is.
      const stray = strayAmpersand(text);
      if (stray !== null) fail(stray, `"&" does not begin a reference (write &amp; for a literal "&"): ${quote(text.slice(stray, stray + 20))}`);
    }
    if (why.startsWith('unclosed tag: ')) {
      fail(text.length, `element <${why.slice('unclosed tag: '.length)}> is not closed when the document ends`);
    }
    if (why.startsWith('document must contain') || why.startsWith('unexpected end')) {
      fail(text.length, `${why} (the document ends here)`);
    }
    const at = Math.max(position - 1, 0);
    fail(at, why.startsWith('disallowed character') ? `${why} ${JSON.stringify(text[at] ?? '')}` : why);
  });

  parser.write(text).close();

  const timestamp = documentTimestamp ?? (newestSliceTimestamp >= 0 ? newestSliceTimestamp : 0);
  const slivers: SliverSpec[] = pending.map((s) => ({ ...s, timestamp: s.timestamp ?? timestamp }));
  const delegates: DelegateSpec[] = [];
  const delegateNames = new Set<string>();
  for (const rd of rawDelegates) {
    const spec = buildDelegate(rd, timestamp, (name) => {
      if (sliceNames.has(name)) return `name is also a slice on this node (${sliceNames.get(name)})`;
      if (delegateNames.has(name)) return 'name appears again among the delegates; only the first applies';
      return null;
    }, skipped);
    if (spec) {
      delegates.push(spec);
      delegateNames.add(spec.name);
    }
  }

  return { timestamp, nodeId, slivers, delegates, bwcapKbit, skipped, slicesSeen };
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
