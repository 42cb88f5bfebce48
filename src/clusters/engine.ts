// The node's virtual clusters (pragma_boot's verbs): repository, boot, list, shutdown, clean. A
// cluster is its record, found by its exact name, never by matching names as pragma did; it is its
// owner's and root's. After a restart a cluster whose boot was cut short is rolled back whole.
import type { ClusterRecord } from '../db/types.js';
import type { BudgetUse } from '../tasks/budget.js';
import { TaskRequestError, type Requester } from '../tasks/requests.js';
import { ImageError } from '../images/index.js';
import { describeError, PermanentError } from '../util/errors.js';
import { VcRepositoryError } from './repository.js';
import { VcInError } from './vc-in.js';
import { bootCluster, newClusterName, removeCluster, type BootRequest } from './boot.js';
import type { ClusterBook, ClusterContext } from './cluster-context.js';

export interface ClusterView extends ClusterRecord {
  /** Whether each node's domain runs, by node name. */
  readonly running: Readonly<Record<string, boolean>>;
}

export interface ClusterEngine {
  repository(): Promise<{ readonly name: string; readonly description: string }[]>;
  boot(who: Requester, request: BootRequest): Promise<ClusterRecord>;
  list(who: Requester, name: string | null): Promise<ClusterView[]>;
  shutdown(who: Requester, name: string): Promise<ClusterRecord>;
  clean(who: Requester, name: string): Promise<ClusterRecord>;
  /** Rolls back the clusters a restart cut short in their boot. */
  recover(): Promise<void>;
}

/** What clusters hold of the capacity budget: every node, from the boot until clean. */
export function clusterUses(clusters: readonly ClusterRecord[]): BudgetUse[] {
  return clusters.flatMap((c) => c.nodes.map((n) => ({ holder: `cluster ${c.name} ${n.name}`, vcpus: n.vcpus, memoryBytes: n.memory_kib * 1024 })));
}

function owned(book: ClusterBook, who: Requester, name: string): ClusterRecord {
  const cluster = book.get(name);
  if (cluster === null) throw new TaskRequestError('unknown', `no cluster "${name}" on this node`);
  if (!who.root && who.owner !== cluster.owner) throw new TaskRequestError('owner', `cluster ${name} belongs to another owner`);
  return cluster;
}

/**
 * What the caller can fix is the request's fault: a PermanentError of the boot (capacity, name, an
 * image that cannot be used), a description that is invalid or missing, an image the cache refuses.
 * A repository or download that failed is the node's.
 */
function asRequestError(error: unknown): unknown {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof PermanentError) return new TaskRequestError(/^not enough (capacity|memory)/.test(message) ? 'capacity' : 'invalid', message);
  if (error instanceof VcInError) return new TaskRequestError('invalid', message);
  if (error instanceof VcRepositoryError && error.kind !== 'failed') return new TaskRequestError(error.kind === 'not-found' ? 'unknown' : 'invalid', message);
  if (error instanceof ImageError && error.kind !== 'failed') return new TaskRequestError('invalid', message);
  return error;
}

export function createClusterEngine(ctx: ClusterContext): ClusterEngine {
  const { book, guests, logger } = ctx;
  /** The names of the boots in progress. */
  const booting = new Set<string>();
  const runningOf = async (cluster: ClusterRecord) => {
    const states = await Promise.all(cluster.nodes.map(async (n) => [n.name, (await guests.status(n.guest))?.state === 'running'] as const));
    return Object.fromEntries(states);
  };
  return {
    repository: () => ctx.repository.list(),

    async boot(who, request) {
      // The name is taken here, before the first wait (the repository's image is fetched before
      // the record is written): two boots of one name at once would otherwise both go on, and one's
      // rollback remove the other's guests.
      const name = request.name ?? newClusterName((n) => book.get(n) !== null || booting.has(n));
      if (booting.has(name)) throw new TaskRequestError('invalid', `a cluster named "${name}" is being booted already`);
      booting.add(name);
      try {
        return await bootCluster(ctx, who.owner, { ...request, name });
      } catch (error) {
        throw asRequestError(error);
      } finally {
        booting.delete(name);
      }
    },

    async list(who, name) {
      const clusters = name === null ? book.all().filter((c) => who.root || c.owner === who.owner) : [owned(book, who, name)];
      const sorted = clusters.sort((a, b) => a.name.localeCompare(b.name));
      return Promise.all(sorted.map(async (c) => ({ ...c, running: await runningOf(c) })));
    },

    async shutdown(who, name) {
      const cluster = owned(book, who, name);
      if (cluster.state === 'booting') throw new TaskRequestError('state', `cluster ${name} is booting; shut it down once it runs`);
      // Computes first, then the frontend they depend on; each asked (ACPI), then powered off after a grace.
      for (const node of [...cluster.nodes].reverse()) await guests.stop(node.guest, 'qemu');
      const stopped = { ...cluster, state: 'stopped' as const };
      await book.put(stopped);
      logger.info('cluster shut down', { cluster: name });
      return stopped;
    },

    async clean(who, name) {
      const cluster = owned(book, who, name);
      const running = Object.entries(await runningOf(cluster)).filter(([, up]) => up).map(([node]) => node);
      if (running.length > 0) throw new TaskRequestError('state', `cluster ${name} has nodes running (${running.join(', ')}); shut it down first`);
      if (cluster.state === 'booting') throw new TaskRequestError('state', `cluster ${name} is booting`);
      await removeCluster(ctx, cluster, `clean by ${who.owner}`);
      return cluster;
    },

    async recover() {
      for (const cluster of book.all().filter((c) => c.state === 'booting')) {
        try {
          await removeCluster(ctx, cluster, 'its boot was interrupted by a restart: rolled back');
        } catch (error) {
          logger.warn('cluster not rolled back', { cluster: cluster.name, error: describeError(error) });
        }
      }
    },
  };
}
