// The planner: records + observed host + what was last applied -> the operations that bring the
// host in line. Pure: no I/O, no clock; running it again on the converged result plans nothing.
import { createHash } from 'node:crypto';
import type { AccountKind, AccountStatus, DelegateRecord, SliverRecord } from '../db/types.js';
import { effectiveRspecs, type RejectedLoan } from '../rspec/loans.js';
import type { AccountSpec, HostSnapshot } from '../runtimes/types.js';
import type { RuntimeKind } from '../slices/types.js';

export type OpAction = 'create' | 'configure' | 'start' | 'stop' | 'destroy';

export interface Op {
  readonly account: string;
  readonly kind: AccountKind;
  readonly action: OpAction;
  /** What the account must look like; null for stop and destroy. */
  readonly spec: AccountSpec | null;
  /** Why the planner asks for it, for logs and `nodemgr plan`. */
  readonly why: string;
}

export interface Refusal {
  readonly account: string;
  readonly kind: AccountKind;
  readonly reason: string;
}

export interface Desired {
  readonly specs: readonly AccountSpec[];
  readonly rejectedLoans: readonly RejectedLoan[];
  /** Account name -> specHash of its spec, computed once with the specs. */
  readonly hashes: ReadonlyMap<string, string>;
}

/**
 * The accounts the records ask for, with every sliver's effective rspec (loans applied); a slice
 * that names no runtime gets the node's default.
 */
export function desiredAccounts(
  slivers: readonly SliverRecord[],
  delegates: readonly DelegateRecord[],
  defaultRuntime: RuntimeKind = 'unix',
): Desired {
  const { effective, rejected } = effectiveRspecs(
    slivers.map((s) => ({ name: s.name, rspec: s.rspec, loans: s.loans })),
  );
  const specs: AccountSpec[] = [];
  for (const s of slivers) {
    // A delegated sliver exists on the node only between its controller's Create and Destroy.
    if (s.instantiation === 'delegated' && !s.node_state.created) continue;
    const rspec = effective.get(s.name)!;
    const runtime = s.guest.runtime ?? defaultRuntime;
    specs.push({
      name: s.name,
      kind: 'sliver',
      keys: s.keys,
      initscript: s.initscript,
      // Stopped through the API, a sliver stays stopped whatever the document says, until Start.
      enabled: rspec['enabled'] !== 0 && !s.node_state.stopped,
      rspec,
      runtime,
      guest: runtime === 'unix'
        ? null
        : { image: s.vref, kernel: s.guest.kernel, initrd: s.guest.initrd, size: s.guest.size ?? 'small' },
    });
  }
  for (const d of delegates) {
    // A delegate and a sliver of one name cannot both be an account; the sliver wins.
    if (specs.some((s) => s.name === d.name)) continue;
    specs.push({
      name: d.name, kind: 'delegate', keys: d.keys, initscript: null, enabled: true, rspec: {}, runtime: 'unix', guest: null,
    });
  }
  specs.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { specs, rejectedLoans: rejected, hashes: new Map(specs.map((s) => [s.name, specHash(s)])) };
}

/** A stable digest of everything configure applies, so a change is noticed and a non-change is not. */
export function specHash(spec: AccountSpec): string {
  const rspec = Object.keys(spec.rspec)
    .sort()
    .map((k) => [k, spec.rspec[k]]);
  // A unix spec hashes as it did before libvirt slivers, so an upgrade reconfigures nothing.
  const parts: unknown[] = [spec.kind, spec.keys, spec.initscript, spec.enabled, rspec];
  if (spec.runtime !== 'unix') parts.push(spec.runtime, spec.guest);
  const canonical = JSON.stringify(parts);
  return createHash('sha256').update(canonical).digest('hex').slice(0, 16);
}

export interface PlanInput {
  readonly desired: readonly AccountSpec[];
  readonly host: HostSnapshot;
  /** The daemon's bookkeeping per account (for the hash of what was last applied). */
  readonly accounts: Readonly<Record<string, AccountStatus>>;
  /** Hashes of the desired specs when already known (Desired.hashes); computed otherwise. */
  readonly hashes?: ReadonlyMap<string, string>;
}

export interface Plan {
  readonly ops: readonly Op[];
  readonly refusals: readonly Refusal[];
}

function op(spec: AccountSpec, action: OpAction, why: string): Op {
  const needsSpec = action === 'create' || action === 'configure' || action === 'start';
  return { account: spec.name, kind: spec.kind, action, spec: needsSpec ? spec : null, why };
}

export function planReconcile(input: PlanInput): Plan {
  const ops: Op[] = [];
  const refusals: Refusal[] = [];
  const owned = new Map(input.host.owned.map((o) => [o.name, o]));
  const wanted = new Set<string>();

  for (const spec of input.desired) {
    wanted.add(spec.name);
    const found = owned.get(spec.name);
    if (!found && input.host.foreign.has(spec.name)) {
      refusals.push({
        account: spec.name,
        kind: spec.kind,
        reason: `an account named "${spec.name}" exists on this host and is not managed by nodemgr`,
      });
      continue;
    }
    const remake = found && (found.kind !== spec.kind || found.runtime !== spec.runtime);
    if (found && remake) {
      const why = found.kind !== spec.kind
        ? `is a ${found.kind}, must become a ${spec.kind}`
        : `runs on ${found.runtime}, must run on ${spec.runtime}`;
      ops.push({ account: spec.name, kind: found.kind, action: 'destroy', spec: null, why });
    }
    if (!found || remake) {
      ops.push(op(spec, 'create', 'new'));
      ops.push(op(spec, 'configure', 'new'));
      // A new account starts with its login disabled; only an enabled one is started.
      if (spec.enabled) ops.push(op(spec, 'start', 'new'));
      continue;
    }
    const applied = input.accounts[spec.name]?.appliedHash ?? null;
    const changed = applied !== (input.hashes?.get(spec.name) ?? specHash(spec));
    if (changed) ops.push(op(spec, 'configure', applied === null ? 'not configured yet' : 'changed'));
    if (spec.enabled && (!found.started || changed)) {
      // start is idempotent; after a change it re-runs an initscript whose text changed.
      ops.push(op(spec, 'start', found.started ? 'changed' : 'not running'));
    } else if (!spec.enabled && found.loginEnabled) {
      ops.push(op(spec, 'stop', 'disabled (enabled=0)'));
    }
  }

  for (const found of input.host.owned) {
    if (!wanted.has(found.name)) {
      ops.push({ account: found.name, kind: found.kind, action: 'destroy', spec: null, why: 'no longer in the records' });
    }
  }
  return { ops, refusals };
}
