// The work of each state of a task, one function a state. Each is safe to run again from the start
// after a restart (a fetch is redone, a guest half made is removed first), and each leaves what it
// did in the task's record before the next state is entered (runner.ts).
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatOfHeader } from '../images/index.js';
import type { TaskRecord } from '../db/types.js';
import type { GuestBoot } from '../runtimes/libvirt/guest-definition.js';
import { describeError, PermanentError } from '../util/errors.js';
import { fetchLocation, type FetchDeps } from './fetch.js';
import { jobDirectories, jobRequest } from './job.js';
import { sendFile } from './send.js';
import { spoolOf, type Spool } from './spool.js';
import { describeTask, type GuestAgent, type TaskContext } from './task-context.js';
import { onDemandDefinition } from './task-guest.js';
import type { Location, XsdlJob } from './xsdl-types.js';

/** Downloads that fail are tried this many more times. */
const FETCH_RETRIES = 3;
/** A transfer that moves nothing for this long is abandoned. */
const TRANSFER_IDLE_MS = 60_000;

export function fetchDeps(ctx: TaskContext, signal: AbortSignal): FetchDeps {
  return {
    cachedFile: ctx.cachedFile, maxBytes: ctx.settings.stageMaxBytes, retries: FETCH_RETRIES, timeoutMs: TRANSFER_IDLE_MS, signal,
    logger: ctx.logger,
  };
}

/** What the guest boots: cache entries by name, fetched files by their path in the spool. */
export function bootOf(job: XsdlJob | null, task: TaskRecord, spool: Spool): GuestBoot {
  if (job === null) return { image: task.image, kernel: task.kernel, initrd: task.initrd };
  const ref = (location: Location | null, part: 'kernel' | 'initrd' | 'image') =>
    location === null ? null : location.uri.kind === 'cache' ? location.uri.name : spool.boot(part);
  const { kernel, initrd, image } = job.instance;
  return { image: ref(image, 'image'), kernel: ref(kernel, 'kernel'), initrd: ref(initrd, 'initrd') };
}

export function definitionOf(ctx: TaskContext, task: TaskRecord, job: XsdlJob | null) {
  return onDemandDefinition({
    runtime: task.runtime,
    boot: bootOf(job, task, spoolOf(ctx.settings.taskDir, task.task_id)),
    need: { vcpus: task.vcpus, memoryBytes: task.memory_bytes },
    kernelArgs: job?.instance.kernel?.arguments ?? [],
    startTimeoutMs: ctx.settings.startTimeoutMs,
  });
}

/** Running:Stage-In: the instance's files and the stage-in files, fetched into the spool. */
export async function stageIn(ctx: TaskContext, job: XsdlJob | null, spool: Spool, signal: AbortSignal): Promise<void> {
  if (job === null) return;
  const deps = fetchDeps(ctx, signal);
  for (const part of ['kernel', 'initrd', 'image'] as const) {
    const location = job.instance[part];
    if (location !== null && location.uri.kind === 'url') await fetchLocation(location, spool.boot(part), deps);
  }
  for (const [n, file] of job.stageIn.entries()) await fetchLocation(file.source, spool.input(n), deps);
}

/** The agent of a running guest, or an error that says there is none. */
export async function agentOf(ctx: TaskContext, task: TaskRecord): Promise<GuestAgent> {
  const agent = await ctx.guests.agentFor(task.guest);
  if (agent === null) throw new Error(`the guest ${task.guest} of ${describeTask(task)} is gone`);
  return agent;
}

/**
 * Running:Instance-Starting: the guest made and booted until its agent answers, then the stage-in
 * files (and an instance's ssh key) put into it. A guest left by an interrupted start is removed
 * first: a boot is never half trusted.
 */
