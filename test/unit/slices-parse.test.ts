import { Buffer } from 'node:buffer';
import test from 'ava';
import { DocumentError, parseSlicesDocument, type ParseOptions } from '../../src/slices/parse.js';
import { NO_GUEST_ATTRIBUTES, type SlicesDocument, type SliverSpec } from '../../src/slices/types.js';
import { ed25519KeyLine as key } from '../support/ssh-keys.js';

const NODE = 42;
const options: ParseOptions = { nodeId: NODE, maxBytes: 1 << 20 };

function parse(xml: string | Uint8Array, extra: Partial<ParseOptions> = {}): SlicesDocument {
  return parseSlicesDocument(xml, { ...options, ...extra });
}

function sliver(doc: SlicesDocument, name: string): SliverSpec {
  const found = doc.slivers.find((s) => s.name === name);
  if (!found) throw new Error(`no sliver ${name} in ${doc.slivers.map((s) => s.name).join(', ')}`);
  return found;
}

function slice(attrs: string, body: string, nodes: number[] = [NODE]): string {
  return `  <slice ${attrs}>\n    <timestamp value="1700000000"/>\n${nodes.map((n) => `    <node id="${n}"/>\n`).join('')}${body}  </slice>\n`;
}

function resource(name: string, value: string): string {
  return `    <resource name="${name}"><value>${value}</value></resource>\n`;
}

function doc(...parts: string[]): string {
  return `<?xml version="1.0" encoding="utf-8"?>\n<slices>\n${parts.join('')}</slices>\n`;
}

function throwsDocumentError(t: import('ava').ExecutionContext, xml: string | Uint8Array, pattern: RegExp, extra: Partial<ParseOptions> = {}): DocumentError {
  const error = t.throws(() => parse(xml, extra), { instanceOf: DocumentError })!;
  t.regex(error.message, pattern);
  return error;
}

test('the seed example becomes one sliver with its rspec, key and times', (t) => {
  const alice = key(1, 'alice@example.org');
  const result = parse(`<slices>
  <slice id="17" name="princeton_sirius" expiry="1893456000">
    <timestamp value="1700000000"/>
    <node id="42"/>
    <user person_id="7"/>
    <resource name="cpu_share"><value>32</value></resource>
    <key person_id="7" value="${alice}"/>
  </slice>
</slices>`);
  t.deepEqual(result.slivers, [{
    name: 'princeton_sirius', sliceId: 17, timestamp: 1700000000, expiry: 1893456000,
    rspec: { cpu_share: 32 }, initscript: null, vref: null, guest: NO_GUEST_ATTRIBUTES, keys: [alice], controllers: [],
    instantiation: 'plc-instantiated', unknownResources: {},
  }]);
  t.is(result.timestamp, 1700000000);
  t.is(result.nodeId, NODE);
  t.is(result.slicesSeen, 1);
  t.deepEqual(result.skipped, []);
  t.deepEqual(result.delegates, []);
  t.is(result.bwcapKbit, null);
});

test('resource names of both eras map onto canonical names and units', (t) => {
  const result = parse(doc(
    slice('id="1" name="seed_era"', [
      resource('nm_cpu_share', '32'), resource('nm_cpu_guaranteed_share', '200'), resource('nm_disk_quota', '5000000'),
      resource('nm_enabled', '1'), resource('nm_net_min_rate', '100'), resource('nm_net_max_rate', '2000'),
      resource('nm_net_exempt_min_rate', '10'), resource('nm_net_exempt_max_rate', '3000'), resource('nm_net_share', '4'),
    ].join('')),
    slice('id="2" name="later_era"', [
      resource('cpu_share', '8'), resource('cpu_pct', '25'), resource('disk_max', ' 7000000 '), resource('enabled', '0'),
      resource('net_i2_max_rate', '9000'), resource('net_max_kbyte', '100'), resource('vref', 'lxc-f14-x86_64'),
      resource('initscript', '#!/bin/sh\necho hello\n'),
    ].join('')),
  ));
  t.deepEqual(sliver(result, 'seed_era').rspec, {
    cpu_share: 32, cpu_pct: 20, disk_max: 5000000, enabled: 1, net_min_rate: 100, net_max_rate: 2000,
    net_i2_min_rate: 10, net_i2_max_rate: 3000, net_share: 4,
  });
  const later = sliver(result, 'later_era');
  t.deepEqual(later.rspec, { cpu_share: 8, cpu_pct: 25, disk_max: 7000000, enabled: 0, net_i2_max_rate: 9000, net_max_kbyte: 100 });
  t.is(later.vref, 'lxc-f14-x86_64');
  t.is(later.initscript, '#!/bin/sh\necho hello\n');
});

