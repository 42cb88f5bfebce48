// API fuzz as root: mutated XML-RPC bodies reach the methods that change the node (SetLoans,
// Create, Destroy, Ticket, AdminTicket, DeliverSlices). The unit fuzz calls as "nobody", whom
// authorization stops before any of them; here the caller is root, so a mutation that survives the
// decoder and the type checks runs the method for real, on a real daemon that makes real accounts.
// Some base bodies are valid signed tickets and pushes, so that the mutations damage something
// that would otherwise be accepted. Requests go eight at a time, so changes overlap as on a busy
// node. Afterwards the database must validate, the node must converge on what its records ask
// for, and no change the node acknowledged may have been lost: every read during the fuzz
// (GetLoans, GetRecord, DumpDatabase) and the database at the end are checked against the
// acknowledged writes, in any order their overlaps allow. The seed is printed; NODEMGR_FUZZ_SEED
// replays the same bodies (their interleaving on the node varies from run to run).
import test from 'ava';
import { randomInt } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { SaxesParser } from 'saxes';
import { decodeCall } from '../../src/api/codec.js';
import { FaultCode } from '../../src/api/faults.js';
import { sliverRecords } from '../../src/db/records.js';
import { readDatabaseSnapshot, validateDatabase } from '../../src/db/store.js';
import type { NodeDatabase } from '../../src/db/types.js';
import { desiredState } from '../../src/reconcile/desired.js';
import { effectiveRspecs, type Loan } from '../../src/rspec/loans.js';
import { canonicalResource } from '../../src/rspec/resources.js';
import { makeAuthority, signDetached, signTicket, type Authority, type SignTicketOptions } from '../support/authority-keys.js';
import {
  accountPrefix, isRoot, passwdEntries, removeAccounts, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess,
  waitFor, type DaemonProcess, type DocumentServer, type PasswdEntry, type Sandbox,
} from '../system/support/host.js';
import { publicKeys, slicesXml, type TestDelegate, type TestSlice } from '../system/support/slices.js';
import { scaled } from './support/scale.js';
import { seededRandom } from '../support/random.js';

const BODIES = scaled(1_000, 20_000);
/** Requests in flight at once: enough that changes overlap, as they do on a busy node. */
const PARALLEL = 8;
/** Small, so that a "huge value" mutation can cross it without megabytes of traffic per body. */
const MAX_REQUEST_BYTES = 1024 * 1024;
const SEED = Number(process.env['NODEMGR_FUZZ_SEED'] ?? randomInt(2 ** 31));

const prefix = accountPrefix();
const name = (suffix: string) => `${prefix}_${suffix}`;
const ALPHA = name('alpha');
const BETA = name('beta');
const GAMMA = name('gamma');
const DLG1 = name('dlg1');
const DLG2 = name('dlg2');
const CTL = name('ctl');
const TKTA = name('tkta');
const TKTB = name('tktb');
/** The slivers the document lists that are not delegated: nothing in this test may destroy them. */
const LISTED = [ALPHA, BETA, GAMMA];

const serial = isRoot ? test.serial : test.skip;
if (!isRoot) test.skip('API fuzz as root: needs root (a real daemon making real accounts)', () => undefined);

// ---- a seeded generator, so that a failing run can be replayed with NODEMGR_FUZZ_SEED

const generator = seededRandom;
const random = generator(SEED);
const below = (n: number) => Math.floor(random() * n);
const pick = <T>(items: readonly T[]): T => items[below(items.length)]!;

// ---- XML-RPC values as a tree the mutations edit, then spell out

type Value =
  | { kind: 'int'; text: string; tag?: 'int' | 'i4' | 'i8' }
  | { kind: 'string'; text: string; spelling?: 'typed' | 'bare' | 'cdata' }
  | { kind: 'boolean'; text: string }
  | { kind: 'double'; text: string }
  | { kind: 'nil' }
  | { kind: 'base64'; text: string }
  | { kind: 'array'; items: Value[] }
  | { kind: 'struct'; members: Array<[string, Value]> };

interface Call {
  method: string;
  params: Value[];
}

function value(x: unknown): Value {
  if (typeof x === 'number') return { kind: 'int', text: String(x) };
  if (typeof x === 'string') return { kind: 'string', text: x };
  if (typeof x === 'boolean') return { kind: 'boolean', text: x ? '1' : '0' };
  if (Array.isArray(x)) return { kind: 'array', items: x.map(value) };
  if (x !== null && typeof x === 'object') return { kind: 'struct', members: Object.entries(x).map(([k, v]) => [k, value(v)]) };
  return { kind: 'nil' };
}

const call = (method: string, ...params: unknown[]): Call => ({ method, params: params.map(value) });

/** Only what XML needs escaped; characters XML cannot carry at all (NUL) go through raw, on purpose. */
const escapeXml = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\r/g, '&#13;');

function spell(v: Value, out: string[]): void {
  switch (v.kind) {
    case 'int': {
      const tag = v.tag ?? 'int';
      out.push(`<value><${tag}>${escapeXml(v.text)}</${tag}></value>`);
      return;
    }
    case 'string':
      if (v.spelling === 'bare') out.push(`<value>${escapeXml(v.text)}</value>`);
      else if (v.spelling === 'cdata' && !v.text.includes(']]>') && !v.text.includes('\r')) out.push(`<value><string><![CDATA[${v.text}]]></string></value>`);
      else out.push(`<value><string>${escapeXml(v.text)}</string></value>`);
      return;
    case 'boolean':
    case 'double':
    case 'base64':
      out.push(`<value><${v.kind}>${escapeXml(v.text)}</${v.kind}></value>`);
      return;
    case 'nil':
      out.push('<value><nil/></value>');
      return;
    case 'array':
      out.push('<value><array><data>');
      for (const item of v.items) spell(item, out);
      out.push('</data></array></value>');
      return;
    case 'struct':
      out.push('<value><struct>');
      for (const [key, member] of v.members) {
        out.push(`<member><name>${escapeXml(key)}</name>`);
        spell(member, out);
        out.push('</member>');
      }
      out.push('</struct></value>');
  }
}

function encode(c: Call): string {
  const out = [`<?xml version="1.0"?>\n<methodCall><methodName>${escapeXml(c.method)}</methodName><params>`];
  for (const p of c.params) {
    out.push('<param>');
    spell(p, out);
    out.push('</param>');
  }
  out.push('</params></methodCall>');
  return out.join('');
}

// ---- the mutations

