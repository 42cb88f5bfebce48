// XML-RPC on the wire. The wire format is the `xmlrpc` package's (and every XML-RPC client's);
// the decoding is ours, on saxes, the strict streaming XML parser that also reads slices.xml.
// Measured per GetRSpec call on this kind of host: the package's own decoder (sax behind a
// stream) 146 µs, fast-xml-parser 22 µs plus 4 µs for the validator it needs because its parser
// accepts mismatched tags, undefined entities and control characters; saxes 3.4 µs and it
// checks all of those itself. Decoding was most of the API's time (see bench/api.ts, README).
import { SaxesParser } from 'saxes';
import { ApiFault, FaultCode } from './faults.js';
import { describeError } from '../util/errors.js';

export interface MethodCall {
  readonly method: string;
  readonly params: readonly unknown[];
}

/** Deeper than this, a request is refused: no method takes anything nested half as deep. */
const MAX_DEPTH = 32;
/** A value is at most three elements deep per level (<value><array><data>); the rest is the envelope. */
const MAX_ELEMENT_DEPTH = 3 * MAX_DEPTH + 8;

/** The document as a tree: elements, text (entities decoded) and CDATA sections. */
interface XmlElement {
  readonly name: string;
  readonly children: (XmlElement | string | { readonly cdata: string })[];
}
type XmlNode = XmlElement['children'][number];

const isElement = (node: XmlNode): node is XmlElement => typeof node === 'object' && 'name' in node;

const utf8 = new TextDecoder('utf-8', { fatal: true });

const notWellFormed = (problem: string) => new ApiFault(FaultCode.notWellFormed, `malformed request: ${problem}`);
const notACall = (problem: string) => new ApiFault(FaultCode.invalidRequest, `not an XML-RPC method call: ${problem}`);

/** Reads the document into a tree; saxes refuses everything that is not well-formed XML. */
function readTree(text: string): XmlElement[] {
  const parser = new SaxesParser<{ xmlns: false; position: true }>({ xmlns: false, position: true });
  const roots: XmlElement[] = [];
  const open: XmlElement[] = [];
  let fault: ApiFault | null = null;
  const stop = (problem: ApiFault) => {
    fault ??= problem;
    throw problem;
  };
  parser.on('doctype', () => stop(notACall('a DOCTYPE declaration is not allowed')));
  parser.on('opentag', (tag) => {
    if (open.length >= MAX_ELEMENT_DEPTH) stop(notACall(`values nested more than ${MAX_DEPTH} deep`));
    const element: XmlElement = { name: tag.name, children: [] };
    (open.length ? open[open.length - 1]!.children : roots).push(element);
    open.push(element);
  });
  parser.on('closetag', () => void open.pop());
  parser.on('text', (data) => {
    if (open.length) open[open.length - 1]!.children.push(data);
  });
  parser.on('cdata', (data) => {
    if (open.length) open[open.length - 1]!.children.push({ cdata: data });
  });
  parser.on('error', (error) => stop(notWellFormed(describeXmlError(text, error.message, parser.position))));
  try {
    parser.write(text).close();
  } catch (error) {
    throw fault ?? notWellFormed(describeError(error));
  }
  return roots;
}

