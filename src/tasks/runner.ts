// One task's way through its states, from wherever its record says it is: a new confirm starts at
// Pending:Confirmed, a restart goes on from the state the task had reached. Every state's work is
// in steps.ts; here are the order, the record written at each step, the watch over a running job,
// and the one way every task ends badly: its guest stopped in Running:Instance-Stopping, then
// Failed or Terminated with the reason.
import { setTimeout as delay } from 'node:timers/promises';
import type { TaskRecord, TaskState } from '../db/types.js';
import { killRequest } from '../runtimes/libvirt/guest-agent.js';
import { describeError, PermanentError } from '../util/errors.js';
import { signalName } from './job.js';
import { makeSpool, removeFetched, spoolOf } from './spool.js';
import { advance, isDone, jobEnded, mayHaveGuest } from './states.js';
import { agentOf, gatherOutputs, readOutputs, stageIn, stageOut, startGuest, startJob, usesStagingDisks } from './steps.js';
import { describeTask, type TaskContext } from './task-context.js';
import { parseXsdl } from './xsdl.js';
import type { XsdlJob } from './xsdl-types.js';

/** Why a runner stops without a change to its task: the daemon is stopping; a restart goes on. */
export class DaemonStopping extends Error {
  override readonly name = 'DaemonStopping';
}

/** How a task ends badly: the state and the reason. */
class TaskEnd extends Error {
  constructor(readonly to: 'Failed' | 'Terminated', reason: string) {
    super(reason);
  }
}

const INTERRUPTED = 'interrupted by a restart';

/** The task's XSDL document, parsed again (it was checked at its confirm). */
export function jobOf(task: TaskRecord): XsdlJob | null {
  return task.xsdl === null ? null : parseXsdl(task.xsdl, { maxBytes: Number.MAX_SAFE_INTEGER, source: `${describeTask(task)} XSDL` });
}

export async function runTask(ctx: TaskContext, id: string, signal: AbortSignal): Promise<void> {
  const first = ctx.book.get(id);
  if (first === null) return;
  let task = first;
  const job = jobOf(task);
  const spool = spoolOf(ctx.settings.taskDir, id);
  /** The states this runner entered: any other it meets was reached before a restart. */
  const entered = new Set<TaskState>();
  /** Said of a task that ends well but not by its job (an instance powered off from inside). */
  let endNote: string | null = null;
  // A terminate writes `terminating` into the book while this runner works: every write keeps it.
  const pending = () => ctx.book.get(id)?.terminating ?? task.terminating;
  const move = async (to: TaskState, change: Partial<TaskRecord> = {}) => {
    task = advance({ ...task, terminating: pending(), ...change }, to, ctx.now());
    entered.add(to);
    await ctx.book.put(task);
    ctx.logger.info('task state', { task: id, kind: task.kind, state: to, ...(task.reason === null ? {} : { reason: task.reason }) });
  };
  const save = async (change: Partial<TaskRecord>) => {
    task = { ...task, terminating: pending(), ...change };
    await ctx.book.put(task);
  };
  try {
    while (!isDone(task.state)) {
      // Whatever a terminate or an earlier failure decided is carried out first.
      const latest = ctx.book.get(id)?.terminating ?? null;
      if (latest !== null) throw new TaskEnd('Terminated', latest);
      if (task.state === 'Running:Instance-Stopping' && task.reason !== null) throw new TaskEnd('Failed', task.reason);
      if (signal.aborted) throw signal.reason;
      switch (task.state) {
        case 'Pending:Reserved':
          return;
        case 'Pending:Confirmed':
          await makeSpool(spool);
          await move('Running:Stage-In');
          break;
        case 'Running:Stage-In':
          await makeSpool(spool);
          await stageIn(ctx, task, job, spool, signal);
          await move('Running:Instance-Starting');
          break;
        case 'Running:Instance-Starting':
          await save(await startGuest(ctx, task, job, signal));
          await move('Running:Executing');
          break;
        case 'Running:Executing': {
          const { outcome, note } = await execute(ctx, task, job, !entered.has('Running:Executing'), save, signal);
          endNote = note;
          task = jobEnded(task, ctx.now());
          await move('Running:Instance-Stopping', outcome);
          break;
        }
        case 'Running:Instance-Stopping':
          await stopAfterWork(ctx, task, job);
          await save({ address: null, vnc: null });
          if (job !== null && job.stageOut.length > 0) await move('Running:Stage-Out');
          else await move('Finished', { reason: endNote });
          break;
        case 'Running:Stage-Out':
          await stageOut(ctx, task, job!, signal);
          await move('Finished');
          break;
      }
    }
  } catch (error) {
    if (signal.aborted && signal.reason instanceof DaemonStopping) return;
    // A terminate aborts the step it meets: whatever that step threw, the task was terminated.
    const terminating = pending();
    const end = terminating !== null ? new TaskEnd('Terminated', terminating) : error instanceof TaskEnd ? error : new TaskEnd('Failed', describeError(error));
    await endBadly(ctx, () => task, move, save, end);
  } finally {
    if (isDone(task.state)) await removeFetched(spool).catch(() => undefined);
  }
}

