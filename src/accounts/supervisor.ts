// One supervisor per account: a serial queue of that account's operations, with retry and backoff.
// Accounts never wait for one another, except for the node-wide bound on creates and destroys.
import type { AccountKind, AccountReport, AccountState } from '../db/types.js';
import type { Logger } from '../log.js';
import { specHash } from '../reconcile/desired.js';
import type { Op } from '../reconcile/plan.js';
import type { AccountRuntime, ObservedAccount } from '../runtimes/types.js';
import { describeError, isPermanent } from '../util/errors.js';
import { runHooks, startContextOf, type LifecycleHook } from './hooks.js';
import type { Limiter } from './limiter.js';

export interface SupervisorOptions {
  readonly runtime: AccountRuntime;
  /** Run around the runtime's calls, in order (see hooks.ts). */
  readonly hooks: readonly LifecycleHook[];
  /** Bounds the creations and destructions of guests (and of Unix accounts without `unixLimiter`). */
  readonly limiter: Limiter;
  /**
   * Bounds the creations and destructions of Unix accounts: these are batched into one write of
   * the account files, so they want many at once where a guest's disk copy wants few.
   */
  readonly unixLimiter?: Limiter;
  /**
   * Bounds the other operations (configure, start, stop) of every account: each holds files open
   * (a home, its keys, cgroup files), and a document of ten thousand new slivers would otherwise
   * run out of descriptors. Unbounded without it.
   */
  readonly lightLimiter?: Limiter;
  readonly logger: Logger;
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
  /** An operation that takes longer than this is reported failed and its slot released. */
  readonly opTimeoutMs: number;
  readonly report: (report: AccountReport) => void;
  /** Told of every operation that ended: its action, whether it succeeded, and its seconds. */
  readonly observe?: (action: Op['action'], ok: boolean, seconds: number) => void;
}

export interface Supervisors {
  /** Tells each account's supervisor about the host as found at start-up. */
  seed(observed: readonly ObservedAccount[]): void;
  /** Hands over a new plan: for each account named in it, its pending operations are replaced. */
  submit(ops: readonly Op[]): void;
  /** Resolves when no account has an operation running, pending or waiting for a retry. */
  idle(): Promise<void>;
  /** Names of accounts with work running, pending or waiting for a retry (a parked one is not). */
  busy(): string[];
  /** Lets parked operations run again at the next plan (what they lacked may have been added). */
  unpark(): void;
  /** Cancels retries and pending work, and waits for running operations to end. */
  stop(): Promise<void>;
}

interface AccountQueue {
  readonly name: string;
  kind: AccountKind;
  /** The state the account is in when nothing is running: what the last success left. */
  steady: AccountState;
  pending: Op[];
  running: Promise<void> | null;
  retryTimer: NodeJS.Timeout | null;
  attempts: number;
  /**
   * The operation that failed permanently (parkKey), kept as failed and not retried while plans
   * ask for the same; null when nothing is parked.
   */
  parked: string | null;
}

/** An operation for the same account, action and spec is the same request: its failure stands. */
function parkKey(op: Op): string {
  return `${op.action} ${op.runtime} ${op.spec ? specHash(op.spec) : ''}`;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms < 1000 ? `${ms} ms` : `${ms / 1000} s`}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const HEAVY = new Set(['create', 'destroy']);

/** Reports the account's state with what the operation changed. */
function report(options: SupervisorOptions, q: AccountQueue, state: AccountState, reason: string | null, extra: Partial<AccountReport> = {}): void {
  options.report({ name: q.name, kind: q.kind, state, reason, attempts: q.attempts, ...extra });
}

