// The state machine that reads an authority document from a tokenizer's events (saxes's, or the
// plain-subset scanner's: scanner.ts): where in the document the reader is, and what each element
// means at its place. Elements that mean nothing at their
// place are skipped with their subtree. A slice is gathered as raw attribute text (gathered.ts), so
// that a slice of another node costs a few string comparisons and no allocation of ours.
import type { RawDelegate } from './build.js';
import { documentErrorAt, locate } from './errors.js';
import {
  newGathered, newSliceInProgress, restartSlice, takeBwcap, takeDocumentTimestamp, takeSlice, type Gathered,
  type SliceInProgress,
} from './gathered.js';
import { describeCount, parseCount } from './values.js';

// Where the reader is.
const BEFORE_ROOT = 0;
const IN_ROOT = 1;
const IN_SLICE = 2;
const IN_RESOURCE = 3;
const IN_VALUE = 4;
const IN_DELEGATE = 5;
const AFTER_ROOT = 6;
type Position = typeof BEFORE_ROOT | typeof IN_ROOT | typeof IN_SLICE | typeof IN_RESOURCE | typeof IN_VALUE | typeof IN_DELEGATE | typeof AFTER_ROOT;

/** What the reader needs of the tokenizer that feeds it. */
export interface EventSource {
  /** Offset in the text just past the tag whose event is being handled. */
  readonly position: number;
  /** Text events are wanted (inside a <value>, with `readText`) or no longer wanted. */
  wantText(wanted: boolean): void;
}

/** An element as opened: its name and its attributes (values as the XML rules normalise them). */
export interface OpenTag {
  readonly name: string;
  readonly attributes: Record<string, string>;
}

/** The <resource> being read, and its <value> text so far. */
interface ResourceInProgress {
  name: string | undefined;
  text: string;
  valueCount: number;
  hasMarkup: boolean;
}

export interface ReaderState {
  readonly text: string;
  /** Name of the document in messages. */
  readonly source: string;
  readonly nodeId: number;
  readonly nodeIdText: string;
  readonly events: EventSource;
  where: Position;
  depth: number;
  /** Depth of the element being skipped with its subtree, 0 when none. */
  skipDepth: number;
  /** The element closed last: on an unexpected close tag saxes closes the open one first, so it names that. */
  lastClosed: string;
  readonly slice: SliceInProgress;
  delegate: RawDelegate | null;
  readonly resource: ResourceInProgress;
  readonly gathered: Gathered;
}

export function newReaderState(text: string, source: string, nodeId: number, events: EventSource): ReaderState {
  const resource: ResourceInProgress = { name: undefined, text: '', valueCount: 0, hasMarkup: false };
  return {
    text, source, nodeId, nodeIdText: String(nodeId), events,
    where: BEFORE_ROOT, depth: 0, skipDepth: 0, lastClosed: '',
    slice: newSliceInProgress(), delegate: null, resource,
    gathered: newGathered(),
  };
}

/** Text inside a <value> (the only text the reader asks for). */
export function readText(r: ReaderState, chunk: string): void {
  r.resource.text += chunk;
}

/** Throws the DocumentError for offset `index` of the document. */
export function fail(r: ReaderState, index: number, why: string): never {
  throw documentErrorAt(r.source, r.text, index, why);
}

/** Where the element just opened starts: the handlers run once its ">" has been read. */
const tagStart = (r: ReaderState): number => r.text.lastIndexOf('<', r.events.position - 1);

export function openElement(r: ReaderState, tag: OpenTag): void {
  r.depth++;
  if (r.skipDepth !== 0) return;
  const name = tag.name;
  const a = tag.attributes;
  let entered = false;
  switch (r.where) {
    case IN_SLICE:
      entered = openInSlice(r, name, a);
      break;
    case IN_RESOURCE:
      if (name === 'value') {
        r.resource.valueCount++;
        r.where = IN_VALUE;
        r.events.wantText(true);
        entered = true;
      }
      break;
    case IN_VALUE:
      r.resource.hasMarkup = true;
      break;
    case IN_ROOT:
      entered = openInRoot(r, name, a);
      break;
    case IN_DELEGATE:
      openInDelegate(r.delegate!, name, a);
      break;
    case BEFORE_ROOT:
      if (name !== 'slices') fail(r, tagStart(r), `the root element is <${name}>, expected <slices>`);
      if (a.timestamp !== undefined) documentTimestamp(r, a.timestamp);
      r.where = IN_ROOT;
      entered = true;
      break;
  }
  if (!entered) r.skipDepth = r.depth;
}

