// The XML-RPC codec against Python's own xmlrpc.client marshaller in both directions, and against
// the requests XML and XML-RPC forbid, each refused with a fault that says what was wrong.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeCall, encodeFault, encodeResponse } from '../../src/api/codec.js';
import { ApiFault, FaultCode } from '../../src/api/faults.js';

const marshal = join(dirname(fileURLToPath(import.meta.url)), 'support', 'xmlrpc_marshal.py');
const python = (mode: 'dumps' | 'loads', input: string) => execFileSync('/usr/bin/python3', [marshal, mode], { input, encoding: 'utf8' });

const call = (xml: string) => decodeCall(Buffer.from(xml));
const wrap = (value: string) => `<?xml version="1.0"?><methodCall><methodName>M</methodName><params><param><value>${value}</value></param></params></methodCall>`;

function faultOf(xml: string | Buffer): ApiFault {
  try {
    decodeCall(typeof xml === 'string' ? Buffer.from(xml) : xml);
  } catch (error) {
    if (error instanceof ApiFault) return error;
    throw error;
  }
  throw new Error(`accepted: ${String(xml).slice(0, 200)}`);
}

test('a call marshalled by Python decodes to the same values', (t) => {
  const params = [
    'plain', '', '  spaces kept \t', 'a & b < c > d "q" \'s\' ]]>', 'line\r\nbreak', 'ünïcødé ✓ 𝄞',
    0, -7, 2147483647, -2147483648, true, false, { $double: 2.5 }, { $double: -1e-3 },
    { $bytes: Buffer.from([0, 1, 2, 250, 255]).toString('base64') }, { $date: '20261125T10:20:30' }, null,
    [], [1, ['nested', [2]]], {}, { a: 1, 'b c': [true, 'x'], __proto__name: 'not special', empty: '' },
  ];
  const xml = python('dumps', JSON.stringify({ method: 'Some.method', params }));
  const decoded = call(xml);
  t.is(decoded.method, 'Some.method');
  // Python writes \r as it is, and XML reads \r\n as \n (Python's own server does the same).
  t.deepEqual(decoded.params, [
    'plain', '', '  spaces kept \t', 'a & b < c > d "q" \'s\' ]]>', 'line\nbreak', 'ünïcødé ✓ 𝄞',
    0, -7, 2147483647, -2147483648, true, false, 2.5, -1e-3,
    Buffer.from([0, 1, 2, 250, 255]), new Date('2026-11-25T10:20:30Z'), null,
    [], [1, ['nested', [2]]], {}, { a: 1, 'b c': [true, 'x'], __proto__name: 'not special', empty: '' },
  ]);
});

test('a response encoded here is read back by Python unchanged', (t) => {
  const value = {
    text: 'a & b < c > d ]]> \r\n tab\t 𝄞', empty: '', int: -42, big: 2 ** 40, double: 0.25, yes: true, no: false,
    bytes: Buffer.from('hello'), when: new Date('2026-11-25T10:20:30Z'), list: [1, 'two', [3], {}], nothing: null,
  };
  const back = JSON.parse(python('loads', encodeResponse(value)));
  t.deepEqual(back, {
    result: {
      text: 'a & b < c > d ]]> \r\n tab\t 𝄞', empty: '', int: -42, big: 2 ** 40, double: { $double: 0.25 }, yes: true, no: false,
      bytes: { $bytes: Buffer.from('hello').toString('base64') }, when: { $date: '20261125T10:20:30' }, list: [1, 'two', [3], {}], nothing: null,
    },
  });
});

test('a fault is read by Python as a fault, even when its message quotes characters XML cannot hold', (t) => {
  const back = JSON.parse(python('loads', encodeFault(102, 'Invalid argument 1 (name): "a\u0000b\ud800"')));
  t.deepEqual(back, { fault: 102, message: 'Invalid argument 1 (name): "a?b?"' });
});

test('a value XML-RPC cannot carry becomes an internal-error fault, not a broken response', (t) => {
  for (const value of [Number.NaN, Infinity, 'nul\u0000', () => 1, Symbol('s'), new Date(Number.NaN)]) {
    const back = JSON.parse(python('loads', encodeResponse({ value })));
    t.is(back.fault, FaultCode.internal, String(value));
    t.regex(back.message, /cannot be written as XML-RPC/);
  }
  const circular: Record<string, unknown> = {};
  circular['self'] = circular;
  t.is(JSON.parse(python('loads', encodeResponse(circular))).fault, FaultCode.internal);
});