/** One operation through the runtime, with the hooks around it; what it changed, for the report. */
async function perform(options: SupervisorOptions, q: AccountQueue, op: Op): Promise<Partial<AccountReport>> {
  const { runtime, hooks } = options;
  const ref = { name: op.account, kind: op.kind, runtime: op.runtime };
  switch (op.action) {
    case 'create': {
      const { uid } = await runtime.create(op.spec!);
      q.steady = 'stopped';
      return { uid };
    }
    case 'configure':
      await runHooks(hooks, (h) => h.beforeConfigure?.(op.spec!));
      await runtime.configure(op.spec!);
      return { appliedHash: specHash(op.spec!) };
    case 'start':
      await runtime.start(op.spec!, startContextOf(hooks, op.spec!));
      q.steady = 'running';
      return {};
    case 'stop':
      await runHooks(hooks, (h) => h.beforeStop?.(ref));
      await runtime.stop(op.account, op.kind, op.runtime);
      q.steady = 'stopped';
      return {};
    case 'destroy':
      await runHooks(hooks, (h) => h.beforeStop?.(ref));
      await runtime.destroy(op.account, op.kind, op.runtime);
      await runHooks(hooks, (h) => h.afterDestroy?.(ref));
      q.steady = 'absent';
      return { appliedHash: null, uid: null };
  }
}

/** The limiter an operation waits for: creates and destroys by runtime, the others all alike (if bounded). */
function limiterFor(options: SupervisorOptions, op: Op): Limiter | undefined {
  if (!HEAVY.has(op.action)) return options.lightLimiter;
  return op.runtime === 'unix' ? (options.unixLimiter ?? options.limiter) : options.limiter;
}

/** Runs the operation and reports it: 'done', 'failed' (retried with backoff) or 'parked' (a permanent failure: not retried). */
async function runOne(options: SupervisorOptions, q: AccountQueue, op: Op): Promise<'done' | 'failed' | 'parked'> {
  const started = Date.now();
  if (op.action === 'create') report(options, q, 'creating', null);
  if (op.action === 'destroy') report(options, q, 'destroying', null);
  q.kind = op.kind;
  try {
    const task = () => withTimeout(perform(options, q, op), options.opTimeoutMs, op.action);
    const limiter = limiterFor(options, op);
    const extra = limiter ? await limiter.run(task) : await task();
    q.attempts = 0;
    report(options, q, q.steady, null, extra);
    options.observe?.(op.action, true, (Date.now() - started) / 1000);
    options.logger.info('operation done', {
      account: q.name, kind: op.kind, op: op.action, why: op.why, duration_ms: Date.now() - started,
    });
    return 'done';
  } catch (error) {
    q.attempts++;
    const permanent = isPermanent(error);
    const reason = `${op.action} failed: ${describeError(error)}${permanent ? ' (not retried until the slice changes)' : ''}`;
    report(options, q, 'failed', reason);
    options.observe?.(op.action, false, (Date.now() - started) / 1000);
    options.logger.warn(permanent ? 'operation failed; parked until its spec changes' : 'operation failed', {
      account: q.name, kind: op.kind, op: op.action, attempt: q.attempts, error: describeError(error),
      duration_ms: Date.now() - started,
    });
    return permanent ? 'parked' : 'failed';
  }
}

function opsByAccount(ops: readonly Op[]): Map<string, Op[]> {
  const byAccount = new Map<string, Op[]>();
  for (const op of ops) {
    const list = byAccount.get(op.account);
    if (list) list.push(op);
    else byAccount.set(op.account, [op]);
  }
  return byAccount;
}

/** Makes a new plan's operations the account's pending ones; false when the plan repeats what is parked. */
function replacePending(q: AccountQueue, list: Op[]): boolean {
  // The same request as the one that failed for good stays failed; any other is tried.
  if (q.parked !== null && q.parked === parkKey(list[0]!)) return false;
  q.parked = null;
  const previousFirst = q.pending[0];
  // A plan made while an operation runs asks for it again (the host does not show its effect
  // yet): the running one stands for it, rather than running it twice.
  if (q.running !== null && previousFirst && parkKey(previousFirst) === parkKey(list[0]!)) list[0] = previousFirst;
  q.pending = list;
  // A plan that asks for something else than the operation being retried need not wait out that
  // operation's backoff (say, a destroy for a sliver whose create keeps failing).
  if (q.retryTimer && (!previousFirst || previousFirst.action !== list[0]!.action)) {
    clearTimeout(q.retryTimer);
    q.retryTimer = null;
  }
  return true;
}

