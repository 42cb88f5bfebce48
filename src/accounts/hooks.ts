// Lifecycle hooks: what the supervisor does around each runtime call for the things an account is
// more than its runtime's object (its limits, today). Kubelet makes a pod's cgroups before the
// runtime syncs the pod and Nomad runs a cgroup hook around a task; here the supervisor runs a
// small ordered list of named hooks, and runtimes and hooks never call each other.
import type { AccountKind } from '../db/types.js';
import type { RuntimeKind } from '../slices/types.js';
import type { AccountSpec, StartContext } from '../runtimes/types.js';

/** An account as a stop or destroy names it. */
export interface AccountRef {
  readonly name: string;
  readonly kind: AccountKind;
  readonly runtime: RuntimeKind;
}

export interface LifecycleHook {
  /** For logs and errors: "limits". */
  readonly name: string;
  /** Before the runtime configures the account; a throw fails the configure (it is retried). */
  beforeConfigure?(spec: AccountSpec): Promise<void>;
  /** What the account's start runs in (merged over every hook). */
  startContext?(spec: AccountSpec): Partial<StartContext>;
  /** Before the runtime stops the account (also before a destroy). */
  beforeStop?(account: AccountRef): Promise<void>;
  /** After the runtime destroyed the account. */
  afterDestroy?(account: AccountRef): Promise<void>;
}

/** Runs one phase of every hook, in order; a failure names the hook. */
export async function runHooks(hooks: readonly LifecycleHook[], phase: (hook: LifecycleHook) => Promise<void> | undefined): Promise<void> {
  for (const hook of hooks) {
    try {
      await phase(hook);
    } catch (error) {
      if (error instanceof Error) error.message = `${hook.name}: ${error.message}`;
      throw error;
    }
  }
}

/** The start context the hooks give the account. */
export function startContextOf(hooks: readonly LifecycleHook[], spec: AccountSpec): StartContext {
  let context: StartContext = { cgroupProcFiles: [] };
  for (const hook of hooks) context = { ...context, ...hook.startContext?.(spec) };
  return context;
}