test('unknown resources are kept as written and do not stop the slice', (t) => {
  const result = parse(doc(slice('id="1" name="a_b"', resource('cpu_share', '2') + resource('gpu_count', ' two ') + resource('__proto__', 'x'))));
  const s = sliver(result, 'a_b');
  t.deepEqual(s.rspec, { cpu_share: 2 });
  t.is(s.unknownResources['gpu_count'], ' two ');
  t.is(Object.getOwnPropertyDescriptor(s.unknownResources, '__proto__')?.value, 'x');
  t.deepEqual(result.skipped, []);
});

test('only slices naming this node become slivers; the others are counted, not reported', (t) => {
  const result = parse(doc(
    slice('id="1" name="here_only"', '', [42]),
    slice('id="2" name="elsewhere"', '', [7, 8]),
    slice('id="3" name="here_second"', '', [7, 42]),
    slice('id="4" name="root"', '', [9]), // invalid, but not ours: nothing to say
  ));
  t.deepEqual(result.slivers.map((s) => s.name), ['here_only', 'here_second']);
  t.is(result.slicesSeen, 4);
  t.deepEqual(result.skipped, []);
});

test('delegates, controllers and the bandwidth cap are read', (t) => {
  const k1 = key(1);
  const k2 = key(2);
  const result = parse(`<slices timestamp="1700000500">
  <bwcap value="100000"/>
  <slice id="1" name="pl_web" instantiation="delegated">
    <timestamp value="1700000000"/>
    <node id="42"/>
    <controller name="del_ops"/>
    <controller name="del_ops"/>
    <controller name="root"/>
  </slice>
  <delegate name="del_ops" expiry="1800000000">
    <timestamp value="1700000100"/>
    <key value="${k1}"/>
    <key value="${k2}"/>
    <key value="${k1}"/>
  </delegate>
  <delegate name="del_new"><key value="${k2}"/></delegate>
</slices>`);
  t.is(result.bwcapKbit, 100000);
  t.is(result.timestamp, 1700000500);
  t.deepEqual(sliver(result, 'pl_web').controllers, ['del_ops']);
  t.is(sliver(result, 'pl_web').instantiation, 'delegated');
  t.deepEqual(result.delegates, [
    { name: 'del_ops', timestamp: 1700000100, expiry: 1800000000, keys: [k1, k2] },
    // Without its own timestamp a delegate carries the document's.
    { name: 'del_new', timestamp: 1700000500, expiry: null, keys: [k2] },
  ]);
  t.deepEqual(result.skipped, [{ what: 'controller "root" of slice "pl_web"', reason: '"root" is a reserved system account name' }]);
});

test('an unknown instantiation makes the slice invalid, with the allowed values named', (t) => {
  const result = parse(`<slices><slice id="1" name="pl_odd" instantiation="sometimes"><node id="42"/></slice></slices>`);
  t.deepEqual(result.slivers, []);
  t.is(result.skipped[0]!.reason, 'instantiation "sometimes" is not one of plc-instantiated, delegated');
});

test('a delegate named like a sliver of this node, or badly, is skipped', (t) => {
  const result = parse(doc(
    slice('id="1" name="pl_web"', ''),
    '  <delegate name="pl_web"><timestamp value="1"/></delegate>\n',
    '  <delegate name="Bad Name"><timestamp value="1"/></delegate>\n',
    '  <delegate name="del_ok"><timestamp value="-5"/></delegate>\n',
    '  <delegate name="del_fine"><timestamp value="5"/></delegate>\n',
    '  <delegate name="del_fine"><timestamp value="6"/></delegate>\n',
  ));
  t.deepEqual(result.delegates.map((d) => [d.name, d.timestamp]), [['del_fine', 5]]);
  t.deepEqual(result.skipped.map((s) => s.what), ['delegate "pl_web"', 'delegate "Bad Name"', 'delegate "del_ok"', 'delegate "del_fine"']);
  t.regex(result.skipped[0]!.reason, /also a slice on this node/);
  t.regex(result.skipped[1]!.reason, /not a valid account name/);
  t.regex(result.skipped[2]!.reason, /timestamp "-5"/);
  t.regex(result.skipped[3]!.reason, /appears again/);
});