test('entities: the predefined five and character references are decoded; anything else is refused', (t) => {
  t.deepEqual(call(wrap('<string>&amp;&lt;&gt;&quot;&apos;&#65;&#x42;&#x1D11E;</string>')).params, ['&<>"\'AB𝄞']);
  t.deepEqual(call(wrap('<![CDATA[<not & parsed>]]>')).params, ['<not & parsed>']);
  t.regex(faultOf(wrap('<string>&nbsp;</string>')).message, /undefined entity &nbsp;/);
  const bare = faultOf(wrap('<string>fish & chips</string>'));
  t.is(bare.code, FaultCode.notWellFormed);
  t.regex(bare.message, /line 1, column 95: a bare "&"; write &amp;/);
  t.regex(faultOf(wrap('<string>&#0;</string>')).message, /malformed character entity &#0;/);
  t.regex(faultOf(wrap('<string>&#xD800;</string>')).message, /malformed character entity &#xD800;/);
});

test('a bare "&" is found outside CDATA sections only, and a body of many "&" in an unclosed section is answered at once', (t) => {
  // After a closed section, the "&" of the text is the bare one.
  t.regex(faultOf(wrap('<string><![CDATA[a & b]]> & c</string>')).message, /line 1, column 108: a bare "&"; write &amp;/);
  // Inside a section that is never closed, no "&" is bare: the fault is the unclosed element.
  const unclosed = faultOf(Buffer.from(`<?xml version="1.0"?>\n<methodCall><methodName>GetLoans</methodName><params><param><value><string><![CDATA[${'&'.repeat(400_000)}`));
  t.is(unclosed.code, FaultCode.notWellFormed);
  t.notRegex(unclosed.message, /a bare "&"/);
  t.regex(unclosed.message, /line 2, column 400084: unclosed tag: string/);
});

test('struct members stay data: __proto__ is a member, a repeated member is refused', (t) => {
  const [value] = call(wrap('<struct><member><name>__proto__</name><value><int>1</int></value></member></struct>')).params as [Record<string, unknown>];
  t.is(Object.getPrototypeOf(value), Object.prototype);
  t.deepEqual(Object.keys(value), ['__proto__']);
  t.is(Object.getOwnPropertyDescriptor(value, '__proto__')?.value, 1);
  const twice = '<struct><member><name>a</name><value>1</value></member><member><name>a</name><value>2</value></member></struct>';
  t.regex(faultOf(wrap(twice)).message, /member "a" appears twice/);
});

test('scalars are read strictly', (t) => {
  t.deepEqual(call(wrap('<int> 12 </int>')).params, [12]);
  t.deepEqual(call(wrap('<i8>9007199254740991</i8>')).params, [9007199254740991]);
  const refused: [string, RegExp][] = [
    ['<int>12abc</int>', /<int>12abc<\/int> is not an integer/],
    ['<i4></i4>', /is not an integer/],
    ['<i8>9007199254740993</i8>', /is not an integer this node can hold/],
    ['<int>1.5</int>', /is not an integer/],
    ['<boolean>true</boolean>', /a boolean is 0 or 1/],
    ['<double>1e999</double>', /is not a double/],
    ['<double>abc</double>', /is not a double/],
    ['<dateTime.iso8601>yesterday</dateTime.iso8601>', /is not a dateTime/],
    ['<base64>!!!</base64>', /not base64/],
    ['<nil>x</nil>', /<nil\/> is empty/],
    ['<float>1</float>', /<float> is not an XML-RPC type/],
    ['<int>1</int><int>2</int>', /holds 2 elements/],
    ['<array><value>1</value></array>', /exactly one <data>/],
    ['<array><data><int>1</int></data></array>', /only <value> belongs/],
    ['<struct><member><value>1</value></member></struct>', /one <name> and one <value>/],
    ['<string><b>bold</b></string>', /<b> inside .* holds only text/],
  ];
  for (const [value, message] of refused) {
    const fault = faultOf(wrap(value));
    t.is(fault.code, FaultCode.invalidRequest, value);
    t.regex(fault.message, message, value);
  }
});

test('malformed documents are refused as not well-formed, naming where', (t) => {
  const cases: [string | Buffer, number, RegExp][] = [
    ['<methodCall><methodName>M</methodName>', FaultCode.notWellFormed, /line 1, column 38: unclosed tag: methodCall/],
    ['<methodCall><methodName>M</methodCall>', FaultCode.notWellFormed, /line 1, column 38: unexpected close tag <\/methodCall>/],
    [wrap('<string>\u0001</string>'), FaultCode.notWellFormed, /line 1, column \d+: disallowed character U\+0001/],
    ['<methodCall/>\ntext', FaultCode.notWellFormed, /line 2, column \d+: text data outside of root node/],
    [Buffer.from([0x3c, 0x61, 0xff, 0x3e]), FaultCode.notWellFormed, /not UTF-8/],
    ['<?xml version="1.0" encoding="ISO-8859-1"?><methodCall/>', FaultCode.unsupportedEncoding, /unsupported encoding "ISO-8859-1"/],
    ['<!DOCTYPE m [<!ENTITY x "y">]><methodCall><methodName>&x;</methodName></methodCall>', FaultCode.invalidRequest, /a DOCTYPE declaration is not allowed/],
    ['<methodCall><methodName>M</methodName></methodCall><methodCall/>', FaultCode.notWellFormed, /only one root/],
    ['<methodResponse/>', FaultCode.invalidRequest, /found <methodResponse>/],
    ['<methodCall><params/></methodCall>', FaultCode.invalidRequest, /<methodName> is missing/],
    ['<methodCall><methodName>M</methodName><extra/></methodCall>', FaultCode.invalidRequest, /unexpected <extra>/],
    ['<methodCall>text<methodName>M</methodName></methodCall>', FaultCode.invalidRequest, /text where only elements belong/],
    ['<methodCall><methodName>M</methodName><params><param/></params></methodCall>', FaultCode.invalidRequest, /parameter 1 must hold exactly one <value>/],
    ['', FaultCode.notWellFormed, /the body is empty/],
  ];
  for (const [xml, code, message] of cases) {
    const fault = faultOf(xml);
    t.is(fault.code, code, String(xml));
    t.regex(fault.message, message, String(xml));
  }
});

test('nesting deeper than 32 values is refused', (t) => {
  const deep = (n: number) => '<array><data><value>'.repeat(n) + 'x' + '</value></data></array>'.repeat(n);
  t.notThrows(() => call(wrap(deep(30))));
  t.regex(faultOf(wrap(deep(40))).message, /nested more than 32 deep/);
});

test('a call with no <params> has no parameters', (t) => {
  t.deepEqual(call('<methodCall><methodName>system.listMethods</methodName></methodCall>'), { method: 'system.listMethods', params: [] });
});
