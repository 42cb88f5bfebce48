// Who is calling: the mapping of a uid to root, an account, or nobody. (The uid behind a TCP
// connection: tcp-client-uid.test.ts.)
import test from 'ava';
import { callerOf } from '../../src/api/identity.js';

test('a uid is root, the account that has it, or nobody', (t) => {
  const accounts = new Map([[40123, { name: 'pl_web', kind: 'sliver' as const }], [40124, { name: 'del_ctrl', kind: 'delegate' as const }]]);
  const of = (uid: number) => callerOf(uid, (u) => accounts.get(u) ?? null);
  t.deepEqual(of(0), { uid: 0, kind: 'root', name: null });
  t.deepEqual(of(40123), { uid: 40123, kind: 'sliver', name: 'pl_web' });
  t.deepEqual(of(40124), { uid: 40124, kind: 'delegate', name: 'del_ctrl' });
  t.deepEqual(of(1000), { uid: 1000, kind: 'nobody', name: null });
});