const NAMES = [
  ALPHA, BETA, GAMMA, DLG1, DLG2, CTL, TKTA, TKTB, 'root', 'nobody', '', prefix, `${ALPHA} `, ALPHA.toUpperCase(), `${DLG1}\n`,
  `${DLG1}\u200b`, '__proto__', 'constructor', 'toString', 'x'.repeat(300), '../../etc/passwd', 'cpu_share', 'nm_cpu_share',
  'cpu_pct', 'nm_cpu_guaranteed_share', 'net_max_rate', 'net_min_rate', 'disk_max', 'enabled', 'no_such_resource',
];
const INTS = [
  '0', '1', '-1', '2', '3', '7', '19', '20', '1992', '2147483647', '2147483648', '-2147483649', '9007199254740991',
  '9007199254740993', '99999999999999999999', '+3', ' 4 ', '0x10', '1e3', '00000000000000000003', '', '3.5',
];
/** Inserted into strings: controls, non-characters, lone surrogates, bidi and combining marks, markup. */
const ODD_TEXT = [
  '\u0000', '\u0001', '\u0008', '\u000b', '\ufffe', '\uffff', '\ud800', '\udfff', '\u202e', '\u200b', '\u0301', 'é', '😀',
  '\u{10ffff}', '\u0085', '\u2028', '\r', '\r\n', '&', '<', '>', ']]>', '&amp;', '%00', '"', "'",
];
/** Inserted into the encoded body: markup fragments and bytes that are not UTF-8. */
const ODD_BYTES: Buffer[] = [
  ...['<', '>', '</value>', '<value>', '<struct>', '<array><data>', '&#0;', '&undefined;', ']]>', '<![CDATA[', '<!DOCTYPE x>',
    '<int>', '<nil/>', '<param><value>x</value></param>', '<?xml version="1.0" encoding="ISO-8859-1"?>'].map((s) => Buffer.from(s)),
  Buffer.from([0xff]), Buffer.from([0xc3]), Buffer.from([0xc0, 0xaf]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0x00]),
  Buffer.from([0xef, 0xbb, 0xbf]),
];
// Not Stop or ReCreate: those change the document's own slivers on purpose, which the checks
// afterwards take for damage.
const METHODS = ['SetLoans', 'Create', 'CreateSliver', 'Destroy', 'DeleteSliver', 'Ticket', 'AdminTicket', 'DeliverSlices', 'GetRecord',
  'GetLoans', 'Start', 'setloans', 'Create ', 'NoSuchMethod', 'system.methodHelp'];

interface Slot {
  readonly value: Value;
  replace(next: Value): void;
}

/** Every value of the call, each with a way to replace it in place. */
function slots(params: Value[]): Slot[] {
  const out: Slot[] = [];
  const visit = (get: () => Value, set: (v: Value) => void) => {
    const v = get();
    out.push({ value: v, replace: set });
    if (v.kind === 'array') v.items.forEach((_, i) => visit(() => v.items[i]!, (n) => (v.items[i] = n)));
    if (v.kind === 'struct') v.members.forEach(([key], i) => visit(() => v.members[i]![1], (n) => (v.members[i] = [key, n])));
  };
  params.forEach((_, i) => visit(() => params[i]!, (n) => (params[i] = n)));
  return out;
}

/** The same slot as another XML-RPC type: int <-> string <-> array <-> struct, and the rarer ones. */
function swapType(v: Value): Value {
  const scalarText = v.kind === 'int' || v.kind === 'string' || v.kind === 'double' || v.kind === 'boolean' ? v.text : pick(NAMES);
  switch (pick(['int', 'string', 'array', 'struct', 'boolean', 'double', 'nil', 'base64'] as const)) {
    case 'int':
      return { kind: 'int', text: /^-?\d+$/.test(scalarText) ? scalarText : pick(INTS) };
    case 'string':
      return { kind: 'string', text: scalarText };
    case 'array':
      return { kind: 'array', items: v.kind === 'struct' ? v.members.map(([, m]) => m) : [v] };
    case 'struct':
      return { kind: 'struct', members: v.kind === 'array' ? v.items.map((item, i) => [String(i), item]) : [[pick(['recipient', 'name', '__proto__', 'ticket']), v]] };
    case 'boolean':
      return { kind: 'boolean', text: pick(['0', '1', '2', 'true']) };
    case 'double':
      return { kind: 'double', text: pick(['3.0', '1e308', '1e309', '-0', 'NaN', '0.5']) };
    case 'nil':
      return { kind: 'nil' };
    case 'base64':
      return { kind: 'base64', text: Buffer.from(scalarText).toString('base64') };
  }
}

/** Edits inside a string: what damages a signed ticket, a pushed document or a signature. */
function editText(text: string): string {
  const at = below(text.length + 1);
  switch (below(6)) {
    case 0: return text.slice(0, at) + text.slice(at + 1 + below(16));
    case 1: return text.slice(0, at) + pick(ODD_TEXT) + text.slice(at);
    case 2: return text.slice(0, at);
    case 3: return text.slice(0, at) + String.fromCharCode(0x20 + below(0x3000)) + text.slice(at + 1);
    case 4: return text.replace(/\d/, (d) => String((Number(d) + 1) % 10)); // a value inside the signed content
    default: return text + text.slice(at, at + below(64));
  }
}

function hugeText(): string {
  // Now and then past the request limit, to see the limit answered as a fault too.
  const size = pick([1_000, 60_000, 400_000, MAX_REQUEST_BYTES + 1]);
  return pick(['a', '\u00e9', '<', '&']).repeat(size);
}

