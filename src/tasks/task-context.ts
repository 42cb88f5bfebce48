// What a task's runner works with: its records, the on-demand guests' lifecycle, the node's
// settings for tasks, and the clock. The engine (engine.ts) makes one for all its runners.
import type { AddressLease, TaskRecord } from '../db/types.js';
import type { Logger } from '../log.js';
import type { AgentError, ExecRequest, ExecState, GuestAgent } from '../runtimes/libvirt/guest-agent.js';
import type { GuestDefinition, GuestKind } from '../runtimes/libvirt/guest-definition.js';
import type { OwnedGuest } from '../runtimes/libvirt/guests.js';
import type { GuestStatus } from '../runtimes/types.js';
import type { TaskBook } from './task-book.js';

export type { AgentError, ExecRequest, ExecState, GuestAgent };

/** What the engine asks of the guest lifecycle of the on-demand guests (guests.ts serves it). */
export interface TaskGuests {
  check(definition: GuestDefinition): void;
  list(options?: { readOnly?: boolean }): Promise<{ owned: OwnedGuest[] }>;
  create(name: string, definition: GuestDefinition): Promise<void>;
  start(name: string, definition: GuestDefinition): Promise<void>;
  stop(name: string, kind: GuestKind): Promise<void>;
  destroy(name: string, kind: GuestKind): Promise<void>;
  status(name: string): Promise<GuestStatus | null>;
  agentFor(name: string): Promise<GuestAgent | null>;
}

export interface TaskSettings {
  readonly taskDir: string;
  readonly startTimeoutMs: number;
  readonly silenceTimeoutMs: number;
  readonly wallTimeLimitMs: number;
  readonly reservationTtlMs: number;
  readonly stageMaxBytes: number;
  readonly defaultVcpus: number;
  readonly defaultMemoryBytes: number;
  /** The largest XSDL document accepted, in bytes. */
  readonly xsdlMaxBytes: number;
  /** How often a running job's state and its guest's are asked. */
  readonly pollMs: number;
}

export interface TaskContext {
  readonly book: TaskBook;
  readonly guests: TaskGuests;
  readonly leasesOf: (guest: string) => readonly AddressLease[];
  /** The path of the image cache's entry of that name, or null. */
  readonly cachedFile: (name: string) => string | null;
  readonly settings: TaskSettings;
  readonly logger: Logger;
  readonly now: () => Date;
}

/** How a task is named in logs and messages: "task 3f2a9c1d". */
export function describeTask(task: Pick<TaskRecord, 'kind' | 'task_id'>): string {
  return `${task.kind} ${task.task_id}`;
}