test('the document timestamp comes from <timestamp>, else the newest slice, else 0', (t) => {
  t.is(parse(doc('  <timestamp value="1234"/>\n')).timestamp, 1234);
  const newest = parse(doc(
    '  <slice id="1" name="a_a"><timestamp value="100"/><node id="1"/></slice>\n',
    '  <slice id="2" name="b_b"><timestamp value="300"/><node id="2"/></slice>\n',
  ));
  t.is(newest.timestamp, 300);
  t.is(parse(doc()).timestamp, 0);
  // A slice without its own timestamp takes the document's.
  const inherited = parse(doc('  <timestamp value="777"/>\n  <slice id="5" name="no_ts"><node id="42"/></slice>\n'));
  t.is(sliver(inherited, 'no_ts').timestamp, 777);
});

test('keys are those of the slice users only, valid, deduplicated, in document order', (t) => {
  const [k1, k2, k3] = [key(1), key(2), key(3)];
  const result = parse(doc(slice('id="1" name="pl_keys"', `    <user person_id="7"/>
    <user person_id="8"/>
    <key person_id="8" value="${k2}"/>
    <key person_id="7" value="${k1}"/>
    <key person_id="9" value="${k3}"/>
    <key person_id="7" value="${k1}"/>
    <key person_id="7" value="ssh-ed25519 not*base64 x@y"/>
    <key person_id="8" value="${k1}&#10;${k3}"/>
    <key person_id="7" value="command=&quot;/bin/sh&quot; ${k3}"/>
    <key person_id="8" value="ssh-rsa ${k3.split(' ')[1]} mismatched@type"/>
`)));
  const s = sliver(result, 'pl_keys');
  t.deepEqual(s.keys, [k2, k1], 'the key of person 9, who is not a user, is left out');
  t.deepEqual(result.skipped.map((e) => e.what), [
    'key of person 7 in slice "pl_keys"', 'key of person 8 in slice "pl_keys"',
    'key of person 7 in slice "pl_keys"', 'key of person 8 in slice "pl_keys"',
  ]);
  t.regex(result.skipped[1]!.reason, /line break/);
  t.regex(result.skipped[3]!.reason, /does not hold a ssh-rsa key/);
});

test('each invalid slice is skipped with its reason and the rest of the document applies', (t) => {
  const cases: [string, string, RegExp][] = [
    ['id="1" name="root"', '', /reserved system account name/],
    ['id="2" name="Bad.Name"', '', /not a valid account name/],
    ['id="3"', '', /name is missing/],
    ['name="no_id"', '', /id is missing/],
    ['id="x7" name="bad_id"', '', /id "x7" is not a decimal integer/],
    ['id="5" name="bad_expiry" expiry="-1"', '', /expiry "-1"/],
    ['id="6" name="frac_expiry" expiry="3.5"', '', /expiry "3.5"/],
    ['id="7" name="bad_exp"', resource('cpu_share', '1e3'), /resource "cpu_share" value "1e3" is not a decimal integer/],
    ['id="8" name="bad_hex"', resource('nm_net_max_rate', '0x10'), /"0x10"/],
    ['id="9" name="bad_neg"', resource('disk_max', '-1'), /"-1"/],
    ['id="10" name="bad_empty"', resource('cpu_pct', ''), /value "" is not/],
    ['id="11" name="bad_range"', resource('enabled', '2'), /above its maximum/],
    ['id="12" name="bad_vref"', resource('vref', '../../etc'), /vref "..\/..\/etc" is neither an image name .* nor an http, https or file URI/],
    ['id="13" name="two_values"', '    <resource name="cpu_share"><value>1</value><value>2</value></resource>\n', /2 <value> elements/],
    ['id="14" name="bad_runtime"', resource('runtime', 'xen'), /runtime "xen" is not one of unix, lxc, qemu/],
    ['id="15" name="bad_size"', resource('instance_size', 'huge'), /instance_size "huge" is not one of small, medium, large/],
    ['id="16" name="bad_scheme"', resource('kernel', 'ftp://example.org/vmlinuz'), /kernel URI scheme "ftp:" is not one of http, https, file/],
    ['id="17" name="bad_vcpus"', resource('vcpus', '5000'), /"vcpus" is 5000, above its maximum 1024/],
  ];
  const result = parse(doc(
    slice('id="100" name="good_before"', ''),
    ...cases.map(([attrs, body]) => slice(attrs, body)),
    slice('id="101" name="good_after"', resource('cpu_share', '3')),
  ));
  t.deepEqual(result.slivers.map((s) => s.name), ['good_before', 'good_after']);
  t.is(result.skipped.length, cases.length);
  cases.forEach(([, , reason], i) => t.regex(result.skipped[i]!.reason, reason, `case ${i}: ${cases[i]![0]}`));
  t.is(result.skipped[0]!.what, 'slice "root" (id 1)');
  t.is(result.skipped[3]!.what, 'slice "no_id"');
});