function documentTimestamp(r: ReaderState, value: string | undefined): void {
  const refused = takeDocumentTimestamp(r.gathered, value);
  if (refused !== null) fail(r, tagStart(r), refused);
}

/** An element directly inside <slices>; true when its content is read. */
function openInRoot(r: ReaderState, name: string, a: Record<string, string>): boolean {
  if (name === 'slice') {
    restartSlice(r.slice, a, r.events.position);
    r.where = IN_SLICE;
    return true;
  }
  if (name === 'delegate') {
    const start = r.events.position;
    const text = r.text;
    r.delegate = { name: a.name, expiry: a.expiry, timestamp: undefined, timestampCount: 0, keys: [], line: () => locate(text, start).line };
    r.where = IN_DELEGATE;
    return true;
  }
  if (name === 'timestamp') documentTimestamp(r, a.value);
  else if (name === 'bwcap') {
    const refused = takeBwcap(r.gathered, a.value);
    if (refused !== null) fail(r, tagStart(r), refused);
  }
  return false;
}

/** An element directly inside a <slice>; true when its content is read (only a <resource>'s is). */
function openInSlice(r: ReaderState, name: string, a: Record<string, string>): boolean {
  const slice = r.slice;
  const raw = slice.raw;
  if (name === 'node') {
    if (!slice.onNode) {
      const id = a.id;
      if (id === r.nodeIdText || (id !== undefined && parseCount(id) === r.nodeId)) slice.onNode = true;
      else if (id === undefined || Number.isNaN(parseCount(id))) slice.nodeUnreadable ??= describeCount('<node> id', id);
    }
  } else if (name === 'key') {
    raw.keyPersons.push(a.person_id);
    raw.keyValues.push(a.value);
  } else if (name === 'resource') {
    const resource = r.resource;
    resource.name = a.name;
    resource.text = '';
    resource.valueCount = 0;
    resource.hasMarkup = false;
    r.where = IN_RESOURCE;
    return true;
  } else if (name === 'user') {
    raw.users.push(a.person_id);
  } else if (name === 'timestamp') {
    raw.timestamp = a.value;
    raw.timestampCount++;
  } else if (name === 'controller') {
    raw.controllers.push(a.name);
  }
  return false;
}

function openInDelegate(delegate: RawDelegate, name: string, a: Record<string, string>): void {
  if (name === 'key') delegate.keys.push(a.value);
  else if (name === 'timestamp') {
    delegate.timestamp = a.value;
    delegate.timestampCount++;
  }
}

export function closeElement(r: ReaderState, name: string): void {
  r.lastClosed = name;
  if (r.skipDepth !== 0) {
    if (r.depth === r.skipDepth) r.skipDepth = 0;
    r.depth--;
    return;
  }
  r.depth--;
  switch (r.where) {
    case IN_VALUE:
      r.events.wantText(false);
      r.where = IN_RESOURCE;
      return;
    case IN_RESOURCE:
      closeResource(r);
      r.where = IN_SLICE;
      return;
    case IN_SLICE:
      takeSlice(r.gathered, r.slice, r.text);
      r.where = IN_ROOT;
      return;
    case IN_DELEGATE:
      r.gathered.rawDelegates.push(r.delegate!);
      r.delegate = null;
      r.where = IN_ROOT;
      return;
    case IN_ROOT:
      r.where = AFTER_ROOT;
      return;
  }
}

function closeResource(r: ReaderState): void {
  const { raw } = r.slice;
  const { name, text, valueCount, hasMarkup } = r.resource;
  raw.resourceNames.push(name);
  raw.resourceTexts.push(text);
  raw.resourceIssues.push(
    valueCount === 0 ? 'has no <value>'
      : valueCount > 1 ? `has ${valueCount} <value> elements, expected one`
        : hasMarkup ? 'has markup inside <value>' : null,
  );
}

/** CDATA counts as text inside a <value> and nowhere else. */
export function readCdata(r: ReaderState, data: string): void {
  if (r.where === IN_VALUE && r.skipDepth === 0) r.resource.text += data;
}