/** saxes says "LINE:COLUMN: what"; the message also shows what it was looking at. */
function describeXmlError(text: string, message: string, position: number): string {
  // saxes reads "fish & chips</string>" as one long entity name and complains much later.
  const bare = /&(?![A-Za-z_:][\w.:-]*;|#[0-9]+;|#x[0-9a-fA-F]+;)/g;
  // The CDATA sections are walked in step with the ampersands, once: a body of many "&" in a
  // section must not cost a search back through the text for each (that was minutes of a blocked
  // daemon for a 400 KB body).
  let section = cdataSection(text, 0);
  for (let m = bare.exec(text); m && m.index < position; m = bare.exec(text)) {
    while (section !== null && section.end <= m.index) section = cdataSection(text, section.end);
    if (section === null || m.index < section.start) {
      const before = text.slice(0, m.index).split('\n');
      return `line ${before.length}, column ${before.at(-1)!.length + 1}: a bare "&"; write &amp;`;
    }
  }
  const [, line, column, what = message] = /^(\d+):(\d+): (.*?)\.?$/s.exec(message) ?? [];
  let shown = '';
  if (/entity|character reference/.test(what)) shown = ` ${text.slice(text.lastIndexOf('&', position - 1), position).slice(0, 24)}`;
  else if (/close tag/.test(what)) shown = ` ${text.slice(text.lastIndexOf('</', position - 1), position).slice(0, 40)}`;
  else if (/disallowed character/.test(what) && position > 0) shown = ` U+${text.charCodeAt(position - 1).toString(16).padStart(4, '0')}`;
  return `${line ? `line ${line}, column ${column}: ` : ''}${what}${shown}`;
}

/** The next CDATA section from `from`: where it starts and where it ends (the text's end if it is never closed); null when none. */
function cdataSection(text: string, from: number): { start: number; end: number } | null {
  const start = text.indexOf('<![CDATA[', from);
  if (start < 0) return null;
  const close = text.indexOf(']]>', start + 9);
  return { start, end: close < 0 ? text.length : close + 3 };
}

// The call most clients send most of the time, read with one expression instead of a parser: an
// optional declaration, a method name, and parameters that are each a <string> of plain ASCII text
// (no reference, no "<", no carriage return), an <int>/<i4> of at most 15 digits or a <boolean>.
// Such a document is well-formed and means what the parser would make of it; anything else (other
// types, references, CDATA, comments, attributes, faults of every kind) is read by the parser.
const SPACE = '[ \\t\\n]*';
const PLAIN_TEXT = '[\\t\\n\\x20-\\x25\\x27-\\x3b\\x3d-\\x7e]*';
const PLAIN_PARAM = `<param>${SPACE}<value>(?:<string>(${PLAIN_TEXT})</string>|<int>([+-]?[0-9]{1,15})</int>|<i4>([+-]?[0-9]{1,15})</i4>|<boolean>([01])</boolean>)</value>${SPACE}</param>`;
const PLAIN_CALL = new RegExp(
  `^(?:<\\?xml version=(["'])1\\.0\\1(?: encoding=(["'])(?:utf-8|UTF-8)\\2)?\\?>)?${SPACE}<methodCall>${SPACE}` +
    `<methodName>([A-Za-z_][\\w.]*)</methodName>${SPACE}(?:<params>${SPACE}((?:${PLAIN_PARAM.replace(/\((?!\?)/g, '(?:')}${SPACE})*)</params>${SPACE})?` +
    `</methodCall>${SPACE}$`,
);
const EVERY_PLAIN_PARAM = new RegExp(PLAIN_PARAM, 'g');

/** The call when `text` is in the plain form above, else null. (Exported for its tests.) */
export function plainCall(text: string): MethodCall | null {
  const m = PLAIN_CALL.exec(text);
  if (m === null || text.includes(']]>')) return null;
  const params: unknown[] = [];
  const list = m[4];
  if (list) {
    EVERY_PLAIN_PARAM.lastIndex = 0;
    for (let p = EVERY_PLAIN_PARAM.exec(list); p !== null; p = EVERY_PLAIN_PARAM.exec(list)) {
      const [, string, int, i4, boolean] = p;
      params.push(string ?? (boolean !== undefined ? boolean === '1' : Number(int ?? i4)));
    }
  }
  return { method: m[3]!, params };
}

/** Decodes one XML-RPC method call; throws a fault that says what is wrong with it. */
export function decodeCall(body: Uint8Array): MethodCall {
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw notWellFormed('the body is not UTF-8');
  }
  const plain = plainCall(text);
  if (plain !== null) return plain;
  const declared = /^\s*<\?xml[^>]*\bencoding\s*=\s*["']([^"']+)["']/.exec(text)?.[1];
  if (declared && !/^(utf-?8|us-ascii|ascii)$/i.test(declared)) {
    throw new ApiFault(FaultCode.unsupportedEncoding, `unsupported encoding ${JSON.stringify(declared)}: requests are read as UTF-8`);
  }
  if (!/\S/.test(text)) throw notWellFormed('the body is empty');
  const roots = readTree(text);
  if (roots.length !== 1 || roots[0]!.name !== 'methodCall') {
    throw notACall(`the document must hold exactly one <methodCall>, found ${roots.map((r) => `<${r.name}>`).join(', ') || 'none'}`);
  }
  let method: string | null = null;
  let params: unknown[] = [];
  let seenParams = false;
  for (const child of elements(roots[0]!, '<methodCall>')) {
    if (child.name === 'methodName' && method === null) {
      method = textOf(child, '<methodName>');
      if (method === '') throw notACall('<methodName> is empty');
    } else if (child.name === 'params' && !seenParams) {
      seenParams = true;
      params = elements(child, '<params>').map((param, i) => {
        if (param.name !== 'param') throw notACall(`<params> holds <${param.name}>; only <param> belongs there`);
        return onlyValue(param, `parameter ${i + 1}`, 1);
      });
    } else {
      throw notACall(`unexpected <${child.name}> in <methodCall>`);
    }
  }
  if (method === null) throw notACall('<methodName> is missing');
  return { method, params };
}