test('a slice timestamp that is not an integer makes the slice invalid', (t) => {
  const result = parse(doc('  <slice id="1" name="ts_bad"><timestamp value="17.5"/><node id="42"/></slice>\n'));
  t.deepEqual(result.slivers, []);
  t.deepEqual(result.skipped, [{
    what: 'slice "ts_bad" (id 1)',
    reason: 'timestamp "17.5" is not a decimal integer >= 0',
    // the node keeps what it holds for ts_bad rather than destroying it over a bad entry
    held: { type: 'sliver', name: 'ts_bad', sliceId: 1 },
  }]);
});

test('a slice name given twice for this node applies once', (t) => {
  const result = parse(doc(
    slice('id="1" name="dup_name"', resource('cpu_share', '1')),
    slice('id="2" name="dup_name"', resource('cpu_share', '2')),
    slice('id="3" name="dup_name"', resource('cpu_share', '3'), [7]), // another node's: no clash
  ));
  t.deepEqual(result.slivers.map((s) => [s.name, s.sliceId, s.rspec['cpu_share']]), [['dup_name', 1, 1]]);
  t.is(result.skipped.length, 1);
  t.is(result.skipped[0]!.what, 'slice "dup_name" (id 2)');
  t.regex(result.skipped[0]!.reason, /appears again/);
});

test('unknown elements are ignored wherever they are', (t) => {
  const result = parse(doc(
    '  <announcement lang="en"><slice id="9" name="hidden"><node id="42"/></slice></announcement>\n',
    slice('id="1" name="fwd_compat"', '    <tag color="blue"><node id="1"/></tag>\n' + resource('cpu_share', '5')),
  ));
  t.deepEqual(result.slivers.map((s) => [s.name, s.rspec]), [['fwd_compat', { cpu_share: 5 }]]);
  t.is(result.slicesSeen, 1, 'a <slice> inside an unknown element is not a slice');
});

test('a DOCTYPE is refused, which also stops entity expansion attacks', (t) => {
  const billionLaughs = `<?xml version="1.0"?>
<!DOCTYPE slices [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<slices><slice id="1" name="&lol3;"><node id="42"/></slice></slices>`;
  const error = throwsDocumentError(t, billionLaughs, /^slices\.xml line 2 column 1: DOCTYPE is not allowed$/);
  t.is(error.line, 2);
  t.is(error.column, 1);
});

test('an entity other than the predefined ones is refused with its place', (t) => {
  t.notThrows(() => parse(doc('  <slice id="1" name="a&amp;b&#65;"/>\n')));
  const error = throwsDocumentError(t, '<slices>\n  <slice id="1" name="x&ext;"/>\n</slices>', /line 2 column 24: undefined entity &ext;/);
  t.deepEqual([error.line, error.column], [2, 24]);
});

