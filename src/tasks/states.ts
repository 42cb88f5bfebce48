// The states of a task, spelled as XenBEE spelled them, and the only ways from one to the next.
// Pure: a transition is checked here and stamped with its time, so that the engine (engine.ts)
// cannot skip a state or leave one without its time, and a task's record always tells how it went.
//
// Unlike XenBEE, `Running:Instance-Stopping` is really entered (every guest that ran is stopped in
// it), a reservation can expire, and a request that no transition allows is answered with the
// reason instead of being dropped.

import type { TaskState, TaskTime, TaskTimes } from '../db/types.js';

export type { TaskState, TaskTime, TaskTimes };

export const TASK_STATES: readonly TaskState[] = [
  'Pending:Reserved',
  'Pending:Confirmed',
  'Running:Stage-In',
  'Running:Instance-Starting',
  'Running:Executing',
  'Running:Instance-Stopping',
  'Running:Stage-Out',
  'Finished',
  'Failed',
  'Terminated',
];

/** The states a task ends in; nothing leaves them. */
export type DoneState = 'Finished' | 'Failed' | 'Terminated';

/** The times in the order a task reaches them. */
export const TASK_TIMES: readonly TaskTime[] = [
  'submit', 'confirm', 'stage-in-start', 'instance-start', 'execution-start', 'execution-done',
  'instance-stop', 'stage-out-start', 'finished', 'failed', 'terminated',
];

/** The time stamped on entering each state; execution-done is stamped when the job ends (jobEnded). */
const ENTERED: Readonly<Record<TaskState, TaskTime>> = {
  'Pending:Reserved': 'submit',
  'Pending:Confirmed': 'confirm',
  'Running:Stage-In': 'stage-in-start',
  'Running:Instance-Starting': 'instance-start',
  'Running:Executing': 'execution-start',
  'Running:Instance-Stopping': 'instance-stop',
  'Running:Stage-Out': 'stage-out-start',
  Finished: 'finished',
  Failed: 'failed',
  Terminated: 'terminated',
};

const DONE: ReadonlySet<TaskState> = new Set<TaskState>(['Finished', 'Failed', 'Terminated']);

/**
 * The forward steps. Any state that is not done may also go to Failed or Terminated: the engine
 * passes through Running:Instance-Stopping first whenever a guest may be running.
 */
const NEXT: Readonly<Record<TaskState, readonly TaskState[]>> = {
  'Pending:Reserved': ['Pending:Confirmed'],
  'Pending:Confirmed': ['Running:Stage-In'],
  'Running:Stage-In': ['Running:Instance-Starting'],
  'Running:Instance-Starting': ['Running:Executing', 'Running:Instance-Stopping'],
  'Running:Executing': ['Running:Instance-Stopping'],
  // After the guest stops: the outputs go out, or (an instance, which has none) the task ends.
  'Running:Instance-Stopping': ['Running:Stage-Out', 'Finished'],
  'Running:Stage-Out': ['Finished'],
  Finished: [],
  Failed: [],
  Terminated: [],
};

export function isDone(state: TaskState): state is DoneState {
  return DONE.has(state);
}

/** Whether a guest of the task may exist in this state (it is stopped before the task is done). */
export function mayHaveGuest(state: TaskState): boolean {
  return state === 'Running:Instance-Starting' || state === 'Running:Executing' || state === 'Running:Instance-Stopping';
}

/** Why the step is not allowed, or null. */
export function transitionProblem(from: TaskState, to: TaskState): string | null {
  if (isDone(from)) return `the task is already ${from}`;
  if (to === 'Failed' || to === 'Terminated' || NEXT[from].includes(to)) return null;
  return `a task cannot go from ${from} to ${to}`;
}

/** A task's state and times, as every record that moves through the states has them. */
export interface Staged {
  readonly state: TaskState;
  readonly times: TaskTimes;
}

export class TransitionError extends Error {
  override readonly name = 'TransitionError';
}

/** The task in state `to`, its entry time stamped; throws TransitionError for a step not allowed. */
export function advance<T extends Staged>(task: T, to: TaskState, at: Date): T {
  const problem = transitionProblem(task.state, to);
  if (problem !== null) throw new TransitionError(problem);
  return { ...task, state: to, times: { ...task.times, [ENTERED[to]]: at.toISOString() } };
}

/** The task with its job's end stamped (execution-done), once. */
export function jobEnded<T extends Staged>(task: T, at: Date): T {
  if (task.times['execution-done'] !== undefined) return task;
  return { ...task, times: { ...task.times, 'execution-done': at.toISOString() } };
}