/** The element children; text between them must be whitespace. */
function elements(parent: XmlElement, where: string): XmlElement[] {
  const out: XmlElement[] = [];
  for (const node of parent.children) {
    if (isElement(node)) out.push(node);
    else if (typeof node !== 'string' || /\S/.test(node)) throw notACall(`text where only elements belong, in ${where}`);
  }
  return out;
}

/** The text of an element that must hold only text (and CDATA). */
function textOf(element: XmlElement, where: string): string {
  let text = '';
  for (const child of element.children) {
    if (typeof child === 'string') text += child;
    else if (isElement(child)) throw notACall(`<${child.name}> inside ${where}, which holds only text`);
    else text += child.cdata;
  }
  return text;
}

/** The one <value> an element (a <param>, a struct <member>'s) holds. */
function onlyValue(node: XmlElement, where: string, depth: number): unknown {
  const values = elements(node, where);
  if (values.length !== 1 || values[0]!.name !== 'value') throw notACall(`${where} must hold exactly one <value>`);
  return decodeValue(values[0]!, where, depth);
}

function decodeValue(value: XmlElement, where: string, depth: number): unknown {
  if (depth > MAX_DEPTH) throw notACall(`values nested more than ${MAX_DEPTH} deep`);
  // <value>text</value> is a string, whitespace and all.
  if (!value.children.some(isElement)) return textOf(value, where);
  const typed = elements(value, `the <value> of ${where}`);
  if (typed.length !== 1) throw notACall(`the <value> of ${where} holds ${typed.length} elements; a value has one type`);
  const node = typed[0]!;
  const type = node.name;
  const scalar = () => textOf(node, `<${type}> of ${where}`);
  switch (type) {
    case 'string':
      return scalar();
    case 'int':
    case 'i4':
    case 'i8': {
      const text = scalar().trim();
      const number = /^[+-]?[0-9]{1,16}$/.test(text) ? Number(text) : NaN;
      if (!Number.isSafeInteger(number)) throw notACall(`${where}: <${type}>${text.slice(0, 32)}</${type}> is not an integer this node can hold`);
      return number;
    }
    case 'boolean': {
      const text = scalar().trim();
      if (text !== '0' && text !== '1') throw notACall(`${where}: a boolean is 0 or 1, not ${JSON.stringify(text.slice(0, 32))}`);
      return text === '1';
    }
    case 'double': {
      const text = scalar().trim();
      if (!/^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/.test(text) || !Number.isFinite(Number(text))) {
        throw notACall(`${where}: ${JSON.stringify(text.slice(0, 32))} is not a double`);
      }
      return Number(text);
    }
    case 'dateTime.iso8601':
      return decodeDateTime(scalar().trim(), where);
    case 'base64': {
      const text = scalar().replace(/\s+/g, '');
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 === 1) throw notACall(`${where}: the <base64> is not base64`);
      return Buffer.from(text, 'base64');
    }
    case 'nil':
    case 'ex:nil':
      if (node.children.length > 0) throw notACall(`${where}: <${type}/> is empty`);
      return null;
    case 'array': {
      const data = elements(node, `the <array> of ${where}`);
      if (data.length !== 1 || data[0]!.name !== 'data') throw notACall(`${where}: an <array> holds exactly one <data>`);
      return elements(data[0]!, `the <data> of ${where}`).map((item, i) => {
        if (item.name !== 'value') throw notACall(`${where}: <data> holds <${item.name}>; only <value> belongs there`);
        return decodeValue(item, `item ${i + 1} of ${where}`, depth + 1);
      });
    }
    case 'struct': {
      // Built from entries: a member named "__proto__" stays a member, never a prototype.
      const entries: [string, unknown][] = [];
      const seen = new Set<string>();
      for (const member of elements(node, `the <struct> of ${where}`)) {
        if (member.name !== 'member') throw notACall(`${where}: <struct> holds <${member.name}>; only <member> belongs there`);
        const parts = elements(member, `a <member> of ${where}`);
        const nameNode = parts.find((p) => p.name === 'name');
        const valueNode = parts.find((p) => p.name === 'value');
        if (parts.length !== 2 || !nameNode || !valueNode) throw notACall(`${where}: each <member> holds one <name> and one <value>`);
        const name = textOf(nameNode, `a member name of ${where}`);
        if (seen.has(name)) throw notACall(`${where}: struct member ${JSON.stringify(name.slice(0, 64))} appears twice`);
        seen.add(name);
        entries.push([name, decodeValue(valueNode, `member ${JSON.stringify(name.slice(0, 64))} of ${where}`, depth + 1)]);
      }
      return Object.fromEntries(entries);
    }
    default:
      throw notACall(`${where}: <${type.slice(0, 32)}> is not an XML-RPC type`);
  }
}