function mutateCall(c: Call): void {
  const all = slots(c.params);
  const target = all.length > 0 ? pick(all) : null;
  switch (below(12)) {
    case 0:
      if (target) target.replace(swapType(target.value));
      return;
    case 1: // huge values
      if (target?.value.kind === 'int') target.replace({ ...target.value, text: pick(INTS.slice(9)) });
      else if (target?.value.kind === 'string') target.replace({ kind: 'string', text: hugeText() });
      else if (target?.value.kind === 'array') {
        const item = pick(target.value.items.length > 0 ? target.value.items : [value(ALPHA)]);
        // Many copies of one item, as many as fit in a few times the limit (the item may be huge already).
        const copies = Math.min(pick([100, 5_000]), Math.floor((3 * MAX_REQUEST_BYTES) / sizeOf([item])));
        target.replace({ kind: 'array', items: Array.from({ length: copies }, () => structuredClone(item)) });
      }
      return;
    case 2: // duplicated parameters
      if (c.params.length > 0) {
        const i = below(c.params.length);
        c.params.splice(i, 0, structuredClone(c.params[i]!));
      }
      return;
    case 3: // wrong counts
      if (random() < 0.4) c.params.splice(below(c.params.length + 1), 1);
      else if (random() < 0.5) c.params.length = 0;
      else c.params.push(...Array.from({ length: 1 + below(40) }, () => value(pick(NAMES))));
      return;
    case 4: // unicode and NUL inside a string
      if (target?.value.kind === 'string') {
        const text = target.value.text;
        const at = below(text.length + 1);
        target.replace({ kind: 'string', text: text.slice(0, at) + pick(ODD_TEXT) + text.slice(at) });
      }
      return;
    case 5: // another name, another resource, another amount
      if (target?.value.kind === 'string') target.replace({ kind: 'string', text: pick(NAMES) });
      else if (target?.value.kind === 'int') target.replace({ kind: 'int', text: pick(INTS) });
      return;
    case 6:
      if (target?.value.kind === 'string') target.replace({ kind: 'string', text: editText(target.value.text) });
      return;
    case 7: // the same value spelled otherwise: must be answered as the original is
      if (target?.value.kind === 'string') target.replace({ ...target.value, spelling: pick(['typed', 'bare', 'cdata'] as const) });
      else if (target?.value.kind === 'int') target.replace({ ...target.value, tag: pick(['int', 'i4', 'i8'] as const) });
      return;
    case 8: // nested past the decoder's depth limit, or just deeper than expected
      if (target) {
        let nested = target.value;
        for (let i = 0, depth = pick([2, 31, 40]); i < depth; i++) nested = { kind: 'array', items: [nested] };
        target.replace(nested);
      }
      return;
    case 9: // a struct member twice
      if (target?.value.kind === 'struct' && target.value.members.length > 0) target.value.members.push(structuredClone(target.value.members[0]!));
      else if (target) target.replace({ kind: 'struct', members: [['a', target.value], ['a', target.value]] });
      return;
    case 10: // items of an array (a loan set) dropped, repeated or shuffled
      if (target?.value.kind === 'array' && target.value.items.length > 0) {
        const items = target.value.items;
        if (random() < 0.3) items.splice(below(items.length), 1);
        else if (random() < 0.5) items.push(structuredClone(items[below(items.length)]!));
        else items.reverse();
      }
      return;
    default: // the parameters of one method sent to another
      c.method = pick(METHODS);
  }
}

/** Byte-level damage to the encoded body: deletions, markup, truncation, bytes that are not UTF-8. */
function mutateBytes(body: Buffer): Buffer {
  let bytes = body;
  for (let edits = 1 + below(3); edits > 0; edits--) {
    const at = below(bytes.length + 1);
    const choice = random();
    if (choice < 0.3) bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + below(8))]);
    else if (choice < 0.65) bytes = Buffer.concat([bytes.subarray(0, at), pick(ODD_BYTES), bytes.subarray(at)]);
    else if (choice < 0.85) bytes = bytes.subarray(0, at);
    else bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([below(256)]), bytes.subarray(at + 1)]);
  }
  return bytes;
}

/** Roughly the characters a value takes on the wire. */
function sizeOf(values: readonly Value[]): number {
  let size = 0;
  for (const v of values) {
    size += 32;
    if (v.kind === 'array') size += sizeOf(v.items);
    else if (v.kind === 'struct') size += v.members.reduce((sum, [key, member]) => sum + key.length + sizeOf([member]), 0);
    else if (v.kind !== 'nil') size += v.text.length * 5; // escaped "&" and "<" grow fivefold
  }
  return size;
}

interface Body {
  readonly base: string;
  readonly bytes: Buffer;
}

interface Base {
  readonly label: string;
  readonly call: Call;
  /** How often it is drawn relative to the others (1 when not given). */
  readonly weight?: number;
}

function mutatedBody(bases: readonly Base[]): Body {
  const drawn = random() * bases.reduce((sum, b) => sum + (b.weight ?? 1), 0);
  let base = bases[0]!;
  for (let sum = 0, i = 0; i < bases.length; i++) {
    sum += bases[i]!.weight ?? 1;
    base = bases[i]!;
    if (drawn < sum) break;
  }
  const c = structuredClone(base.call);
  // Some go as they are: the valid ones must keep working in between the damaged ones, and the
  // changes they make are what the checks afterwards look for.
  if (random() < 0.15) return { base: base.label, bytes: Buffer.from(encode(c)) };
  for (let n = 1 + below(3); n > 0; n--) {
    const previous = structuredClone(c);
    mutateCall(c);
    // Past a few times the limit a body tests nothing more, and copies of copies grow without end.
    if (sizeOf(c.params) > 3 * MAX_REQUEST_BYTES) Object.assign(c, previous);
  }
  const bytes = Buffer.from(encode(c));
  return { base: base.label, bytes: random() < 0.3 ? mutateBytes(bytes) : bytes };
}

// ---- the answers

interface XmlNode {
  readonly name: string;
  readonly children: Array<XmlNode | string>;
}

/** A strict parse (saxes refuses anything not well-formed); throws on a malformed document. */
function parseXml(text: string): XmlNode {
  const parser = new SaxesParser();
  const open: XmlNode[] = [];
  let root: XmlNode | null = null;
  parser.on('opentag', (tag) => {
    const node: XmlNode = { name: tag.name, children: [] };
    if (open.length > 0) open[open.length - 1]!.children.push(node);
    else root = node;
    open.push(node);
  });
  parser.on('closetag', () => void open.pop());
  parser.on('text', (text) => void open[open.length - 1]?.children.push(text));
  parser.on('cdata', (text) => void open[open.length - 1]?.children.push(text));
  parser.on('error', (error) => {
    throw error;
  });
  parser.write(text).close();
  if (!root) throw new Error('no root element');
  return root;
}

const elementsOf = (node: XmlNode): XmlNode[] => {
  if (node.children.some((c) => typeof c === 'string' && /\S/.test(c))) throw new Error(`text inside <${node.name}>`);
  return node.children.filter((c): c is XmlNode => typeof c !== 'string');
};
const textOf = (node: XmlNode): string => node.children.map((c) => {
  if (typeof c !== 'string') throw new Error(`<${c.name}> inside <${node.name}>`);
  return c;
}).join('');

function readValue(node: XmlNode): unknown {
  if (node.name !== 'value') throw new Error(`<${node.name}> where a <value> belongs`);
  if (!node.children.some((c) => typeof c !== 'string')) return textOf(node);
  const [typed, ...more] = elementsOf(node);
  if (!typed || more.length > 0) throw new Error('a <value> with more than one type');
  switch (typed.name) {
    case 'int': case 'i4': case 'i8': {
      const text = textOf(typed).trim();
      if (!/^[+-]?\d+$/.test(text)) throw new Error(`<${typed.name}>${text}`);
      return Number(text);
    }
    case 'string': return textOf(typed);
    case 'boolean': return textOf(typed) === '1';
    case 'double': return Number(textOf(typed));
    case 'nil': return null;
    case 'base64': return Buffer.from(textOf(typed), 'base64');
    case 'dateTime.iso8601': return textOf(typed);
    case 'array': {
      const [data, ...rest] = elementsOf(typed);
      if (!data || data.name !== 'data' || rest.length > 0) throw new Error('an <array> without one <data>');
      return elementsOf(data).map(readValue);
    }
    case 'struct':
      return Object.fromEntries(elementsOf(typed).map((member) => {
        const [key, item, ...rest] = elementsOf(member);
        if (member.name !== 'member' || key?.name !== 'name' || !item || rest.length > 0) throw new Error('a malformed <member>');
        return [textOf(key), readValue(item)];
      }));
    default:
      throw new Error(`<${typed.name}> is not an XML-RPC type`);
  }
}

