// An in-memory stand-in for the host, for unit tests of the planner, the supervisors and the
// converge loop. System tests use the real Unix runtime.
import type { AccountKind } from '../../../src/db/types.js';
import type { RuntimeKind } from '../../../src/slices/types.js';
import { PermanentError } from '../../../src/util/errors.js';
import type { AccountRuntime, AccountSpec, HostSnapshot, ObservedAccount } from '../../../src/runtimes/types.js';

export interface MemoryAccount extends Omit<ObservedAccount, 'started'> {
  keys: readonly string[];
  initscriptRuns: number;
}

export function memoryRuntime(foreign: string[] = []) {
  const accounts = new Map<string, MemoryAccount>();
  const calls: string[] = [];
  const failures = new Map<string, number>(); // "create:name" -> remaining failures
  const permanent = new Set<string>(); // "create:name": fails for good
  let nextUid = 70000;

  const maybeFail = (what: string) => {
    if (permanent.has(what)) throw new PermanentError(`simulated permanent failure of ${what}`);
    const left = failures.get(what) ?? 0;
    if (left > 0) {
      failures.set(what, left - 1);
      throw new Error(`simulated failure of ${what}`);
    }
  };

  const runtime: AccountRuntime = {
    async observe(): Promise<HostSnapshot> {
      return { owned: [...accounts.values()].map(({ name, kind, runtime, uid, loginEnabled }) => ({ name, kind, runtime, uid, loginEnabled, started: loginEnabled })), foreign: new Set(foreign) };
    },
    async create(spec: AccountSpec) {
      calls.push(`create ${spec.name}`);
      maybeFail(`create:${spec.name}`);
      const existing = accounts.get(spec.name);
      if (existing) return { uid: existing.uid };
      const account = { name: spec.name, kind: spec.kind, runtime: spec.runtime, uid: nextUid++, loginEnabled: false, keys: [], initscriptRuns: 0 };
      accounts.set(spec.name, account);
      return { uid: account.uid };
    },
    async configure(spec: AccountSpec) {
      calls.push(`configure ${spec.name}`);
      maybeFail(`configure:${spec.name}`);
      const a = accounts.get(spec.name);
      if (!a) throw new Error(`no account ${spec.name}`);
      a.keys = spec.keys;
    },
    async start(spec: AccountSpec) {
      calls.push(`start ${spec.name}`);
      const a = accounts.get(spec.name);
      if (!a) throw new Error(`no account ${spec.name}`);
      if (!a.loginEnabled && spec.initscript) a.initscriptRuns++;
      (a as { loginEnabled: boolean }).loginEnabled = true;
    },
    async stop(name: string, _kind: AccountKind) {
      calls.push(`stop ${name}`);
      const a = accounts.get(name);
      if (a) (a as { loginEnabled: boolean }).loginEnabled = false;
    },
    async destroy(name: string, _kind: AccountKind) {
      calls.push(`destroy ${name}`);
      maybeFail(`destroy:${name}`);
      accounts.delete(name);
    },
  };
  /**
   * Puts a marked account on the host without the runtime (what an earlier run of the daemon, or
   * one that lost its database, left): started (login enabled) unless said otherwise.
   */
  const add = (name: string, options: { kind?: AccountKind; runtime?: RuntimeKind; started?: boolean } = {}): MemoryAccount => {
    const account: MemoryAccount = {
      name, kind: options.kind ?? 'sliver', runtime: options.runtime ?? 'unix', uid: nextUid++,
      loginEnabled: options.started ?? true, keys: [], initscriptRuns: 0,
    };
    accounts.set(name, account);
    return account;
  };
  return { runtime, accounts, calls, failures, permanent, add };
}