/** 20261125T10:00:00 (the spec's form, read as UTC), with optional dashes, fraction and zone. */
function decodeDateTime(text: string, where: string): Date {
  const m = /^(\d{4})-?(\d{2})-?(\d{2})T(\d{2}):?(\d{2}):?(\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$/.exec(text);
  const date = m
    ? new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}${m[7] ?? ''}${m[8] ? (m[8] === 'Z' ? 'Z' : `${m[8].slice(0, 3)}:${m[8].slice(-2)}`) : 'Z'}`)
    : null;
  if (!date || Number.isNaN(date.getTime())) throw notACall(`${where}: ${JSON.stringify(text.slice(0, 32))} is not a dateTime.iso8601`);
  return date;
}

// ---- encoding ----

/** What an encoded string may hold; anything else cannot travel in XML 1.0 at all. */
const UNENCODABLE = /[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\ud800-\udbff\udc00-\udfff]/;
const UNPAIRED_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const EVERY_UNPAIRED_SURROGATE = new RegExp(UNPAIRED_SURROGATE.source, 'g');
const EVERY_UNENCODABLE = new RegExp(UNENCODABLE.source, 'g');

function escapeText(text: string): string {
  if (UNENCODABLE.test(text) || UNPAIRED_SURROGATE.test(text)) {
    throw new Error('a string holds characters XML cannot carry');
  }
  // \r is written as a reference: a parser would otherwise turn \r\n into \n.
  return /[&<>\r]/.test(text) ? text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\r/g, '&#13;') : text;
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

function encodeValue(value: unknown, depth: number, out: string[]): void {
  if (depth > 64) throw new Error('the value is nested too deeply (is it circular?)');
  switch (typeof value) {
    case 'string':
      out.push('<value><string>', escapeText(value), '</string></value>');
      return;
    case 'number':
      if (!Number.isFinite(value)) throw new Error(`${value} cannot be written as XML-RPC`);
      if (Number.isInteger(value) && Math.abs(value) <= 0x7fffffff) out.push('<value><int>', String(value), '</int></value>');
      else if (Number.isSafeInteger(value)) out.push('<value><i8>', String(value), '</i8></value>');
      else out.push('<value><double>', String(value), '</double></value>');
      return;
    case 'bigint':
      if (value > 0x7fffffffffffffffn || value < -0x8000000000000000n) throw new Error(`${value} does not fit in an i8`);
      out.push('<value><i8>', String(value), '</i8></value>');
      return;
    case 'boolean':
      out.push('<value><boolean>', value ? '1' : '0', '</boolean></value>');
      return;
    case 'undefined':
      out.push('<value><nil/></value>');
      return;
    case 'object':
      if (value === null) out.push('<value><nil/></value>');
      else if (value instanceof Date) {
        if (Number.isNaN(value.getTime())) throw new Error('an invalid date cannot be written as XML-RPC');
        const d = value;
        out.push(
          '<value><dateTime.iso8601>',
          `${pad(d.getUTCFullYear(), 4)}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`,
          '</dateTime.iso8601></value>',
        );
      } else if (value instanceof Uint8Array) out.push('<value><base64>', Buffer.from(value).toString('base64'), '</base64></value>');
      else if (Array.isArray(value)) {
        out.push('<value><array><data>');
        for (const item of value) encodeValue(item, depth + 1, out);
        out.push('</data></array></value>');
      } else {
        out.push('<value><struct>');
        for (const key of Object.keys(value)) {
          out.push('<member><name>', escapeText(key), '</name>');
          encodeValue((value as Record<string, unknown>)[key], depth + 1, out);
          out.push('</member>');
        }
        out.push('</struct></value>');
      }
      return;
    default:
      throw new Error(`a ${typeof value} cannot be written as XML-RPC`);
  }
}

const RESPONSE_HEAD = '<?xml version="1.0"?>\n<methodResponse>';

/** The response for a value; a value XML-RPC cannot carry becomes a fault instead. */
export function encodeResponse(value: unknown): string {
  const out: string[] = [RESPONSE_HEAD, '<params><param>'];
  try {
    encodeValue(value, 0, out);
  } catch (error) {
    return encodeFault(FaultCode.internal, `the answer cannot be written as XML-RPC: ${describeError(error)}`);
  }
  out.push('</param></params></methodResponse>');
  return out.join('');
}

export function encodeFault(code: number, message: string): string {
  // The message may quote the caller's input: what XML cannot hold is shown as "?".
  const printable = message.replace(EVERY_UNPAIRED_SURROGATE, '?').replace(EVERY_UNENCODABLE, '?');
  const out: string[] = [RESPONSE_HEAD, '<fault>'];
  encodeValue({ faultCode: code, faultString: printable }, 0, out);
  out.push('</fault></methodResponse>');
  return out.join('');
}