type Answer =
  | { kind: 'result'; value: unknown }
  | { kind: 'fault'; code: number; message: string }
  | { kind: 'broken'; problem: string };

const KNOWN_FAULTS = new Set<number>(Object.values(FaultCode));

/** What a response says, or why it is not a well-formed XML-RPC method response. */
function readAnswer(status: number, text: string, tooLarge: boolean): Answer {
  const expected = tooLarge ? 413 : 200;
  if (status !== expected) return { kind: 'broken', problem: `HTTP status ${status}, expected ${expected}` };
  let root: XmlNode;
  try {
    root = parseXml(text);
    if (root.name !== 'methodResponse') return { kind: 'broken', problem: `root element <${root.name}>` };
    const [part, ...rest] = elementsOf(root);
    if (!part || rest.length > 0) return { kind: 'broken', problem: 'a <methodResponse> without exactly one part' };
    if (part.name === 'params') {
      const [param, ...more] = elementsOf(part);
      const inner = param ? elementsOf(param) : [];
      if (!param || param.name !== 'param' || more.length > 0 || inner.length !== 1) return { kind: 'broken', problem: 'not one <param> with one <value>' };
      return { kind: 'result', value: readValue(inner[0]!) };
    }
    if (part.name !== 'fault') return { kind: 'broken', problem: `<${part.name}> in <methodResponse>` };
    const [faultValue, ...extra] = elementsOf(part);
    if (!faultValue || extra.length > 0) return { kind: 'broken', problem: 'a <fault> without one <value>' };
    const fault = readValue(faultValue) as Record<string, unknown>;
    const keys = Object.keys(fault ?? {}).sort();
    if (keys.join() !== 'faultCode,faultString' || !Number.isInteger(fault.faultCode) || typeof fault.faultString !== 'string') {
      return { kind: 'broken', problem: `a fault struct with ${keys.join(', ')}` };
    }
    const code = fault.faultCode as number;
    if (!KNOWN_FAULTS.has(code)) return { kind: 'broken', problem: `fault code ${code} is none of faults.ts` };
    if (tooLarge && code !== FaultCode.notWellFormed) return { kind: 'broken', problem: `an oversized body answered with fault ${code}` };
    return { kind: 'fault', code, message: fault.faultString as string };
  } catch (error) {
    return { kind: 'broken', problem: `not well-formed: ${(error as Error).message}` };
  }
}

// ---- the node

let box: Sandbox;
let server: DocumentServer;
let daemon: DaemonProcess;
let authority: Authority;
let socketPath = '';
let agent: Agent;
/** Uid and a file of its own in the home of every listed sliver, from before the fuzz. */
const before = new Map<string, { entry: PasswdEntry; marker: string }>();

const dbPath = () => join(box.stateDir, 'nodemgr.json');
const db = () => readDatabaseSnapshot(dbPath());

interface Posted {
  status: number;
  text: string;
  sent: number;
  answered: number;
}

/** POSTs one body to /RPC2 over the daemon's Unix socket; as root, so root's rights apply. */
function post(body: Buffer): Promise<Posted> {
  return new Promise((resolve, reject) => {
    const sent = performance.now();
    const req = request({ socketPath, path: '/RPC2', method: 'POST', agent, headers: { 'content-type': 'text/xml', 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), sent, answered: performance.now() }));
      res.on('error', reject);
    });
    // An answer slower than this is no answer: the daemon is stuck on the request.
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
    req.end(body);
  });
}

async function plainCall(method: string, ...params: unknown[]): Promise<Answer> {
  const answer = await post(Buffer.from(encode(call(method, ...params))));
  return readAnswer(answer.status, answer.text, false);
}

const T0 = 1_000;
let keys: string[] = [];

function documentSlices(bump: Record<string, number> = {}): TestSlice[] {
  const user = { 1: keys[0]! };
  return [
    { name: ALPHA, users: user, resources: { cpu_share: 20 + (bump[ALPHA] ?? 0), net_max_rate: 10_000, net_min_rate: 500 } },
    { name: BETA, users: user, resources: { cpu_share: 8 + (bump[BETA] ?? 0), cpu_pct: 10 } },
    // Not enabled: its account exists, stopped.
    { name: GAMMA, users: user, resources: { cpu_share: 2, enabled: 0 } },
    { name: DLG1, users: user, instantiation: 'delegated', controllers: [CTL], resources: { cpu_share: 4 } },
    { name: DLG2, users: { 2: keys[1]! }, instantiation: 'delegated', controllers: [CTL], resources: { net_max_rate: 2_000 } },
  ];
}
const delegates = (): TestDelegate[] => [{ name: CTL, keys: [keys[1]!] }];

test.before(async () => {
  if (!isRoot) return;
  keys = await publicKeys(2);
  server = await serveDocument(slicesXml(T0, documentSlices(), delegates()));
  box = await sandbox({ authority_url: server.url, api_max_request_bytes: MAX_REQUEST_BYTES }, { uids: 200 });
  authority = await makeAuthority(box.dir);
  await writeFile(box.config, `${await readFile(box.config, 'utf8')}authority_cert = ${authority.certPath}\n`);
  socketPath = join(box.dir, 'run', 'api.sock');
  agent = new Agent({ keepAlive: true, maxSockets: PARALLEL });
  daemon = startDaemonProcess(box.config);
  await waitFor(`the document's slivers to settle\n${daemon.output().slice(-2000)}`, async () => {
    const accounts = (await db()).accounts;
    return accounts[ALPHA]?.state === 'running' && accounts[BETA]?.state === 'running' && accounts[GAMMA]?.state === 'stopped' &&
      accounts[CTL]?.state === 'running';
  });
  for (const entry of await passwdEntries(prefix)) {
    if (!LISTED.includes(entry.name)) continue;
    // Something of the slice's own, which a destroy and re-create would lose.
    const marker = join(entry.home, 'fuzz-marker');
    await writeFile(marker, `${entry.name}\n`);
    before.set(entry.name, { entry, marker });
  }
});

test.after.always(async () => {
  if (!isRoot) return;
  agent?.destroy();
  if (daemon) await stopDaemonProcess(daemon, 'SIGKILL');
  await server?.close();
  await box?.cleanup();
  await removeAccounts(prefix);
});

