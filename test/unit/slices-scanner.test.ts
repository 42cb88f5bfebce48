// The plain-subset scanner (src/slices/scanner.ts) against saxes: where it reads a document, it must
// read it into exactly what saxes's reading gives; where it cannot vouch for a document, it must
// give up, so that saxes reads it and names the fault.
import test from 'ava';
import { generateSlicesXml } from '../../bench/lib/generate-slices.js';
import { finishDocument } from '../../src/slices/gathered.js';
import { DocumentError, parseSlicesDocument, readWithSaxes } from '../../src/slices/parse.js';
import { readPlainDocument } from '../../src/slices/scanner.js';
import { ed25519KeyLine as key } from '../support/ssh-keys.js';

const NODE = 42;

function bothReadings(xml: string, nodeId = NODE) {
  const plain = readPlainDocument(xml, 'slices.xml', nodeId);
  return { plain: plain === null ? null : finishDocument(plain, nodeId), saxes: finishDocument(readWithSaxes(xml, 'slices.xml', nodeId), nodeId) };
}

test('generated documents: the scanner reads them, into what saxes reads', (t) => {
  for (const seed of [1, 2, 3]) {
    const xml = generateSlicesXml({ slices: 300, nodeId: NODE, onNodeFraction: 0.2, seed });
    const { plain, saxes } = bothReadings(xml);
    t.not(plain, null, `seed ${seed}: the scanner gave up on a generated document`);
    t.deepEqual(plain, saxes, `seed ${seed}`);
    t.true(saxes.slivers.length > 0 && saxes.slicesSeen === 300);
  }
});

test('slices of other nodes in forms the quick skip does not take are read element by element, alike', (t) => {
  const k = key(3, 'carol@example.org');
  const xml = `<?xml version='1.0' encoding='utf-8' standalone='yes'?>
<!-- fleet document -->
<slices timestamp="1700000900">
  <slice id="1" name="other_spaced" >
    <timestamp value = "1700000950" />
    <node id="7"/><node   id="8" />
    <resource name="cpu_share"><value> 12 </value></resource>
  </slice>
  <slice id="2" name="other_padded"><timestamp value="01700000960"/><node id="042"/><user person_id="3"/>
    <key person_id="3" value="${k}"/></slice>
  <slice id="3" name="other_bad_node"><timestamp value="1700000970"/><node id="x"/></slice>
  <slice id="4" name="mine" expiry="1893456000"><timestamp value="1700000980"/><node id="9"/><node id="42"/>
    <user person_id="3"/><key person_id="3" value="${k}"/><unknown a="1"><slice id="9"/></unknown>
    <resource name="cpu_share"><value>32</value></resource><controller name="del_x"/></slice>
  <slice id="5" name="other_two_timestamps"><timestamp value="1700000990"/><timestamp value="1700000991"/><node id="1"/></slice>
  <slice id="6" name="mine_empty"><node id="42"/></slice>
  <delegate name="del_x"><key value="${k}"/></delegate>
  <bwcap value="100000"/>
</slices>
<!-- end -->
`;
  const { plain, saxes } = bothReadings(xml);
  t.not(plain, null);
  t.deepEqual(plain, saxes);
  t.deepEqual(saxes.slivers.map((s) => s.name).sort(), ['mine', 'mine_empty', 'other_padded']);
  t.is(saxes.slicesSeen, 6);
});

test('the newest slice timestamp of other nodes is the version of a document without its own', (t) => {
  const xml = '<slices><slice id="1" name="a"><timestamp value="1700000500"/><node id="1"/></slice><slice id="2" name="b"><node id="42"/></slice></slices>';
  const { plain, saxes } = bothReadings(xml);
  t.deepEqual(plain, saxes);
  t.is(plain?.timestamp, 1700000500);
  t.is(plain?.slivers[0]?.timestamp, 1700000500);
});

// Each is either not well-formed or outside the subset: the scanner leaves it to saxes.
const NOT_VOUCHED: [string, string][] = [
  ['a duplicate attribute', '<slices><slice id="1" id="2"><node id="42"/></slice></slices>'],
  ['a duplicate attribute in a slice of another node', '<slices><slice id="1"><node id="7" id="8"/></slice></slices>'],
  ['a mismatched end tag', '<slices><slice id="1"><node id="7"/></slic></slices>'],
  ['a mismatched end tag after a plain slice', '<slices><slice id="1"><node id="7"/></slice></slice></slices>'],
  ['an unclosed root', '<slices><slice id="1"><node id="7"/></slice>'],
  ['a second root', '<slices/><slices/>'],
  ['text outside the root', '<slices/>x'],
  ['a DOCTYPE', '<!DOCTYPE slices []><slices/>'],
  ['a reference', '<slices><slice id="1" name="a&amp;b"><node id="7"/></slice></slices>'],
  ['a CDATA section', '<slices><slice id="1"><resource name="x"><value><![CDATA[1]]></value></resource><node id="7"/></slice></slices>'],
  ['"--" in a comment', '<slices><!-- a -- b --></slices>'],
  ['a processing instruction', '<slices><?pi x?></slices>'],
  ['a control character', '<slices><slice id="1" name="a\u0001"><node id="7"/></slice></slices>'],
  ['a carriage return', '<slices>\r\n</slices>'],
  ['a tab in an attribute value', '<slices><slice id="1" name="a\tb"><node id="7"/></slice></slices>'],
  ['"<" in an attribute value', '<slices><slice id="1"><node id="7"/><key value="a<b"/></slice></slices>'],
  ['an unquoted attribute', '<slices><slice id=1><node id="7"/></slice></slices>'],
  ['an XML 1.1 declaration', '<?xml version="1.1"?><slices/>'],
  ['a declaration not at the start', ' <?xml version="1.0"?><slices/>'],
  ['a character beyond U+FFFF', '<slices><slice id="1" name="\u{1f600}"><node id="7"/></slice></slices>'],
  ['a root other than <slices>', '<document/>'],
  ['an unreadable document timestamp', '<slices timestamp="soon"/>'],
  ['no element at all', '<!-- nothing -->'],
];

for (const [what, xml] of NOT_VOUCHED) {
  test(`left to saxes: ${what}`, (t) => {
    t.is(readPlainDocument(xml, 'slices.xml', NODE), null);
  });
}

test('a document the scanner leaves to saxes is rejected with saxes\'s reason and place', (t) => {
  const error = t.throws(() => parseSlicesDocument('<slices>\n  <slice id="1"><node id="7" id="8"/></slice>\n</slices>', { nodeId: NODE, maxBytes: 1 << 20 }), { instanceOf: DocumentError })!;
  t.regex(error.message, /^slices\.xml line 2 column \d+: .*duplicate attribute/);
  t.is(error.line, 2);
});
