// The batcher without root: requests made together go in one commit, each caller gets its own
// account's outcome, requests made during a write wait for the next, and a failed write fails only
// the batch it was for.
import test from 'ava';
import type { AccountOutcome, BatchRequests, NewAccount } from '../../src/host/account-files/plan.js';
import { accountBatcher } from '../../src/runtimes/unix/account-batcher.js';

const account = (name: string): NewAccount => ({ name, gecos: 'nodemgr sliver', home: `/home/${name}`, shell: '/bin/bash', password: '*' });

function recordingCommit(fail: (requests: BatchRequests) => boolean = () => false) {
  const batches: BatchRequests[] = [];
  const commit = async (requests: BatchRequests): Promise<ReadonlyMap<string, AccountOutcome>> => {
    batches.push(requests);
    await new Promise((resolve) => setTimeout(resolve, 30)); // the write takes a while
    if (fail(requests)) throw new Error('disk full');
    const outcomes = new Map<string, AccountOutcome>();
    requests.creates.forEach((a, i) => outcomes.set(a.name, a.name.startsWith('bad') ? { kind: 'refused', reason: 'no', permanent: true } : { kind: 'created', uid: 100 + i, gid: 100 + i }));
    for (const name of requests.removes) outcomes.set(name, { kind: 'absent' });
    for (const change of requests.changes ?? []) outcomes.set(change.name, { kind: 'refused', reason: `changed ${change.login}`, permanent: false });
    return outcomes;
  };
  return { batches, commit };
}

test('requests of one moment are one commit, and each caller gets its own outcome', async (t) => {
  const { batches, commit } = recordingCommit();
  const batcher = accountBatcher(commit, { gatherMs: 5 });
  const lock = { name: 'd', shell: null, login: 'lock' } as const;
  const results = await Promise.all([
    batcher.create(account('a')), batcher.create(account('b')), batcher.remove('c'), batcher.create(account('bad')), batcher.change(lock),
  ]);
  t.is(batches.length, 1);
  t.deepEqual(batches[0], { creates: [account('a'), account('b'), account('bad')], removes: ['c'], changes: [lock] });
  t.deepEqual(results, [
    { kind: 'created', uid: 100, gid: 100 }, { kind: 'created', uid: 101, gid: 101 }, { kind: 'absent' },
    { kind: 'refused', reason: 'no', permanent: true }, { kind: 'refused', reason: 'changed lock', permanent: false },
  ]);
});

test('requests made while a batch is written go together in the next one', async (t) => {
  const { batches, commit } = recordingCommit();
  const batcher = accountBatcher(commit, { gatherMs: 1 });
  const first = batcher.create(account('a'));
  await new Promise((resolve) => setTimeout(resolve, 10)); // the first batch is being written
  const later = [batcher.create(account('b')), batcher.create(account('c')), batcher.remove('d')];
  await Promise.all([first, ...later]);
  t.deepEqual(batches.map((b) => [...b.creates.map((a) => a.name), ...b.removes]), [['a'], ['b', 'c', 'd']]);
});

test('a failed write fails every account of its batch, and the next batch is tried afresh', async (t) => {
  const { commit } = recordingCommit((requests) => requests.creates.some((a) => a.name === 'x'));
  const batcher = accountBatcher(commit, { gatherMs: 1 });
  const failed = await Promise.allSettled([batcher.create(account('x')), batcher.remove('y')]);
  t.deepEqual(failed.map((r) => r.status), ['rejected', 'rejected']);
  t.is(((failed[0] as PromiseRejectedResult).reason as Error).message, 'disk full');
  t.deepEqual(await batcher.create(account('z')), { kind: 'created', uid: 100, gid: 100 });
});
