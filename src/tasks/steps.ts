// The work of each state of a task, one function a state. Each is safe to run again from the start
// after a restart (a fetch is redone, a guest half made is removed first), and each leaves what it
// did in the task's record before the next state is entered (runner.ts).
import { open, writeFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { join } from 'node:path';
import { formatOfHeader } from '../images/index.js';
import type { TaskRecord } from '../db/types.js';
import type { ExtraDisk, GuestBoot } from '../runtimes/libvirt/guest-definition.js';
import { describeError, PermanentError } from '../util/errors.js';
import { fetchLocation, type FetchDeps } from './fetch.js';
import { jobDirectories, jobRequest } from './job.js';
import { localFileUrls, localFilesRefusal } from './local-files.js';
import { sendFile } from './send.js';
import { spoolOf, type Spool } from './spool.js';
import {
  makeStageInImage, makeStageOutImage, readStagedOutput, STAGE_IN_SERIAL, STAGE_OUT_SERIAL, stageInScript, stageOutScript, STAGING_EXITS, stagingImages,
} from './staging-disk.js';
import { describeTask, type ExecRequest, type GuestAgent, type TaskContext } from './task-context.js';
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

/** Whether the task's files go through staging disks (a virtual machine's) rather than its agent's file calls. */
export function usesStagingDisks(task: Pick<TaskRecord, 'runtime'>): boolean {
  return task.runtime === 'qemu';
}

/** A virtual machine's staging disks: one to read its inputs from, one to write its outputs into. */
function stagingDisksOf(task: TaskRecord, job: XsdlJob | null, spool: Spool): ExtraDisk[] {
  if (job === null || !usesStagingDisks(task)) return [];
  const images = stagingImages(spool);
  return [
    ...(job.stageIn.length > 0 ? [{ path: images.in, serial: STAGE_IN_SERIAL, readOnly: true }] : []),
    ...(job.stageOut.length > 0 ? [{ path: images.out, serial: STAGE_OUT_SERIAL, readOnly: false }] : []),
  ];
}

export function definitionOf(ctx: TaskContext, task: TaskRecord, job: XsdlJob | null) {
  const spool = spoolOf(ctx.settings.taskDir, task.task_id);
  return onDemandDefinition({
    runtime: task.runtime,
    boot: bootOf(job, task, spool),
    extraDisks: stagingDisksOf(task, job, spool),
    need: { vcpus: task.vcpus, memoryBytes: task.memory_bytes },
    kernelArgs: job?.instance.kernel?.arguments ?? [],
    startTimeoutMs: ctx.settings.startTimeoutMs,
  });
}

/** Running:Stage-In: the instance's files and the stage-in files fetched into the spool; a virtual machine's staging disks made. */
export async function stageIn(ctx: TaskContext, task: TaskRecord, job: XsdlJob | null, spool: Spool, signal: AbortSignal): Promise<void> {
  if (job === null) return;
  // Confirm refuses such a document; a task confirmed before that rule was kept must not run either.
  const refusal = localFilesRefusal(task.owner, localFileUrls(job));
  if (refusal !== null) throw new PermanentError(refusal);
  const deps = fetchDeps(ctx, signal);
  for (const part of ['kernel', 'initrd', 'image'] as const) {
    const location = job.instance[part];
    if (location !== null && location.uri.kind === 'url') await fetchLocation(location, spool.boot(part), deps);
  }
  for (const [n, file] of job.stageIn.entries()) await fetchLocation(file.source, spool.input(n), deps);
  if (!usesStagingDisks(task)) return;
  if (job.stageIn.length > 0) await makeStageInImage(spool, job.stageIn);
  if (job.stageOut.length > 0) await makeStageOutImage(spool, job.stageOut.length, ctx.settings.stageMaxBytes);
}

/** Runs a program through the agent to its end; its exit code (a signal counts as failure, -1). */
export async function runInGuest(agent: GuestAgent, request: ExecRequest, pollMs: number): Promise<number> {
  const pid = await agent.exec(request);
  for (;;) {
    const state = await agent.execStatus(pid);
    if (state.exited) return state.exitCode ?? -1;
    await delay(Math.min(pollMs, 200));
  }
}

/** What a staging script's exit code says, or null for 0. */
function stagingProblem(code: number): string | null {
  return code === 0 ? null : STAGING_EXITS[code] ?? `the staging script ended with ${code}`;
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
  if (job !== null && job.stageIn.length > 0) {
    if (usesStagingDisks(task)) {
      const problem = stagingProblem(await runInGuest(agent, { path: '/bin/sh', args: ['-c', stageInScript()], env: [] }, ctx.settings.pollMs));
      if (problem !== null) throw new PermanentError(`stage-in: ${problem}`);
    } else {
      for (const [n, file] of job.stageIn.entries()) await agent.putFile(spool.input(n), file.path, file.source.mode ?? undefined);
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
  if ((await runInGuest(agent, { path: '/bin/mkdir', args: ['-p', '--', ...dirs], env: [] }, pollMs)) !== 0) {
    throw new PermanentError(`the job's directories (${dirs.join(', ')}) could not be made in the guest`);
  }
}

/** Starts the job; its pid is what the record keeps, to ask about it again after a restart. */
export async function startJob(agent: GuestAgent, job: XsdlJob, pollMs: number): Promise<number | null> {
  if (job.application.kind !== 'posix') return null;
  await makeJobDirectories(agent, job, pollMs);
  return agent.exec(jobRequest(job.application));
}

/**
 * The outputs taken from the guest while it still runs: into the spool through the agent, or, for a
 * virtual machine, into its stage-out disk (read on the host once the guest is gone: readOutputs).
 */
export async function gatherOutputs(ctx: TaskContext, task: TaskRecord, job: XsdlJob): Promise<void> {
  if (job.stageOut.length === 0) return;
  const agent = await agentOf(ctx, task);
  const spool = spoolOf(ctx.settings.taskDir, task.task_id);
  if (usesStagingDisks(task)) {
    const code = await runInGuest(agent, { path: '/bin/sh', args: ['-c', stageOutScript(), 'nodemgr-stage-out', ...job.stageOut.map((f) => f.path)], env: [] },
      ctx.settings.pollMs);
    const missing = code >= 10 ? job.stageOut[code - 10] : undefined;
    if (missing !== undefined) throw new PermanentError(`stage-out of ${missing.path}: no such file in the guest`);
    const problem = stagingProblem(code);
    if (problem !== null) throw new PermanentError(`stage-out: ${problem}`);
    return;
  }
  for (const [n, file] of job.stageOut.entries()) {
    await agent.getFile(file.path, spool.output(n), ctx.settings.stageMaxBytes).catch((error: unknown) => {
      throw new PermanentError(`stage-out of ${file.path}: ${describeError(error)}`);
    });
  }
}

/** A virtual machine's outputs, read from its stage-out disk once it is gone; throws naming one it did not write. */
export async function readOutputs(ctx: TaskContext, task: TaskRecord, job: XsdlJob): Promise<void> {
  if (!usesStagingDisks(task)) return;
  const spool = spoolOf(ctx.settings.taskDir, task.task_id);
  for (const [n, file] of job.stageOut.entries()) {
    if (!(await readStagedOutput(spool, n, spool.output(n)))) throw new PermanentError(`stage-out of ${file.path}: not found on the stage-out disk`);
  }
}

/** Running:Stage-Out: each output sent to its target; the first that fails fails the task. */
export async function stageOut(ctx: TaskContext, task: TaskRecord, job: XsdlJob, signal: AbortSignal): Promise<void> {
  const refusal = localFilesRefusal(task.owner, localFileUrls(job));
  if (refusal !== null) throw new PermanentError(refusal);
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
