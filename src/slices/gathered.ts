// What the reader (reader.ts) keeps of an authority document as it goes: the document-wide values,
// this node's slices as they end, the raw delegates; and, once the document has been read, the
// SlicesDocument made of them. No XML here: the reader hands over attribute text (and the
// document's text, to name an entry by its line).
import { buildDelegate, buildSliver, describeSlice, held, type PendingSliver, type RawDelegate, type RawSlice } from './build.js';
import { locate } from './errors.js';
import type { DelegateSpec, SkippedEntry, SliverSpec, SlicesDocument } from './types.js';
import { describeCount, parseCount } from './values.js';

export interface Gathered {
  documentTimestamp: number | null;
  /** The newest readable slice timestamp (any node's), -1 for none: the version of a document without its own. */
  newestSliceTimestamp: number;
  bwcapKbit: number | null;
  slicesSeen: number;
  readonly skipped: SkippedEntry[];
  readonly pending: PendingSliver[];
  /** This node's slice names -> how the first of that name was described. */
  readonly sliceNames: Map<string, string>;
  readonly rawDelegates: RawDelegate[];
}

/** One <slice> as far as it has been read. Its `raw` is reused for every slice of the document. */
export interface SliceInProgress {
  readonly raw: RawSlice;
  onNode: boolean;
  /** A <node> of the slice whose id cannot be read (the reason): the slice may be this node's. */
  nodeUnreadable: string | null;
  /** Where the slice starts in the text, to name a slice that has neither name nor id by its line. */
  start: number;
}

export function newGathered(): Gathered {
  return {
    documentTimestamp: null, newestSliceTimestamp: -1, bwcapKbit: null, slicesSeen: 0,
    skipped: [], pending: [], sliceNames: new Map(), rawDelegates: [],
  };
}

export function newSliceInProgress(): SliceInProgress {
  const raw: RawSlice = {
    id: undefined, name: undefined, expiry: undefined, instantiation: undefined, timestamp: undefined, timestampCount: 0,
    users: [], keyPersons: [], keyValues: [], resourceNames: [], resourceTexts: [], resourceIssues: [], controllers: [],
  };
  return { raw, onNode: false, nodeUnreadable: null, start: 0 };
}

/** Starts `slice` over for a <slice> with attributes `a` at `start`, keeping its arrays. */
export function restartSlice(slice: SliceInProgress, a: Record<string, string>, start: number): void {
  const raw = slice.raw;
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
  slice.onNode = false;
  slice.nodeUnreadable = null;
  slice.start = start;
}

/** Takes the document's own timestamp; the reason when it cannot be, else null. */
export function takeDocumentTimestamp(g: Gathered, value: string | undefined): string | null {
  const t = parseCount(value ?? '');
  if (Number.isNaN(t)) return describeCount('document timestamp', value);
  if (g.documentTimestamp !== null && g.documentTimestamp !== t) return `document timestamp ${t} differs from ${g.documentTimestamp} given before`;
  g.documentTimestamp = t;
  return null;
}

/** Takes the node-wide bandwidth cap; the reason when it cannot be, else null. */
export function takeBwcap(g: Gathered, value: string | undefined): string | null {
  const cap = parseCount(value ?? '');
  if (Number.isNaN(cap)) return describeCount('bwcap value', value);
  if (g.bwcapKbit !== null && g.bwcapKbit !== cap) return `bwcap ${cap} differs from ${g.bwcapKbit} given before`;
  g.bwcapKbit = cap;
  return null;
}

/** A slice has ended: it counts, and becomes a sliver (or a skipped entry) when it is this node's. */
export function takeSlice(g: Gathered, slice: SliceInProgress, text: string): void {
  const raw = slice.raw;
  g.slicesSeen++;
  if (raw.timestampCount === 1) {
    const t = parseCount(raw.timestamp ?? '');
    if (t > g.newestSliceTimestamp) g.newestSliceTimestamp = t;
  }
  // The line is counted only when a message names the slice by it, and the function that counts
  // it is made only then: this runs for every slice of the document.
  if (!slice.onNode) {
    // Whether the slice is this node's cannot be told: the sliver it names, if the node holds
    // one, is kept as it is (never destroyed on an unreadable id), and not changed either.
    const keep = slice.nodeUnreadable === null ? {} : held('sliver', raw.name, raw.id);
    if (keep.held) {
      const what = describeSlice(raw, () => locate(text, slice.start).line);
      g.skipped.push({ what, reason: `${slice.nodeUnreadable}, so the slice may be this node's; a sliver of it is kept as it is`, ...keep });
    }
    return;
  }
  const what = describeSlice(raw, () => locate(text, slice.start).line);
  if (raw.name !== undefined) {
    const first = g.sliceNames.get(raw.name);
    if (first !== undefined) {
      g.skipped.push({ what, reason: `name appears again for this node (first as ${first}); only the first applies` });
      return;
    }
    g.sliceNames.set(raw.name, what);
  }
  const sliver = buildSliver(raw, what, g.skipped);
  if (sliver) g.pending.push(sliver);
}

/** The document once read: the version stamped on slivers and delegates that have none, delegates checked against slices. */
export function finishDocument(g: Gathered, nodeId: number): SlicesDocument {
  const timestamp = g.documentTimestamp ?? (g.newestSliceTimestamp >= 0 ? g.newestSliceTimestamp : 0);
  const slivers: SliverSpec[] = g.pending.map((s) => ({ ...s, timestamp: s.timestamp ?? timestamp }));
  const delegates: DelegateSpec[] = [];
  const delegateNames = new Set<string>();
  for (const rd of g.rawDelegates) {
    const spec = buildDelegate(rd, timestamp, (name) => {
      if (g.sliceNames.has(name)) return `name is also a slice on this node (${g.sliceNames.get(name)})`;
      if (delegateNames.has(name)) return 'name appears again among the delegates; only the first applies';
      return null;
    }, g.skipped);
    if (spec) {
      delegates.push(spec);
      delegateNames.add(spec.name);
    }
  }
  const { bwcapKbit, skipped, slicesSeen } = g;
  return { timestamp, nodeId, slivers, delegates, bwcapKbit, skipped, slicesSeen };
}