/** The base bodies: valid and invalid calls of every method that changes the node, and some reads. */
async function baseCalls(): Promise<Base[]> {
  const sign = (xml: string, key = authority.keyPath, cert = authority.certPath, options: SignTicketOptions = {}) => signTicket(xml, key, cert, options);
  const ticketOf = (timestamp: number, slices: TestSlice[]) => slicesXml(timestamp, slices);
  const user = { 1: keys[0]! };
  // Newer than every pushed document, so that a push never takes a ticket's record away.
  const tktA = await sign(ticketOf(5_000, [{ name: TKTA, users: user, resources: { cpu_share: 3 } }]));
  const tktB = await sign(ticketOf(5_001, [{ name: TKTB, users: user, controllers: [CTL], resources: { cpu_share: 2 } }]));
  const tktDlg1 = await sign(ticketOf(5_002, [documentSlices().find((s) => s.name === DLG1)!]));
  const tktWrongKey = await sign(ticketOf(5_003, [{ name: name('forged'), users: user }]), authority.wrongKeyPath, authority.wrongCertPath);
  const tktSha1 = await sign(ticketOf(5_004, [{ name: name('sha1'), users: user }]), authority.keyPath, authority.certPath, { signatureAlgorithm: 'rsa-sha1', digestAlgorithm: 'sha1' });
  const tktExpired = await sign(ticketOf(5_005, [{ name: name('old'), users: user, expiry: 1_000 }]));
  const tktElsewhere = await sign(ticketOf(5_006, [{ name: name('there'), users: user, nodes: [2] }]));
  const tktTwo = await sign(ticketOf(5_007, [{ name: name('two1'), users: user }, { name: name('two2'), users: user }]));
  const tktRoot = await sign(ticketOf(5_008, [{ name: 'root', users: user }]));
  const tktPartial = await sign(ticketOf(5_009, [{ name: name('part'), users: user }]), authority.keyPath, authority.certPath, { referenceUri: '#1000' });

  const pushOf = async (timestamp: number, slices: TestSlice[], extra = '') => {
    const document = slicesXml(timestamp, slices, delegates()).replace('</slices>', `${extra}</slices>`);
    return { document, signature: await signDetached(Buffer.from(document), authority.keyPath) };
  };
  const push1 = await pushOf(T0 + 100, documentSlices({ [BETA]: 1 }));
  const push2 = await pushOf(T0 + 200, documentSlices({ [BETA]: 1, [ALPHA]: 4 }));
  // Signed, and one slice in it names root: refused for that slice, the rest applied.
  const push3 = await pushOf(T0 + 300, documentSlices({ [BETA]: 1, [ALPHA]: 4 }), '  <slice id="77" name="root"><timestamp value="1300"/><node id="1"/></slice>\n');
  const pushOld = await pushOf(T0 + 50, documentSlices());
  const signedGarbage = '<slices><timestamp value="9999"/><slice name=';
  const garbageSignature = await signDetached(Buffer.from(signedGarbage), authority.keyPath);
  const wrongKeySignature = await signDetached(Buffer.from(push2.document), authority.wrongKeyPath);

  return [
    { label: 'SetLoans alpha: one loan', call: call('SetLoans', ALPHA, [[BETA, 'cpu_share', 5]]) },
    { label: 'SetLoans alpha: three loans', call: call('SetLoans', ALPHA, [[BETA, 'cpu_share', 5], [DLG1, 'net_max_rate', 2_000], [GAMMA, 'net_min_rate', 100]]) },
    { label: 'SetLoans alpha: all it may', call: call('SetLoans', ALPHA, [[BETA, 'nm_cpu_share', 19]]) },
    { label: 'SetLoans alpha: more than it has', call: call('SetLoans', ALPHA, [[BETA, 'cpu_share', 20]]) },
    { label: 'SetLoans alpha: to itself', call: call('SetLoans', ALPHA, [[ALPHA, 'cpu_share', 1]]) },
    { label: 'SetLoans alpha: to nobody', call: call('SetLoans', ALPHA, [[name('nosuch'), 'cpu_share', 1]]) },
    { label: 'SetLoans alpha: not loanable', call: call('SetLoans', ALPHA, [[BETA, 'disk_max', 1]]) },
    { label: 'SetLoans alpha: negative', call: call('SetLoans', ALPHA, [[BETA, 'cpu_share', -1]]) },
    { label: 'SetLoans alpha: none', call: call('SetLoans', ALPHA, []) },
    { label: 'SetLoans beta: cpu_pct', call: call('SetLoans', BETA, [[ALPHA, 'cpu_pct', 10]]) },
    { label: 'SetLoans beta: seed name', call: call('SetLoans', BETA, [[ALPHA, 'nm_cpu_guaranteed_share', 50], [DLG2, 'cpu_share', 7]]) },
    { label: 'SetLoans gamma: too much', call: call('SetLoans', GAMMA, [[BETA, 'cpu_share', 2]]) },
    { label: 'SetLoans dlg1', call: call('SetLoans', DLG1, [[ALPHA, 'cpu_share', 3]]) },
    { label: 'SetLoans dlg2', call: call('SetLoans', DLG2, [[BETA, 'net_max_rate', 1_992]]) },
    { label: 'SetLoans: bad triples', call: call('SetLoans', BETA, [[ALPHA, 'cpu_share'], [ALPHA, 'cpu_share', '3'], 5]) },
    { label: 'SetLoans: unknown lender', call: call('SetLoans', name('nosuch'), []) },
    { label: 'Create dlg1', call: call('Create', DLG1) },
    { label: 'Create dlg2', call: call('Create', DLG2) },
    { label: 'CreateSliver dlg1', call: call('CreateSliver', DLG1) },
    { label: 'Destroy dlg1', call: call('Destroy', DLG1) },
    { label: 'Destroy dlg2', call: call('Destroy', DLG2) },
    { label: 'DeleteSliver dlg2', call: call('DeleteSliver', DLG2) },
    { label: 'Create alpha (not delegated)', call: call('Create', ALPHA) },
    { label: 'Destroy alpha (not delegated)', call: call('Destroy', ALPHA) },
    { label: 'Destroy unknown', call: call('Destroy', name('nosuch')) },
    { label: 'Create a delegate', call: call('Create', CTL) },
    { label: 'Ticket valid (new sliver)', call: call('Ticket', tktA) },
    { label: 'AdminTicket valid (new sliver)', call: call('AdminTicket', tktB) },
    { label: 'Ticket valid (delegated sliver)', call: call('Ticket', tktDlg1) },
    { label: 'Ticket wrong key', call: call('Ticket', tktWrongKey) },
    { label: 'Ticket SHA-1', call: call('Ticket', tktSha1) },
    { label: 'AdminTicket expired', call: call('AdminTicket', tktExpired) },
    { label: 'Ticket other node', call: call('Ticket', tktElsewhere) },
    { label: 'Ticket two slices', call: call('Ticket', tktTwo) },
    { label: 'Ticket names root', call: call('Ticket', tktRoot) },
    { label: 'Ticket signs one slice only', call: call('Ticket', tktPartial) },
    { label: 'Ticket unsigned', call: call('Ticket', ticketOf(5_010, [{ name: name('unsigned'), users: user }])) },
    { label: 'Ticket garbage', call: call('Ticket', '<slices/>') },
    { label: 'AdminTicket empty', call: call('AdminTicket', '') },
    { label: 'DeliverSlices valid', call: call('DeliverSlices', push1.document, push1.signature), weight: 2 },
    { label: 'DeliverSlices valid, newer', call: call('DeliverSlices', push2.document, push2.signature), weight: 2 },
    { label: 'DeliverSlices valid, a root slice', call: call('DeliverSlices', push3.document, push3.signature), weight: 6 },
    { label: 'DeliverSlices valid, older', call: call('DeliverSlices', pushOld.document, pushOld.signature) },
    { label: 'DeliverSlices signature of another', call: call('DeliverSlices', push2.document, push1.signature) },
    { label: 'DeliverSlices wrong key', call: call('DeliverSlices', push2.document, wrongKeySignature) },
    { label: 'DeliverSlices signed garbage', call: call('DeliverSlices', signedGarbage, garbageSignature) },
    { label: 'DeliverSlices garbage', call: call('DeliverSlices', '<slices>', 'AAAA') },
    // Reads, often: each is checked against the changes acknowledged before it.
    { label: 'GetRecord alpha', call: call('GetRecord', ALPHA), weight: 3 },
    { label: 'GetRecord dlg1', call: call('GetRecord', DLG1), weight: 3 },
    { label: 'GetRecord dlg2', call: call('GetRecord', DLG2), weight: 3 },
    { label: 'GetLoans alpha', call: call('GetLoans', ALPHA), weight: 3 },
    { label: 'GetLoans beta', call: call('GetLoans', BETA), weight: 3 },
    { label: 'DumpDatabase', call: call('DumpDatabase'), weight: 2 },
  ];
}