export async function startGuest(ctx: TaskContext, task: TaskRecord, job: XsdlJob | null, signal: AbortSignal): Promise<TaskRecord> {
  const spool = spoolOf(ctx.settings.taskDir, task.task_id);
  const definition = definitionOf(ctx, task, job);
  if ((await ctx.guests.status(task.guest)) !== null) await ctx.guests.destroy(task.guest, task.runtime);
  await ctx.guests.create(task.guest, definition);
  await untilAborted(ctx.guests.start(task.guest, definition), signal);
  const agent = await agentOf(ctx, task);
  if (job !== null) {
    for (const [n, file] of job.stageIn.entries()) {
      await agent.putFile(spool.input(n), file.path, file.source.mode ?? undefined);
    }
  }
  if (task.ssh_key !== null) {
    const keyFile = join(spool.dir, 'in', 'authorized_keys');
    await writeFile(keyFile, `${task.ssh_key.trim()}\n`, { mode: 0o600 });
    await agent.putFile(keyFile, '/root/.ssh/authorized_keys', 0o600);
  }
  const status = await ctx.guests.status(task.guest);
  return {
    ...task,
    address: ctx.leasesOf(task.guest)[0]?.ip ?? null,
    vnc: status?.vnc_port != null ? `127.0.0.1:${status.vnc_port}` : null,
  };
}

/** Resolves as `work` does, or rejects with the signal's reason as soon as it is aborted (the work goes on alone). */
export function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      work.catch(() => undefined);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Runs `/bin/mkdir -p` through the agent for the job's directories; throws naming them when it fails. */
export async function makeJobDirectories(agent: GuestAgent, job: XsdlJob, pollMs: number): Promise<void> {
  if (job.application.kind !== 'posix') return;
  const dirs = jobDirectories(job.application);
  if (dirs.length === 0) return;
  const pid = await agent.exec({ path: '/bin/mkdir', args: ['-p', '--', ...dirs], env: [] });
  for (;;) {
    const state = await agent.execStatus(pid);
    if (state.exited) {
      if (state.exitCode !== 0) throw new PermanentError(`the job's directories (${dirs.join(', ')}) could not be made in the guest`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(pollMs, 200)));
  }
}

/** Starts the job; its pid is what the record keeps, to ask about it again after a restart. */
export async function startJob(agent: GuestAgent, job: XsdlJob, pollMs: number): Promise<number | null> {
  if (job.application.kind !== 'posix') return null;
  await makeJobDirectories(agent, job, pollMs);
  return agent.exec(jobRequest(job.application));
}

/** The outputs read back from the guest into the spool (the guest is still running). */
export async function gatherOutputs(ctx: TaskContext, task: TaskRecord, job: XsdlJob): Promise<void> {
  if (job.stageOut.length === 0) return;
  const agent = await agentOf(ctx, task);
  const spool = spoolOf(ctx.settings.taskDir, task.task_id);
  for (const [n, file] of job.stageOut.entries()) {
    await agent.getFile(file.path, spool.output(n), ctx.settings.stageMaxBytes).catch((error: unknown) => {
      throw new PermanentError(`stage-out of ${file.path}: ${describeError(error)}`);
    });
  }
}

/** Running:Stage-Out: each output sent to its target; the first that fails fails the task. */
export async function stageOut(ctx: TaskContext, task: TaskRecord, job: XsdlJob, signal: AbortSignal): Promise<void> {
  const spool = spoolOf(ctx.settings.taskDir, task.task_id);
  for (const [n, file] of job.stageOut.entries()) {
    await sendFile(spool.output(n), file.target, file.creationFlag, { signal, timeoutMs: TRANSFER_IDLE_MS }).catch((error: unknown) => {
      throw new PermanentError(`stage-out of ${file.path} failed: ${describeError(error)}; the file is kept in the task's spool until it is removed`);
    });
  }
}

/** The disk format of a file fetched into the spool, as the guest's overlay names its backing file's. */
export async function diskFormatOf(path: string): Promise<string> {
  const handle = await open(path, 'r');
  try {
    const header = Buffer.alloc(512);
    const { bytesRead } = await handle.read(header, 0, header.length, 0);
    const found = formatOfHeader(header.subarray(0, bytesRead));
    if ('refused' in found) throw new PermanentError(`${path}: ${found.refused}`);
    return found.format;
  } finally {
    await handle.close();
  }
}