export function createSupervisors(options: SupervisorOptions): Supervisors {
  const queues = new Map<string, AccountQueue>();
  // The queues with work running, pending or waiting for a retry, kept as they change: scanning
  // every queue whenever one became idle cost ten thousand accounts a hundred million checks.
  const busyQueues = new Set<AccountQueue>();
  let stopped = false;
  let idleWaiters: Array<() => void> = [];

  const queueFor = (name: string, kind: AccountKind): AccountQueue => {
    let q = queues.get(name);
    if (!q) {
      q = { name, kind, steady: 'absent', pending: [], running: null, retryTimer: null, attempts: 0, parked: null };
      queues.set(name, q);
    }
    return q;
  };

  const isBusy = (q: AccountQueue) => q.running !== null || q.pending.length > 0 || q.retryTimer !== null;

  /** Called after each change of a queue's work. An account gone from the host with nothing left to do is forgotten. */
  const settle = (q: AccountQueue) => {
    if (isBusy(q)) {
      busyQueues.add(q);
      return;
    }
    busyQueues.delete(q);
    if (q.steady === 'absent' && q.parked === null && queues.get(q.name) === q) queues.delete(q.name);
    if (busyQueues.size > 0) return;
    const waiters = idleWaiters;
    idleWaiters = [];
    for (const resolve of waiters) resolve();
  };

  const retryDelay = (attempts: number) =>
    Math.min(options.retryMaxMs, options.retryInitialMs * 2 ** Math.max(0, attempts - 1));

  /** Starts the account's next operation if it may run now; otherwise brings the busy set up to date. */
  const drain = (q: AccountQueue) => {
    const op = q.pending[0];
    if (q.running || q.retryTimer || stopped || !op) {
      settle(q);
      return;
    }
    busyQueues.add(q);
    q.running = (async () => {
      const outcome = await runOne(options, q, op);
      // The plan may have been replaced while the operation ran; only drop what was run.
      if (q.pending[0] === op) {
        if (outcome === 'done') q.pending.shift();
        if (outcome === 'parked') {
          q.parked = parkKey(op);
          q.pending = [];
        }
      }
      q.running = null;
      if (outcome === 'failed' && !stopped && q.pending[0] === op) {
        const delay = retryDelay(q.attempts);
        q.retryTimer = setTimeout(() => {
          q.retryTimer = null;
          drain(q);
        }, delay);
        q.retryTimer.unref();
        return;
      }
      drain(q);
    })();
  };

  return {
    seed(observed) {
      for (const account of observed) {
        const q = queueFor(account.name, account.kind);
        q.steady = account.started ? 'running' : 'stopped';
      }
    },

    submit(ops) {
      if (stopped) return;
      for (const [name, list] of opsByAccount(ops)) {
        const q = queueFor(name, list[0]!.kind);
        if (replacePending(q, list)) drain(q);
      }
    },

    idle() {
      if (busyQueues.size === 0) return Promise.resolve();
      return new Promise((resolve) => idleWaiters.push(resolve));
    },

    busy() {
      return [...busyQueues].map((q) => q.name);
    },

    unpark() {
      for (const q of queues.values()) q.parked = null;
    },

    async stop() {
      stopped = true;
      for (const q of queues.values()) {
        if (q.retryTimer) clearTimeout(q.retryTimer);
        q.retryTimer = null;
        q.pending = [];
      }
      await Promise.all([...queues.values()].map((q) => q.running));
      for (const q of [...queues.values()]) settle(q);
    },
  };
}