// ---- what the fuzz did, for the checks afterwards

/**
 * One acknowledged write, or one read, of a value the node keeps (a sliver's loans, whether a
 * delegated sliver is created), with when its request was sent and its answer came.
 */
interface Observation<T> {
  readonly sent: number;
  readonly answered: number;
  readonly value: T;
  readonly write: boolean;
}

const totals = {
  sent: 0,
  results: 0,
  faults: new Map<number, number>(),
  broken: [] as string[],
  internal: [] as string[],
  byMethod: new Map<string, { results: number; faults: number }>(),
  pushes: new Map<string, number>(),
  fuzzSeconds: 0,
  convergeSeconds: 0,
};
const loanHistory = new Map<string, Array<Observation<Loan[]>>>();
const createdHistory = new Map<string, Array<Observation<boolean>>>();
const tickets: Array<{ name: string; timestamp: number; answered: number }> = [];
const pushed: Array<{ timestamp: number; outcome: string; answered: number }> = [];
/** The database as DumpDatabase showed it during the fuzz. */
const dumps: Array<{ sent: number; answered: number; database: NodeDatabase }> = [];
let fuzzDone = false;

const count = <K>(map: Map<K, number>, key: K) => map.set(key, (map.get(key) ?? 0) + 1);
const shown = (bytes: Buffer) => JSON.stringify(bytes.length > 300 ? `${bytes.subarray(0, 300).toString('utf8')}...(${bytes.length} bytes)` : bytes.toString('utf8'));
const observe = <T>(map: Map<string, Array<Observation<T>>>, key: string, item: Observation<T>) => map.set(key, [...(map.get(key) ?? []), item]);
const writes = <T>(map: Map<string, Array<Observation<T>>>) => [...map.values()].flat().filter((o) => o.write);

/** The canonical loans of an accepted SetLoans, as the daemon stores them. */
function storedLoans(given: unknown): Loan[] {
  return (given as unknown[][]).map(([recipient, resource, amount]) => {
    const canonical = canonicalResource(resource as string)!;
    // `+ 0`: an <int>-0</int> is stored as 0 (what a read gives back), not as -0.
    return { recipient: recipient as string, resource: canonical.name, amount: Math.floor((amount as number) / canonical.divisor) + 0 };
  });
}

/** Notes what an answered call changed or read, as the daemon decoded the request (with its own decoder). */
function noteResult(bytes: Buffer, result: unknown, posted: Posted): void {
  const { method, params } = decodeCall(bytes);
  const sliver = params[0] as string;
  const when = { sent: posted.sent, answered: posted.answered };
  if (method === 'SetLoans') observe(loanHistory, sliver, { ...when, value: storedLoans(params[1]), write: true });
  else if (method === 'Create' || method === 'CreateSliver') observe(createdHistory, sliver, { ...when, value: true, write: true });
  else if (method === 'Destroy' || method === 'DeleteSliver') observe(createdHistory, sliver, { ...when, value: false, write: true });
  else if (method === 'GetLoans') {
    const loans = (result as unknown[][]).map(([recipient, resource, amount]) => ({ recipient, resource, amount }) as Loan);
    observe(loanHistory, sliver, { ...when, value: loans, write: false });
  } else if (method === 'GetRecord') {
    const record = result as { loans: Loan[]; node_state: { created: boolean }; instantiation: string };
    observe(loanHistory, sliver, { ...when, value: record.loans, write: false });
    if (record.instantiation === 'delegated') observe(createdHistory, sliver, { ...when, value: record.node_state.created, write: false });
  } else if (method === 'Ticket' || method === 'AdminTicket') {
    const slice = /<slice [^>]*name="([^"]+)"[^>]*>\s*<timestamp value="(\d+)"/.exec(params[0] as string);
    if (slice) tickets.push({ name: slice[1]!, timestamp: Number(slice[2]), answered: posted.answered });
  } else if (method === 'DeliverSlices') {
    const outcome = String((result as { outcome?: unknown }).outcome);
    count(totals.pushes, outcome);
    const timestamp = /<slices>\s*<timestamp value="(\d+)"/.exec(params[0] as string);
    if (timestamp) pushed.push({ timestamp: Number(timestamp[1]), outcome, answered: posted.answered });
  } else if (method === 'DumpDatabase') {
    const database = JSON.parse(result as string) as NodeDatabase;
    dumps.push({ ...when, database });
    for (const record of sliverRecords(database)) {
      observe(loanHistory, record.name, { ...when, value: record.loans, write: false });
      if (record.instantiation === 'delegated') observe(createdHistory, record.name, { ...when, value: record.node_state.created, write: false });
    }
  }
}

/**
 * The reads that no order of the calls explains: a read returns the value of a write that began
 * before the read ended and that no other acknowledged write had overtaken before the read began
 * (one sent after it was acknowledged), or the initial value while no write was acknowledged
 * before the read began. Overlapping calls may take effect in either order; an acknowledged
 * change that a later read no longer shows, and that nothing overtook, was lost.
 */
