// From the raw text of one <slice> or <delegate> element (as the parser collected it) to a
// validated spec, or to the reasons it is skipped. Only this node's entries come here.
import { invalidAccountName } from '../host/account-names.js';
import { canonicalResource, TEXT_ATTRIBUTES, toCanonicalAmount, type Rspec } from '../rspec/resources.js';
import {
  INSTANCE_SIZES, INSTANTIATIONS, RUNTIME_KINDS, type GuestAttributes, type InstanceSize, type RuntimeKind,
  type DelegateSpec, type Instantiation, type SkippedEntry, type SliverSpec } from './types.js';
import { quoted as quote } from '../util/text.js';
import { describeCount, invalidImageRef, invalidPublicKey, parseCount } from './values.js';

/** What the parser gathered inside one <slice>, attribute values as written (undefined: absent). */
export interface RawSlice {
  id: string | undefined;
  name: string | undefined;
  expiry: string | undefined;
  /** The slice's instantiation attribute, when it has one. */
  instantiation: string | undefined;
  /** The value of the last <timestamp>, and how many there were. */
  timestamp: string | undefined;
  timestampCount: number;
  users: (string | undefined)[];
  keyPersons: (string | undefined)[];
  keyValues: (string | undefined)[];
  resourceNames: (string | undefined)[];
  resourceTexts: string[];
  /** Per resource: why its <value> cannot be read (none, several, markup inside), or null. */
  resourceIssues: (string | null)[];
  controllers: (string | undefined)[];
}

export interface RawDelegate {
  name: string | undefined;
  expiry: string | undefined;
  timestamp: string | undefined;
  timestampCount: number;
  keys: (string | undefined)[];
  /** 1-based line of the element, to name a delegate that has no usable name. */
  line: () => number;
}

/** A sliver whose timestamp may still be missing; the document's own is filled in at the end. */
export type PendingSliver = Omit<SliverSpec, 'timestamp'> & { timestamp: number | null };


export function describeSlice(raw: RawSlice, line: () => number): string {
  const id = raw.id === undefined ? undefined : /^\d{1,24}$/.test(raw.id) ? raw.id : quote(raw.id, 24);
  if (raw.name !== undefined && id !== undefined) return `slice ${quote(raw.name)} (id ${id})`;
  if (raw.name !== undefined) return `slice ${quote(raw.name)}`;
  if (id !== undefined) return `slice (id ${id})`;
  return `slice at line ${line()}`;
}

function checkName(name: string | undefined, problems: string[]): void {
  if (name === undefined) problems.push('name is missing');
  else {
    const bad = invalidAccountName(name);
    if (bad !== null) problems.push(bad);
  }
}

/**
 * The record to hold on to when an entry is skipped: by its name if it is one an account could
 * have, and (a slice) by its id if that can be read; nothing when neither says which it is.
 */
export function held(type: 'sliver' | 'delegate', name: string | undefined, id?: string): Pick<SkippedEntry, 'held'> {
  const usableName = name !== undefined && invalidAccountName(name) === null ? name : null;
  const sliceId = id === undefined ? Number.NaN : parseCount(id);
  if (usableName === null && Number.isNaN(sliceId)) return {};
  return { held: { type, name: usableName, sliceId: Number.isNaN(sliceId) ? null : sliceId } };
}

function checkTimes(raw: { expiry: string | undefined; timestamp: string | undefined; timestampCount: number }, problems: string[]): { timestamp: number | null; expiry: number | null } {
  let timestamp: number | null = null;
  if (raw.timestampCount > 1) problems.push(`has ${raw.timestampCount} <timestamp> elements, expected one`);
  else if (raw.timestampCount === 1) {
    timestamp = parseCount(raw.timestamp ?? '');
    if (Number.isNaN(timestamp)) problems.push(describeCount('timestamp', raw.timestamp));
  }
  let expiry: number | null = null;
  if (raw.expiry !== undefined) {
    expiry = parseCount(raw.expiry);
    if (Number.isNaN(expiry)) problems.push(describeCount('expiry', raw.expiry));
  }
  return { timestamp, expiry };
}

/** Keys that pass, deduplicated in document order; the others are reported as skipped. */
function acceptKeys(values: readonly (string | undefined)[], what: (i: number) => string, skipped: SkippedEntry[]): string[] {
  const keys: string[] = [];
  const seen = new Set<string>();
  values.forEach((value, i) => {
    const line = (value ?? '').trim();
    const bad = value === undefined ? 'key has no value attribute' : invalidPublicKey(line);
    if (bad !== null) skipped.push({ what: what(i), reason: bad });
    else if (!seen.has(line)) {
      seen.add(line);
      keys.push(line);
    }
  });
  return keys;
}

/** What a slice's resources say, in canonical names; what cannot be read goes to `problems`. */
interface SliceResources {
  readonly rspec: Rspec;
  /** Resources the program does not know, by name, their text as written. */
  readonly unknown: Map<string, string>;
  readonly initscript: string | null;
  readonly vref: string | null;
  readonly guest: GuestAttributes;
}