type Move = (to: TaskState, change?: Partial<TaskRecord>) => Promise<void>;
type Save = (change: Partial<TaskRecord>) => Promise<void>;

/** Its guest stopped (through Running:Instance-Stopping, where one may exist), then the task Failed or Terminated. */
async function endBadly(ctx: TaskContext, current: () => TaskRecord, move: Move, save: Save, end: TaskEnd): Promise<void> {
  const task = current();
  if (isDone(task.state)) return;
  const guestExists = mayHaveGuest(task.state) || (await ctx.guests.status(task.guest).catch(() => null)) !== null;
  if (guestExists) {
    // The reason is kept first: should removing the guest fail, the next attempt ends it the same way.
    if (task.state === 'Running:Instance-Stopping') await save({ reason: end.message });
    else await move('Running:Instance-Stopping', { reason: end.message });
    try {
      await removeGuest(ctx, current(), end.to === 'Terminated');
    } catch (error) {
      ctx.logger.warn('guest of a task not removed, tried again later', { task: task.task_id, error: describeError(error) });
      return;
    }
  }
  await move(end.to, { reason: end.message, address: null, vnc: null, terminating: null });
}

/** Terminate asks the guest to shut down first (ACPI, then power off); a failure powers it off at once. */
async function removeGuest(ctx: TaskContext, task: TaskRecord, graceful: boolean): Promise<void> {
  if (graceful) await ctx.guests.stop(task.guest, task.runtime).catch(() => undefined);
  await ctx.guests.destroy(task.guest, task.runtime);
}

/** Running:Instance-Stopping after the work: the outputs read back, then the guest removed. */
async function stopAfterWork(ctx: TaskContext, task: TaskRecord, job: XsdlJob | null): Promise<void> {
  const guest = await ctx.guests.status(task.guest);
  const outputs = job !== null && job.stageOut.length > 0 ? job : null;
  if (outputs !== null && guest !== null) {
    if (guest.state !== 'running') throw new PermanentError(`${INTERRUPTED}: the guest stopped before its outputs were read back`);
    await gatherOutputs(ctx, task, outputs);
  } else if (outputs !== null && !usesStagingDisks(task)) {
    throw new PermanentError(`${INTERRUPTED}: the guest was gone before its outputs were read back`);
  }
  if (guest !== null) await removeGuest(ctx, task, false);
  // A virtual machine's outputs are read from its stage-out disk once nothing writes to it.
  if (outputs !== null) await readOutputs(ctx, task, outputs);
}

/**
 * Running:Executing: the job started (its pid kept), then watched until it ends: its exit code or
 * signal, or the wall-time limit, a silent agent or a guest that stopped under it. A guest with no
 * job (an instance, a ContinuousTask) runs until it is terminated or powered off from inside.
 */
async function execute(
  ctx: TaskContext, task: TaskRecord, job: XsdlJob | null, resumed: boolean, save: Save, signal: AbortSignal,
): Promise<{ outcome: Partial<TaskRecord>; note: string | null }> {
  const agent = await agentOf(ctx, task);
  let pid = task.job_pid;
  const posix = job !== null && job.application.kind === 'posix' ? job.application : null;
  if (posix !== null && pid === null) {
    if (resumed) throw new PermanentError(`${INTERRUPTED} before its job was recorded as started`);
    pid = await startJob(agent, job!, ctx.settings.pollMs);
    await save({ job_pid: pid });
  }
  const startedAt = Date.parse(task.times['execution-start'] ?? ctx.now().toISOString());
  const wallMs = posix?.wallTimeSeconds != null ? posix.wallTimeSeconds * 1000 : ctx.settings.wallTimeLimitMs;
  let lastHeard = ctx.now().getTime();
  for (;;) {
    await delay(ctx.settings.pollMs, undefined, { signal });
    const guest = await ctx.guests.status(task.guest);
    if (guest?.state !== 'running') {
      if (pid === null) return { outcome: {}, note: 'the guest powered off from inside' };
      throw new PermanentError('the guest stopped while its job ran');
    }
    if (pid === null) continue;
    const now = ctx.now().getTime();
    let state;
    try {
      state = await agent.execStatus(pid);
      lastHeard = now;
    } catch (error) {
      const silentMs = now - lastHeard;
      if (silentMs >= ctx.settings.silenceTimeoutMs) {
        throw new PermanentError(`instance agent silent for ${Math.round(silentMs / 1000)} s (${describeError(error)})`);
      }
      continue;
    }
    if (state.exited) return { outcome: { exit_code: state.exitCode, signal: state.signal === null ? null : signalName(state.signal) }, note: null };
    if (now - startedAt >= wallMs) {
      await agent.exec(killRequest(pid)).catch(() => undefined);
      throw new PermanentError(`wall time limit of ${Math.round(wallMs / 1000)} s reached: the job was killed`);
    }
  }
}
