// What a task's or instance's guest is: its name, and the guest definition the guest lifecycle
// boots. Pure.
//
// The names hold a dot ("task.3f2a9c1d", "instance.77b0e412"), which no account name has: a task's
// guest can never take the name of a sliver's, and each guest lifecycle tells its own leases by
// the name alone (addresses/address-book.ts, scopedAddressBook).
import { randomBytes } from 'node:crypto';
import type { TaskKind } from '../db/types.js';
import type { ExtraDisk, GuestBoot, GuestDefinition } from '../runtimes/libvirt/guest-definition.js';
import type { InstanceSize } from '../slices/types.js';
import type { Need } from './budget.js';
import type { TaskRuntime } from './xsdl-types.js';

export function guestNameOf(kind: TaskKind, taskId: string): string {
  return `${kind}.${taskId}`;
}

/** Whether a guest's name is a task's or an instance's (not a sliver's, nor a cluster node's: `vc.`). */
export function isOnDemandGuest(name: string): boolean {
  return name.startsWith('task.') || name.startsWith('instance.');
}

/** A new task id: 8 hex digits, not one of `taken`. */
export function newTaskId(taken: (id: string) => boolean): string {
  for (;;) {
    const id = randomBytes(4).toString('hex');
    if (!taken(id)) return id;
  }
}

/** A reservation's ticket: 128 random bits, as hex. */
export function newTicket(): string {
  return randomBytes(16).toString('hex');
}

/** Condor Cloud's sizes, in the budget's terms. */
export const SIZE_NEEDS: Readonly<Record<InstanceSize, Need>> = {
  small: { vcpus: 1, memoryBytes: 512 * 1024 ** 2 },
  medium: { vcpus: 2, memoryBytes: 1024 ** 3 },
  large: { vcpus: 4, memoryBytes: 2 * 1024 ** 3 },
};

export interface OnDemandGuestInput {
  readonly runtime: TaskRuntime;
  readonly boot: GuestBoot;
  readonly need: Need;
  readonly kernelArgs: readonly string[];
  /** How long its agent has to answer after the boot (task_start_timeout). */
  readonly startTimeoutMs: number;
  /** A virtual machine's staging disks. */
  readonly extraDisks?: readonly ExtraDisk[];
}

/** The guest of a task or instance: one interface from the pool, its agent, ready when the agent answers. */
export function onDemandDefinition(input: OnDemandGuestInput): GuestDefinition {
  return {
    kind: input.runtime,
    boot: input.boot,
    size: 'small',
    // The need overrides the size's shape (vcpus; mem_max in KiB).
    limits: { vcpus: input.need.vcpus, mem_max: Math.ceil(input.need.memoryBytes / 1024) },
    interfaces: 1,
    kernelArgs: input.kernelArgs,
    agent: true,
    readiness: { by: 'agent', timeoutMs: input.startTimeoutMs },
    ...(input.extraDisks === undefined || input.extraDisks.length === 0 ? {} : { extraDisks: input.extraDisks }),
  };
}
