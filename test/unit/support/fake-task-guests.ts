// The on-demand guests' lifecycle as the task engine sees it (TaskGuests), kept in memory for the
// engine's unit tests: each guest's file system is a directory on the host, its agent runs what
// the test says a job does. The real lifecycle and agent are tested against libvirt in
// test/system/tasks.test.ts.
import { copyFile, mkdir, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { GuestDefinition, GuestKind } from '../../../src/runtimes/libvirt/guest-definition.js';
import type { GuestStatus } from '../../../src/runtimes/types.js';
import type { ExecRequest, ExecState, GuestAgent, TaskGuests } from '../../../src/tasks/task-context.js';

/** What a job does: it may write into the guest's root; it ends after `polls` status calls. */
export interface JobBehaviour {
  readonly polls?: number;
  readonly exitCode?: number;
  readonly signal?: number;
  /** Never ends on its own (a wall time or a terminate ends it). */
  readonly forever?: boolean;
  readonly effect?: (root: string, request: ExecRequest) => Promise<void>;
}

export interface FakeGuest {
  readonly name: string;
  readonly definition: GuestDefinition;
  running: boolean;
  readonly root: string;
}

export interface FakeTaskGuests extends TaskGuests {
  readonly guests: Map<string, FakeGuest>;
  /** Every call, in order ("create task.1a2b", "exec /bin/sh", ...). */
  readonly calls: string[];
  /** The agent stops answering (execStatus and ping fail). */
  silent: boolean;
  /** start fails with this message (an agent that never answers). */
  startFails: string | null;
  /** A start that waits until released (to terminate a task in Running:Instance-Starting). */
  holdStart: boolean;
  job: JobBehaviour;
}

export function fakeTaskGuests(dir: string): FakeTaskGuests {
  const guests = new Map<string, FakeGuest>();
  // A job's behaviour is null: it does what `fake.job` says when it is asked (a test may change it).
  const jobs = new Map<number, { behaviour: JobBehaviour | null; polls: number; killed: boolean }>();
  let nextPid = 100;
  const calls: string[] = [];
  const within = (guest: FakeGuest, path: string) => join(guest.root, path);

  const agentOf = (guest: FakeGuest): GuestAgent => ({
    async ping() {
      if (fake.silent) throw new Error('the agent did not answer');
    },
    async exec(request) {
      calls.push(`exec ${request.path}`);
      const pid = nextPid++;
      if (request.path === '/bin/mkdir') {
        for (const d of request.args.filter((a) => a.startsWith('/'))) await mkdir(within(guest, d), { recursive: true });
        jobs.set(pid, { behaviour: { polls: 0, exitCode: 0 }, polls: 0, killed: false });
      } else if (request.path === '/bin/kill') {
        const target = jobs.get(Number(request.args[1]));
        if (target) target.killed = true;
        jobs.set(pid, { behaviour: { polls: 0, exitCode: 0 }, polls: 0, killed: false });
      } else {
        await fake.job.effect?.(guest.root, request);
        jobs.set(pid, { behaviour: null, polls: 0, killed: false });
      }
      return pid;
    },
    async execStatus(pid): Promise<ExecState> {
      if (fake.silent) throw new Error('the agent did not answer');
      const job = jobs.get(pid);
      if (!job) throw new Error(`no process ${pid}`);
      if (job.killed) return { exited: true, exitCode: null, signal: 9 };
      job.polls++;
      const behaviour = job.behaviour ?? fake.job;
      if (behaviour.forever || job.polls <= (behaviour.polls ?? 1)) return { exited: false };
      return { exited: true, exitCode: behaviour.signal === undefined ? behaviour.exitCode ?? 0 : null, signal: behaviour.signal ?? null };
    },
    async putFile(hostPath, guestPath) {
      calls.push(`put ${guestPath}`);
      await mkdir(dirname(within(guest, guestPath)), { recursive: true });
      await copyFile(hostPath, within(guest, guestPath));
    },
    async getFile(guestPath, hostPath, maxBytes) {
      calls.push(`get ${guestPath}`);
      const size = (await stat(within(guest, guestPath)).catch(() => null))?.size;
      if (size === undefined) throw new Error(`${guestPath}: no such file in the guest`);
      if (size > maxBytes) throw new Error(`${guestPath}: larger than ${maxBytes} bytes`);
      await mkdir(dirname(hostPath), { recursive: true });
      await copyFile(within(guest, guestPath), hostPath);
    },
  });

  const fake: FakeTaskGuests = {
    guests, calls, silent: false, startFails: null, holdStart: false, job: { polls: 1, exitCode: 0 },
    check() {},
    async list() {
      return { owned: [...guests.values()].map((g) => ({ name: g.name, kind: g.definition.kind, active: g.running })) };
    },
    async create(name, definition) {
      calls.push(`create ${name}`);
      if (!guests.has(name)) guests.set(name, { name, definition, running: false, root: join(dir, 'guests', name) });
      await mkdir(join(dir, 'guests', name), { recursive: true });
    },
    async start(name) {
      calls.push(`start ${name}`);
      const guest = guests.get(name)!;
      guest.running = true;
      while (fake.holdStart) await new Promise((resolve) => setTimeout(resolve, 10));
      if (fake.startFails !== null) throw new Error(fake.startFails);
    },
    async stop(name) {
      calls.push(`stop ${name}`);
      const guest = guests.get(name);
      if (guest) guest.running = false;
    },
    async destroy(name, _kind: GuestKind) {
      calls.push(`destroy ${name}`);
      guests.delete(name);
    },
    async status(name): Promise<GuestStatus | null> {
      const guest = guests.get(name);
      if (!guest) return null;
      return {
        runtime: guest.definition.kind, state: guest.running ? 'running' : 'stopped', vcpus: null, memory_kib: null, cpu_shares: null,
        vnc_port: 5901, console: null, addresses: '', overlay: null, bandwidth: 'none asked',
      };
    },
    async agentFor(name) {
      const guest = guests.get(name);
      return guest ? agentOf(guest) : null;
    },
  };
  return fake;
}

/** A file of the guest, as text. */
export function guestFile(guest: FakeGuest, path: string): Promise<string> {
  return readFile(join(guest.root, path), 'utf8');
}
