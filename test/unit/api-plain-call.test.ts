// The plain-call reading of XML-RPC (src/api/codec.ts): what it reads must be what the parser
// reads; what it does not read is left to the parser, faults included.
import test from 'ava';
import { ApiFault } from '../../src/api/faults.js';
import { decodeCall, plainCall } from '../../src/api/codec.js';

/** The same call, made to go through the parser: a comment is outside the plain form. */
const throughParser = (xml: string) => decodeCall(Buffer.from(xml.replace('<methodCall>', '<methodCall><!-- parsed -->')));

const PLAIN: string[] = [
  '<?xml version="1.0"?>\n<methodCall><methodName>GetRSpec</methodName><params><param><value><string>pl_a</string></value></param></params></methodCall>',
  "<?xml version='1.0'?>\n<methodCall>\n<methodName>SetLoans</methodName>\n<params>\n<param>\n<value><string>a b\tc\nd]&gt;</string></value>\n</param>\n" +
    '<param><value><int>-5</int></value></param><param><value><i4>+7</i4></value></param><param><value><boolean>1</boolean></value></param>' +
    '<param><value><boolean>0</boolean></value></param><param><value><string></string></value></param>\n</params>\n</methodCall>\n',
  '<methodCall><methodName>Help</methodName></methodCall>',
  '<?xml version="1.0" encoding="UTF-8"?><methodCall><methodName>Help</methodName><params></params></methodCall>',
];

test('a call in the plain form is read as the parser reads it', (t) => {
  for (const xml of PLAIN.filter((x) => !x.includes('&gt;'))) {
    const plain = plainCall(xml);
    t.not(plain, null, xml);
    t.deepEqual(plain, throughParser(xml));
    t.deepEqual(decodeCall(Buffer.from(xml)), plain);
  }
  t.deepEqual(plainCall(PLAIN[1]!.replace(']&gt;', ']>')), throughParser(PLAIN[1]!));
});

const LEFT_TO_THE_PARSER: [string, string][] = [
  ['a reference', '<methodCall><methodName>GetRSpec</methodName><params><param><value><string>a&amp;b</string></value></param></params></methodCall>'],
  ['"]]>" in text', '<methodCall><methodName>GetRSpec</methodName><params><param><value><string>a]]>b</string></value></param></params></methodCall>'],
  ['a carriage return', '<methodCall><methodName>Help</methodName></methodCall>\r\n'],
  ['a control character', '<methodCall><methodName>GetRSpec</methodName><params><param><value><string>a\u0001</string></value></param></params></methodCall>'],
  ['a non-ASCII string', '<methodCall><methodName>GetRSpec</methodName><params><param><value><string>é</string></value></param></params></methodCall>'],
  ['an untyped value', '<methodCall><methodName>GetRSpec</methodName><params><param><value>pl_a</value></param></params></methodCall>'],
  ['an int of 16 digits', '<methodCall><methodName>X</methodName><params><param><value><int>1234567890123456</int></value></param></params></methodCall>'],
  ['a struct', '<methodCall><methodName>X</methodName><params><param><value><struct></struct></value></param></params></methodCall>'],
  ['mismatched tags', '<methodCall><methodName>X</methodName><params><param><value><int>1</i4></value></param></params></methodCall>'],
  ['two roots', '<methodCall><methodName>X</methodName></methodCall><methodCall><methodName>X</methodName></methodCall>'],
  ['a DOCTYPE', '<!DOCTYPE methodCall><methodCall><methodName>X</methodName></methodCall>'],
  ['an XML 1.1 declaration', '<?xml version="1.1"?><methodCall><methodName>X</methodName></methodCall>'],
  ['another encoding', '<?xml version="1.0" encoding="iso-8859-1"?><methodCall><methodName>X</methodName></methodCall>'],
  ['an empty method name', '<methodCall><methodName></methodName></methodCall>'],
];

for (const [what, xml] of LEFT_TO_THE_PARSER) {
  test(`left to the parser: ${what}`, (t) => {
    t.is(plainCall(xml), null);
  });
}

test('faults are the parser\'s', (t) => {
  const error = t.throws(() => decodeCall(Buffer.from(LEFT_TO_THE_PARSER[8]![1])), { instanceOf: ApiFault })!;
  t.regex(error.message, /malformed request: .*close tag/);
  const empty = t.throws(() => decodeCall(Buffer.from(LEFT_TO_THE_PARSER[13]![1])), { instanceOf: ApiFault })!;
  t.regex(empty.message, /<methodName> is empty/);
});
