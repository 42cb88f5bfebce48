// A virtual cluster's name is taken when its boot starts, not when its record is written after the
// repository's image has been fetched: two boots of one name at once are one boot and a refusal.
import test from 'ava';
import type { ClusterRecord } from '../../src/db/types.js';
import { createLogger } from '../../src/log.js';
import type { ClusterContext } from '../../src/clusters/cluster-context.js';
import { createClusterEngine } from '../../src/clusters/engine.js';
import { VcRepositoryError } from '../../src/clusters/repository.js';
import { TaskRequestError } from '../../src/tasks/requests.js';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmHbDE7U6FBPa0JnL1BqQm3eQnmRBpFE0cT5d8bGGgX user@host';
const ALICE = { owner: 'uid:1000', root: false };
const BOB = { owner: 'uid:1001', root: false };

test('a second boot of a name whose boot is under way is refused; the name is free again once that boot ends', async (t) => {
  const records = new Map<string, ClusterRecord>();
  let release: (() => void) | null = null;
  let prepared = 0;
  const unused = () => { throw new Error('not reached in this test'); };
  const ctx = {
    book: { get: (name: string) => records.get(name) ?? null, all: () => [...records.values()], put: unused, remove: unused },
    // The repository's image is being fetched until the test lets it fail.
    repository: {
      list: async () => [],
      prepare: (image: string) => {
        prepared++;
        return new Promise((_resolve, reject) => (release = () => reject(new VcRepositoryError('not-found', `no image ${image}`))));
      },
    },
    guests: {}, networks: {}, addresses: {}, inject: unused, free: unused, macsInUse: () => [],
    settings: {}, logger: createLogger({ level: 'error', format: 'text' }), now: () => new Date(),
  } as unknown as ClusterContext;
  const engine = createClusterEngine(ctx);
  const request = { image: 'rocks', cpus: 0, name: 'vc-lab', key: KEY, mem: null };

  const first = engine.boot(ALICE, request);
  const second = await t.throwsAsync(engine.boot(BOB, request), { instanceOf: TaskRequestError });
  t.is(second!.message, 'a cluster named "vc-lab" is being booted already');
  t.is(prepared, 1, 'the second never reached the repository');

  release!();
  await t.throwsAsync(first, { message: /no image rocks/ });
  const third = engine.boot(BOB, request);
  await new Promise((resolve) => setImmediate(resolve));
  t.is(prepared, 2, 'once the first ended, its name could be booted again');
  release!();
  await t.throwsAsync(third, { message: /no image rocks/ });
});