function unexplainedReads<T>(history: ReadonlyArray<Observation<T>>, initial: T, show: (value: T) => string): string[] {
  const written = history.filter((o) => o.write);
  const out: string[] = [];
  for (const read of history.filter((o) => !o.write)) {
    const overtaken = (w: Observation<T>) => written.some((other) => other.sent > w.answered && other.answered < read.sent);
    const possible = written.filter((w) => w.sent < read.answered && !overtaken(w)).map((w) => w.value);
    if (!written.some((w) => w.answered < read.sent)) possible.push(initial);
    if (!possible.some((value) => isDeepStrictEqual(value, read.value))) {
      const when = Number.isFinite(read.sent) ? `a read at ${(read.sent / 1000).toFixed(3)} s` : 'the database at the end';
      out.push(`${when} shows ${show(read.value)}; the acknowledged writes allow only ${[...new Set(possible.map(show))].join(' or ')}`);
    }
  }
  return out;
}

const CHANGES = new Set(['SetLoans', 'Create', 'CreateSliver', 'Destroy', 'DeleteSliver', 'Ticket', 'AdminTicket']);

serial(`${BODIES} mutated bodies as root each get a well-formed method response`, async (t) => {
  t.timeout(10 * 60_000);
  t.log(`seed ${SEED} (replay with NODEMGR_FUZZ_SEED=${SEED})`);
  const bases = await baseCalls();
  const started = performance.now();
  for (let i = 0; i < BODIES; i += PARALLEL) {
    // Made batch by batch, in the generator's order: the same seed gives the same bodies.
    const batch = Array.from({ length: Math.min(PARALLEL, BODIES - i) }, () => mutatedBody(bases));
    const posted = await Promise.allSettled(batch.map((b) => post(b.bytes)));
    posted.forEach((outcome, j) => {
      const body = batch[j]!;
      totals.sent++;
      const what = `body ${i + j} (from "${body.base}") ${shown(body.bytes)}`;
      if (outcome.status === 'rejected') {
        const oversized = body.bytes.length > MAX_REQUEST_BYTES ? ' (a body over api_max_request_bytes)' : '';
        totals.broken.push(`no answer${oversized}: ${(outcome.reason as Error).message}: ${what}`);
        return;
      }
      const answer = readAnswer(outcome.value.status, outcome.value.text, body.bytes.length > MAX_REQUEST_BYTES);
      let method = '(not a call)';
      try {
        method = decodeCall(body.bytes).method.slice(0, 40);
      } catch {
        // not decodable: the daemon must have said so with a fault
      }
      const perMethod = totals.byMethod.get(method) ?? { results: 0, faults: 0 };
      totals.byMethod.set(method, perMethod);
      if (answer.kind === 'broken') {
        totals.broken.push(`${answer.problem}: ${what}; answered ${JSON.stringify(outcome.value.text.slice(0, 300))}`);
      } else if (answer.kind === 'fault') {
        perMethod.faults++;
        count(totals.faults, answer.code);
        if (answer.code === FaultCode.internal) totals.internal.push(`${answer.message}: ${what}`);
      } else {
        perMethod.results++;
        totals.results++;
        if (CHANGES.has(method) && answer.value !== 1) totals.broken.push(`${method} answered ${JSON.stringify(answer.value)}, not 1: ${what}`);
        if (method === 'DumpDatabase') {
          try {
            validateDatabase(JSON.parse(String(answer.value)));
          } catch (error) {
            totals.broken.push(`DumpDatabase's JSON does not validate (${(error as Error).message}): ${what}`);
            return;
          }
        }
        try {
          noteResult(body.bytes, answer.value, outcome.value);
        } catch (error) {
          totals.broken.push(`${method} answered ${JSON.stringify(answer.value).slice(0, 200)}, not what it returns (${(error as Error).message}): ${what}`);
        }
      }
    });
  }
  totals.fuzzSeconds = (performance.now() - started) / 1000;
  fuzzDone = true;

  const faults = [...totals.faults].sort(([a], [b]) => a - b).map(([code, n]) => `${code}: ${n}`).join(', ');
  t.log(`${totals.sent} bodies in ${totals.fuzzSeconds.toFixed(1)} s: ${totals.results} results, ${totals.sent - totals.results - totals.broken.length} faults (${faults})`);
  t.log(`by method: ${[...totals.byMethod].sort(([a], [b]) => (a < b ? -1 : 1)).map(([m, n]) => `${m} ${n.results}/${n.faults}`).join(', ')} (results/faults)`);
  const loans = writes(loanHistory).length;
  const creates = writes(createdHistory).filter((w) => w.value).length;
  const destroys = writes(createdHistory).filter((w) => !w.value).length;
  t.log(`state changes acknowledged: ${loans} loan sets, ${creates} creates, ${destroys} destroys, ${tickets.length} tickets, pushes ${[...totals.pushes].map(([o, n]) => `${o} ${n}`).join(', ') || 'none'}`);

  t.deepEqual(totals.broken, [], 'every body gets a well-formed XML-RPC method response with a known fault code');
  t.deepEqual(totals.internal, [], 'no body gets an internal error: a bad argument is an invalid argument (102)');
  t.false(/api call failed/.test(daemon.output()), 'no call ended in an exception inside the daemon');
  // Without state changes the fuzz would have tested only the refusals.
  t.true(loans > 0 && creates > 0 && destroys > 0, 'some mutated or intact calls changed the node');
});

/**
 * Sends a request whole before reading its answer, as Python's http.client (under xmlrpc.client,
 * the original node manager's client) does; a server that closes the connection while the body
 * is still coming leaves such a client with a broken pipe and no answer.
 */
function postWholeThenRead(body: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let received = Buffer.alloc(0);
    let written = false;
    // The answer is read once the whole request is out, and is whole when its content-length is there.
    const answered = () => {
      const head = received.indexOf('\r\n\r\n');
      if (!written || head < 0) return;
      const headers = received.subarray(0, head).toString('latin1');
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(headers)?.[1] ?? NaN);
      if (received.length < head + 4 + length) return;
      socket.destroy();
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(headers)?.[1] ?? 0), text: received.subarray(head + 4, head + 4 + length).toString('utf8') });
    };
    socket.setTimeout(30_000, () => socket.destroy(new Error('no answer within 30 s')));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      answered();
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`connection closed after ${received.length} bytes of answer`)));
    socket.write(`POST /RPC2 HTTP/1.1\r\nHost: nodemgr\r\nContent-Type: text/xml\r\nContent-Length: ${body.length}\r\n\r\n`);
    socket.write(body, (error) => {
      if (error) return;
      written = true;
      answered();
    });
  });
}