function readResources(raw: RawSlice, problems: string[]): SliceResources {
  const rspec: Rspec = {};
  const unknown = new Map<string, string>();
  let initscript: string | null = null;
  let vref: string | null = null;
  const guest: { -readonly [K in keyof GuestAttributes]: GuestAttributes[K] } = { runtime: null, kernel: null, initrd: null, size: null };
  raw.resourceNames.forEach((name, i) => {
    const text = raw.resourceTexts[i] ?? '';
    if (name === undefined) {
      problems.push('a <resource> has no name');
      return;
    }
    if (!TEXT_ATTRIBUTES.has(name) && canonicalResource(name) === undefined) {
      unknown.set(name, text);
      return;
    }
    const issue = raw.resourceIssues[i];
    if (issue) {
      problems.push(`resource ${quote(name)} ${issue}`);
      return;
    }
    if (TEXT_ATTRIBUTES.has(name)) {
      const value = text.trim();
      const bad = (reason: string | null) => reason !== null && problems.push(reason);
      switch (name) {
        case 'initscript':
          initscript = text;
          break;
        case 'vref':
          vref = value;
          bad(invalidImageRef('vref', value));
          break;
        case 'kernel':
        case 'initrd':
          guest[name] = value;
          bad(invalidImageRef(name, value));
          break;
        case 'runtime':
          if ((RUNTIME_KINDS as readonly string[]).includes(value)) guest.runtime = value as RuntimeKind;
          else problems.push(`runtime ${quote(value)} is not one of ${RUNTIME_KINDS.join(', ')}`);
          break;
        case 'instance_size':
          if ((INSTANCE_SIZES as readonly string[]).includes(value)) guest.size = value as InstanceSize;
          else problems.push(`instance_size ${quote(value)} is not one of ${INSTANCE_SIZES.join(', ')}`);
          break;
      }
      return;
    }
    const amount = parseCount(text);
    if (Number.isNaN(amount)) {
      problems.push(`resource ${quote(name)} value ${quote(text.trim())} is not a decimal integer >= 0`);
      return;
    }
    const canonical = toCanonicalAmount(name, amount);
    // Both eras may name the same resource; as in the original, the later one wins.
    if (canonical.ok) rspec[canonical.name] = canonical.amount;
    else problems.push(canonical.reason);
  });
  return { rspec, unknown, initscript, vref, guest };
}

/** Returns the sliver, or null after recording in `skipped` why the slice does not apply. */
export function buildSliver(raw: RawSlice, what: string, skipped: SkippedEntry[]): PendingSliver | null {
  const problems: string[] = [];
  checkName(raw.name, problems);
  const sliceId = parseCount(raw.id ?? '');
  if (Number.isNaN(sliceId)) problems.push(describeCount('id', raw.id));
  const { timestamp, expiry } = checkTimes(raw, problems);
  const instantiation = (raw.instantiation ?? 'plc-instantiated') as Instantiation;
  if (!INSTANTIATIONS.includes(instantiation)) {
    problems.push(`instantiation ${quote(raw.instantiation ?? '')} is not one of ${INSTANTIATIONS.join(', ')}`);
  }

  const { rspec, unknown, initscript, vref, guest } = readResources(raw, problems);

  if (problems.length > 0) {
    skipped.push({ what, reason: problems.join('; '), ...held('sliver', raw.name, raw.id) });
    return null;
  }
  const name = raw.name!;

  // A key counts only while its person is one of the slice's users: a user removed from the
  // slice loses access with the next document even if the authority still lists the key.
  // A user or key whose person cannot be read is said, not dropped in silence: its person loses
  // access with this document, and the operator must be able to tell why.
  const users = new Set<number>();
  for (const person of raw.users) {
    const id = parseCount(person ?? '');
    if (!Number.isNaN(id)) users.add(id);
    else skipped.push({ what: `user of slice ${quote(name)}`, reason: describeCount('person_id', person) });
  }
  const keyValues: (string | undefined)[] = [];
  const keyPersons: number[] = [];
  raw.keyPersons.forEach((person, i) => {
    const id = parseCount(person ?? '');
    if (Number.isNaN(id)) skipped.push({ what: `key ${i + 1} of slice ${quote(name)}`, reason: describeCount('person_id', person) });
    if (Number.isNaN(id) || !users.has(id)) return;
    keyPersons.push(id);
    keyValues.push(raw.keyValues[i]);
  });
  const keys = acceptKeys(keyValues, (i) => `key of person ${keyPersons[i]} in slice ${quote(name)}`, skipped);

  const controllers: string[] = [];
  for (const controller of raw.controllers) {
    const bad = controller === undefined ? '<controller> has no name' : invalidAccountName(controller);
    if (bad !== null) skipped.push({ what: `controller ${quote(controller ?? '')} of slice ${quote(name)}`, reason: bad });
    else if (!controllers.includes(controller!)) controllers.push(controller!);
  }

  return {
    name,
    sliceId,
    timestamp,
    expiry,
    rspec,
    initscript,
    vref,
    guest,
    keys,
    controllers,
    instantiation,
    // fromEntries defines own properties, so a resource called "__proto__" stays plain data.
    unknownResources: Object.fromEntries(unknown),
  };
}

export function describeDelegate(raw: RawDelegate): string {
  return raw.name !== undefined ? `delegate ${quote(raw.name)}` : `delegate at line ${raw.line()}`;
}

/**
 * Returns the delegate with `defaultTimestamp` standing in for a missing <timestamp>, or null
 * after recording why it is skipped. `taken` says why a name is not available (e.g. a sliver).
 */
export function buildDelegate(raw: RawDelegate, defaultTimestamp: number, taken: (name: string) => string | null, skipped: SkippedEntry[]): DelegateSpec | null {
  const what = describeDelegate(raw);
  const problems: string[] = [];
  checkName(raw.name, problems);
  if (raw.name !== undefined && problems.length === 0) {
    const clash = taken(raw.name);
    if (clash !== null) problems.push(clash);
  }
  const { timestamp, expiry } = checkTimes(raw, problems);
  if (problems.length > 0) {
    skipped.push({ what, reason: problems.join('; '), ...held('delegate', raw.name) });
    return null;
  }
  const keys = acceptKeys(raw.keys, () => `key of ${what}`, skipped);
  return { name: raw.name!, timestamp: timestamp ?? defaultTimestamp, expiry, keys };
}
