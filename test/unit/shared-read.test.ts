// One read for the callers that ask in the same turn of the event loop, started after that turn.
import test from 'ava';
import { sharedRead } from '../../src/util/shared-read.js';

test('callers of one turn share a read; a caller after it has started gets a later read', async (t) => {
  const events: string[] = [];
  let reads = 0;
  const read = sharedRead(async () => {
    reads++;
    events.push(`read ${reads}`);
    return reads;
  });
  const first = read();
  events.push('asked twice');
  const second = read();
  t.is(first, second, 'the same read');
  t.deepEqual(await Promise.all([first, second]), [1, 1]);
  t.deepEqual(events, ['asked twice', 'read 1'], 'the read starts after the turn in which it was asked for');
  t.is(await read(), 2, 'a later caller, a later read');
});

test('a read that fails fails its callers, and the next caller reads again', async (t) => {
  let calls = 0;
  const read = sharedRead(async () => {
    calls++;
    if (calls === 1) throw new Error('EIO');
    return 'ok';
  });
  await t.throwsAsync(Promise.all([read(), read()]), { message: 'EIO' });
  t.is(await read(), 'ok');
});