serial('a body over api_max_request_bytes gets its fault even when the client sends it whole before reading', async (t) => {
  const body = Buffer.from(encode(call('SetLoans', ALPHA, [[BETA, 'cpu_share', 'x'.repeat(MAX_REQUEST_BYTES)]])));
  const answer = await postWholeThenRead(body).catch((error: Error) => ({ status: 0, text: `no answer: ${error.message}` }));
  const read = readAnswer(answer.status, answer.text, true);
  t.true(read.kind === 'fault' && read.code === FaultCode.notWellFormed, `HTTP 413 with fault -32700, got ${answer.status}: ${answer.text.slice(0, 200)}`);
});

serial('afterwards the daemon answers, its database validates and the node converges on its records', async (t) => {
  t.true(fuzzDone, 'the fuzz ran to its end');
  t.is(daemon.child.exitCode, null, `the daemon is still running\n${daemon.output().slice(-2000)}`);
  const help = await plainCall('Help');
  t.true(help.kind === 'result' && /SetLoans\(sliver_name, loans\)/.test(String(help.value)), 'Help is answered');

  await t.notThrowsAsync(db(), 'the database on disk validates');
  const dump = await plainCall('DumpDatabase');
  t.is(dump.kind, 'result', 'DumpDatabase is answered');
  if (dump.kind === 'result') t.notThrows(() => validateDatabase(JSON.parse(String(dump.value))), "DumpDatabase's JSON validates");

  const started = performance.now();
  let differences: string[] = ['nothing read yet'];
  let final: NodeDatabase | null = null;
  await waitFor('the node to converge', async () => {
    final = await db();
    differences = await convergence(final);
    return differences.length === 0;
  }, 90_000).catch(() => undefined);
  totals.convergeSeconds = (performance.now() - started) / 1000;
  if (differences.length > 0) t.log(daemon.output().split('\n').slice(-40).join('\n'));
  t.deepEqual(differences, [], 'the accounts on the host are what the records ask for, each running (or stopped when not enabled) with its spec applied');
  t.log(`converged in ${totals.convergeSeconds.toFixed(1)} s`);
  if (!final) return;
  const records = sliverRecords(final);
  const { rejected } = effectiveRspecs(records.map((s) => ({ name: s.name, rspec: s.rspec, loans: s.loans })));
  t.deepEqual(rejected, [], 'every loan in the records fits');
  for (const sliver of LISTED) {
    const then = before.get(sliver);
    const now = (await passwdEntries(prefix)).find((e) => e.name === sliver);
    t.is(now?.uid, then?.entry.uid, `${sliver}, listed and not delegated, keeps its account`);
    t.truthy(then && (await stat(then.marker).catch(() => null)), `${sliver} keeps what was in its home`);
  }
  t.log(`accounts at the end: ${(await passwdEntries(prefix)).map((e) => e.name.slice(prefix.length + 1)).sort().join(', ')}`);
});

/** What still differs between the host and what the records ask for; empty once converged. */
async function convergence(database: NodeDatabase): Promise<string[]> {
  const desired = desiredState(database, 'unix');
  const wanted = desired.specs.map((s) => s.name).sort();
  const onHost = (await passwdEntries(prefix)).map((e) => e.name).sort();
  const out: string[] = [];
  if (!isDeepStrictEqual(onHost, wanted)) out.push(`accounts on the host ${onHost.join(',')}; the records ask for ${wanted.join(',')}`);
  for (const spec of desired.specs) {
    const account = database.accounts[spec.name];
    const state = spec.enabled ? 'running' : 'stopped';
    if (account?.state !== state) out.push(`${spec.name} is ${account?.state ?? 'unknown'}, not ${state}${account?.reason ? ` (${account.reason})` : ''}`);
    else if (account.appliedHash !== desired.hashes.get(spec.name)) out.push(`${spec.name}: its current spec is not applied yet`);
  }
  return out;
}

serial('no change the node acknowledged is lost', async (t) => {
  const final = await db();
  const record = (sliver: string) => sliverRecords(final).find((r) => r.name === sliver);
  // The database at the end is one more read, after every call.
  const atEnd = { sent: Infinity, answered: Infinity, write: false };
  const lost: string[] = [];
  const showLoans = (loans: readonly Loan[] | null) => (loans ? `[${loans.map((l) => `${l.recipient.replace(`${prefix}_`, '')} ${l.resource} ${l.amount}`).join(', ')}]` : 'no record');
  for (const [sliver, history] of loanHistory) {
    const problems = unexplainedReads<readonly Loan[] | null>([...history, { ...atEnd, value: record(sliver)?.loans ?? null }], [], showLoans);
    lost.push(...problems.map((p) => `loans of ${sliver}: ${p}`));
  }
  for (const [sliver, history] of createdHistory) {
    const show = (created: boolean | null) => (created === null ? 'no record' : created ? 'created' : 'not created');
    const problems = unexplainedReads<boolean | null>([...history, { ...atEnd, value: record(sliver)?.node_state.created ?? null }], false, show);
    lost.push(...problems.map((p) => `${sliver}: ${p}`));
  }
  // Tickets and pushes, checked in every dump and in the database at the end: no push is newer
  // than a ticket, so nothing may take a ticket's record away, and an older document changes nothing.
  for (const dump of [...dumps, { sent: Infinity, answered: Infinity, database: final }]) {
    const when = Number.isFinite(dump.sent) ? `DumpDatabase at ${(dump.sent / 1000).toFixed(3)} s` : 'the database at the end';
    for (const ticket of tickets.filter((k) => k.answered < dump.sent)) {
      const held = sliverRecords(dump.database).find((r) => r.name === ticket.name);
      if (!held || held.timestamp < ticket.timestamp) lost.push(`${when} holds ${held ? `timestamp ${held.timestamp}` : 'no record'} for ${ticket.name}, whose ticket of timestamp ${ticket.timestamp} was accepted`);
    }
    const applied = pushed.filter((p) => (p.outcome === 'applied' || p.outcome === 'unchanged') && p.answered < dump.sent);
    const newest = Math.max(T0, ...applied.map((p) => p.timestamp));
    const inForce = dump.database.records['timestamp']?.timestamp ?? null;
    if (inForce === null || inForce < newest) lost.push(`${when} has document ${inForce} in force, after the push of document ${newest} was applied`);
  }
  const reads = [...loanHistory.values(), ...createdHistory.values()].flat().filter((o) => !o.write).length;
  t.log(`checked ${reads} reads of loans and of Create/Destroy (GetLoans, GetRecord and ${dumps.length} DumpDatabase answers) and the end against ${writes(loanHistory).length + writes(createdHistory).length} acknowledged writes, ${tickets.length} tickets, ${pushed.length} pushes`);
  if (lost.length > 0) t.log(lost.slice(0, 10).join('\n'));
  t.deepEqual(lost, [], 'every acknowledged SetLoans, Create, Destroy, ticket and push stays in force until a later call changes it');
});