test('malformed documents are refused with line and column', (t) => {
  throwsDocumentError(t, '<slices>\n  <slice id="1" name="a">\n    <node id="42"/>\n  </slic>\n</slices>', /^slices\.xml line 4 column 3: unexpected close tag <\/slic>/);
  throwsDocumentError(t, '<slices>\n  <slice id="1" name="a">\n    <node id="42"/>\n', /line 4 column 1: element <slice> is not closed/);
  throwsDocumentError(t, '<?xml version="1.0"?>\n<html><body>Service Unavailable</body></html>', /line 2 column 1: the root element is <html>, expected <slices>/);
  throwsDocumentError(t, '502 Bad Gateway', /line 1 column 1: text outside the root element: "502 Bad Gateway"/);
  throwsDocumentError(t, '', /line 1 column 1: document must contain a root element/);
  throwsDocumentError(t, '<slices>\n<bwcap value="lots"/>\n</slices>', /line 2 column 1: bwcap value "lots"/);
  throwsDocumentError(t, '<slices timestamp="yesterday"/>', /line 1 column 1: document timestamp "yesterday"/);
  // An "&" that begins no reference is reported where it is, not where the document ends.
  throwsDocumentError(t, '<slices>\n<timestamp value="1"/>\n<slice id="17" name="a&amp b"><node id="1"/></slice>\n\n</slices>\n',
    /line 3 column 23: "&" does not begin a reference \(write &amp; for a literal "&"\)/);
  // Text of the document in a message is quoted: its control characters never reach a terminal.
  const error = throwsDocumentError(t, Buffer.from('<?xml version="1.0" encoding="\u001b]2;x\u0007"?><slices/>'), /encoding "\\u001b\]2;x\\u0007" is not supported/);
  t.false(/[\u0000-\u001f]/.test(error.message));
});

test('a document over the size limit is refused before parsing', (t) => {
  const xml = doc(slice('id="1" name="a_b"', ''));
  const error = throwsDocumentError(t, Buffer.from(xml), /^feed: document is \d+ bytes, more than the limit of 100 bytes$/, { maxBytes: 100, source: 'feed' });
  t.is(error.line, null);
  throwsDocumentError(t, xml, /more than the limit of 100 bytes/, { maxBytes: 100 });
});

test('a document declared iso-8859-1 is decoded as Latin-1', (t) => {
  const xml = '<?xml version="1.0" encoding="iso-8859-1"?>\n<slices>\n' + slice('id="1" name="latin_one"',
    `    <user person_id="7"/>\n    <key person_id="7" value="${key(1, 'José@example.org')}"/>\n` + resource('motd', 'Grüße')) + '</slices>\n';
  const result = parse(Buffer.from(xml, 'latin1'));
  const s = sliver(result, 'latin_one');
  t.deepEqual(s.keys, [key(1, 'José@example.org')]);
  t.is(s.unknownResources['motd'], 'Grüße');
  // The same bytes without the declaration are not UTF-8: refused, with the place.
  const undeclared = Buffer.from(xml.replace(' encoding="iso-8859-1"', ''), 'latin1');
  throwsDocumentError(t, undeclared, /line \d+ column \d+: byte 0xe9 .* is not valid UTF-8/);
});

test('UTF-8 bytes are decoded as UTF-8', (t) => {
  const result = parse(Buffer.from(doc(slice('id="1" name="utf_eight"', resource('motd', 'Grüße ✓')))));
  t.is(sliver(result, 'utf_eight').unknownResources['motd'], 'Grüße ✓');
});

test('a libvirt slice carries its runtime, images and instance size; a vref may be a URI', (t) => {
  const result = parse(doc(slice('id="20" name="vm_one"', [
    resource('runtime', 'qemu'),
    resource('vref', 'https://images.example.org/debian-12.qcow2'),
    resource('kernel', 'vmlinuz-6.1'),
    resource('initrd', 'file:///srv/images/initrd.img'),
    resource('instance_size', ' medium '),
    resource('vcpus', '3'),
  ].join(''))));
  const vm = sliver(result, 'vm_one');
  t.is(vm.vref, 'https://images.example.org/debian-12.qcow2');
  t.deepEqual(vm.guest, { runtime: 'qemu', kernel: 'vmlinuz-6.1', initrd: 'file:///srv/images/initrd.img', size: 'medium' });
  t.is(vm.rspec['vcpus'], 3);
  t.deepEqual(vm.unknownResources, {});
});
