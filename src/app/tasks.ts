// The on-demand work made from the configuration: its own guest lifecycle (its guests' files under
// task_dir, its own leases of the node's address pool, its own libvirt connections), the engine over
// the tasks' records, and what the capacity budget counts of the slivers.
import { availableParallelism, totalmem } from 'node:os';
import { basename, join, resolve as resolvePath } from 'node:path';
import type { AddressBook } from '../addresses/address-book.js';
import type { Config } from '../config/config.js';
import type { DatabaseStore } from '../db/store.js';
import type { NodeDatabase } from '../db/types.js';
import type { ImageCache } from '../images/cache.js';
import type { Logger } from '../log.js';
import type { Desired } from '../reconcile/desired.js';
import type { ImageSource } from '../runtimes/libvirt/guest-definition.js';
import type { GuestLifecycle } from '../runtimes/libvirt/guests.js';
import { createOnDemandGuests } from './factories.js';
import { guestShape } from '../runtimes/libvirt/shape.js';
import type { BudgetUse } from '../tasks/budget.js';
import { createTaskEngine, type TaskEngine } from '../tasks/engine.js';
import { jobOf } from '../tasks/runner.js';
import { isDone } from '../tasks/states.js';
import { diskFormatOf } from '../tasks/steps.js';
import { taskBook } from '../tasks/task-book.js';
import { isOnDemandGuest } from '../tasks/task-guest.js';

/** How often a running job is asked about, and reservations and unfinished tasks looked over. */
const POLL_MS = 1_000;
const TICK_MS = 5_000;

export function tasksGuestDir(config: Config): string {
  return join(config.taskDir, 'guests');
}

/** The images a guest of a task boots: cache entries by name or URI, and files its stage-in fetched by their path. */
function taskImageSource(images: ImageSource, spoolRoot: string): ImageSource {
  return {
    async resolve(ref, type) {
      if (!ref.startsWith('/')) return images.resolve(ref, type);
      // Only bootOf makes paths, always normal ones: "spool/../../x" must not pass for a spool file.
      if (!ref.startsWith(`${spoolRoot}/`) || resolvePath(ref) !== ref) throw new Error(`${ref} is not a file of a task's spool`);
      return { name: basename(ref), path: ref, format: type === 'image' ? await diskFormatOf(ref) : 'raw' };
    },
  };
}

/** What libvirt slivers hold of the capacity budget: the shape their records ask for. */
export function sliverUses(desired: Desired): BudgetUse[] {
  return desired.specs.flatMap((spec) => {
    if (spec.guest === null) return [];
    const shape = guestShape(spec.rspec, spec.guest.size);
    return shape.ok ? [{ holder: `sliver ${spec.name}`, vcpus: shape.shape.vcpus, memoryBytes: shape.shape.memoryKiB * 1024 }] : [];
  });
}

/** The cache entries that tasks and instances not yet done boot from (the cache keeps them). */
export function taskImagesInUse(db: NodeDatabase): string[] {
  const refs: string[] = [];
  for (const task of Object.values(db.tasks)) {
    if (isDone(task.state)) continue;
    for (const ref of [task.image, task.kernel, task.initrd]) if (ref !== null) refs.push(ref);
    try {
      const job = jobOf(task);
      for (const part of [job?.instance.kernel, job?.instance.initrd, job?.instance.image]) {
        if (part?.uri.kind === 'cache') refs.push(part.uri.name);
      }
    } catch {
      // A document that no longer parses boots nothing of the cache.
    }
  }
  return refs;
}

export interface TaskParts {
  readonly store: DatabaseStore;
  readonly images: ImageCache;
  readonly addresses: AddressBook;
  readonly desired: () => Desired;
  /** What virtual clusters hold of the capacity budget. */
  readonly clusterUses: () => readonly BudgetUse[];
  readonly logger: Logger;
  readonly now: () => Date;
}

export function createTaskGuests(config: Config, parts: Pick<TaskParts, 'images' | 'addresses' | 'logger' | 'now'>): GuestLifecycle {
  return createOnDemandGuests(config, parts.logger, {
    guestDir: tasksGuestDir(config), readyTimeoutMs: config.taskStartTimeoutMs, images: taskImageSource(parts.images, join(config.taskDir, 'spool')),
    addresses: parts.addresses, owns: isOnDemandGuest, now: parts.now,
  });
}

export function createTasks(config: Config, parts: TaskParts, guests: GuestLifecycle): TaskEngine {
  const { store, images, addresses, logger, now } = parts;
  return createTaskEngine({
    book: taskBook(store),
    guests,
    leasesOf: (guest) => addresses.leasesOf(guest),
    cachedFile: (name) => images.list().find((e) => e.name === name)?.path ?? null,
    settings: {
      taskDir: config.taskDir,
      startTimeoutMs: config.taskStartTimeoutMs,
      silenceTimeoutMs: config.taskSilenceTimeoutMs,
      wallTimeLimitMs: config.taskWallTimeLimitMs,
      reservationTtlMs: config.taskReservationTtlMs,
      stageMaxBytes: config.taskStageMaxBytes,
      defaultVcpus: config.taskDefaultVcpus,
      defaultMemoryBytes: config.taskDefaultMemoryBytes,
      xsdlMaxBytes: config.apiMaxRequestBytes,
      pollMs: POLL_MS,
    },
    logger,
    now,
    host: () => ({ vcpus: availableParallelism(), memoryBytes: totalmem() }),
    factors: { cpu: config.cpuOvercommit, memory: config.memOvercommit },
    sliverUses: () => [...sliverUses(parts.desired()), ...parts.clusterUses()],
    tickMs: TICK_MS,
  });
}
