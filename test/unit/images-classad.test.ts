import test from 'ava';
import { cachedImagesClassad, classadString } from '../../src/images/classad.js';

test('the cached names make one CACHED_IMAGES line, sorted and without duplicates', (t) => {
  t.is(cachedImagesClassad(['vmlinuz-6.1', 'debian-12.qcow2', 'alpine.tar', 'debian-12.qcow2']), 'CACHED_IMAGES = "alpine.tar,debian-12.qcow2,vmlinuz-6.1"');
  // By code unit, not by locale: the same cache gives the same line on every node.
  t.is(cachedImagesClassad(['b', 'B', 'a', '_x', '1']), 'CACHED_IMAGES = "1,B,_x,a,b"');
  t.is(cachedImagesClassad(['only.img']), 'CACHED_IMAGES = "only.img"');
});

test('an empty cache gives an empty ClassAd string, not a missing attribute', (t) => {
  t.is(cachedImagesClassad([]), 'CACHED_IMAGES = ""');
});

test('backslash and double quote are escaped as ClassAd strings require', (t) => {
  t.is(classadString('plain'), '"plain"');
  t.is(classadString('say "hi"'), '"say \\"hi\\""');
  t.is(classadString('C:\\images\\'), '"C:\\\\images\\\\"');
  t.is(classadString(''), '""');
  t.is(cachedImagesClassad(['a"b', 'c\\d']), 'CACHED_IMAGES = "a\\"b,c\\\\d"');
});

test('a name the comma-separated list cannot hold is refused by name, not written ambiguously', (t) => {
  t.throws(() => cachedImagesClassad(['good.img', 'two,names']), { instanceOf: RangeError, message: /image name "two,names" cannot be a member of CACHED_IMAGES/ });
  t.throws(() => cachedImagesClassad(['line\nbreak']), { instanceOf: RangeError, message: /"line\\nbreak"/ });
  t.throws(() => cachedImagesClassad(['']), { instanceOf: RangeError, message: /image name ""/ });
});
