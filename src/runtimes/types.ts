// The interface between the supervisors and whatever an account is made of on this host.
// Everything that touches the host lives behind it, so the core can be tested without root.
import type { AccountKind } from '../db/types.js';
import type { Rspec } from '../rspec/resources.js';
import type { InstanceSize, RuntimeKind } from '../slices/types.js';

/** What a libvirt sliver boots: image references as the slice gives them (names or URIs). */
export interface GuestSpec {
  /** The disk image (the slice's vref); null for a guest that boots a kernel alone. */
  readonly image: string | null;
  readonly kernel: string | null;
  readonly initrd: string | null;
  readonly size: InstanceSize;
}

/** What an account should look like on the host, derived from its record. */
export interface AccountSpec {
  readonly name: string;
  readonly kind: AccountKind;
  /** authorized_keys lines. */
  readonly keys: readonly string[];
  /** Shell script run as the sliver's user when it starts; null for none. */
  readonly initscript: string | null;
  /** False when the sliver must be stopped with its login disabled (rspec enabled=0). */
  readonly enabled: boolean;
  /** The effective rspec (loans applied), for the limits that the runtime enforces. */
  readonly rspec: Rspec;
  /** What the account is made of on the host (always unix for a delegate). */
  readonly runtime: RuntimeKind;
  /** For lxc and qemu slivers, what the guest boots; null for unix. */
  readonly guest: GuestSpec | null;
}

/** An account this daemon owns, as found on the host (recognised by its ownership marker). */
export interface ObservedAccount {
  readonly name: string;
  readonly kind: AccountKind;
  readonly runtime: RuntimeKind;
  /** The Unix uid; null for a libvirt sliver, which has no account on the host. */
  readonly uid: number | null;
  /** True when the account can log in. */
  readonly loginEnabled: boolean;
  /**
   * True when the account was started since the host booted: login enabled and, for a sliver,
   * its start recorded in the run directory (emptied at boot, so initscripts run again).
   */
  readonly started: boolean;
}

export interface HostSnapshot {
  /** Accounts that carry this daemon's ownership marker. */
  readonly owned: readonly ObservedAccount[];
  /** Every other account name on the host: never to be managed. */
  readonly foreign: ReadonlySet<string>;
  /**
   * Runtimes whose accounts could not be listed (libvirt not answering): an account of theirs that
   * is missing from `owned` may well exist, so nothing is planned on its absence. None when absent.
   */
  readonly unseen?: ReadonlySet<RuntimeKind>;
}

/** What the supervisor's hooks give a start (see accounts/hooks.ts). */
export interface StartContext {
  /** The cgroup.procs files the account's processes are started in (empty: none). */
  readonly cgroupProcFiles: readonly string[];
}

export interface AccountRuntime {
  /**
   * Reads the accounts on the host. Unless `readOnly`, it also removes what an interrupted
   * destroy left behind (which no account owns any more), so that recovery leaves no orphans.
   */
  observe(options?: { readOnly?: boolean }): Promise<HostSnapshot>;
  /** Creates the account with its home; succeeds if an owned account of that name exists already. */
  create(spec: AccountSpec): Promise<{ uid: number | null }>;
  /** Brings keys, shell and limits in line with the spec; idempotent. */
  configure(spec: AccountSpec): Promise<void>;
  /** Enables login and runs the initscript (slivers) in the context the hooks give; idempotent. */
  start(spec: AccountSpec, context: StartContext): Promise<void>;
  /** Kills every process of the account and disables its login; idempotent. */
  stop(name: string, kind: AccountKind, runtime: RuntimeKind): Promise<void>;
  /** Stops the account and removes it and everything it owned; succeeds if it is already gone. */
  destroy(name: string, kind: AccountKind, runtime: RuntimeKind): Promise<void>;
}

/** What `nodemgr status` and GetSliverStatus show of a guest. */
export interface GuestStatus {
  readonly runtime: Exclude<RuntimeKind, 'unix'>;
  readonly state: 'running' | 'stopped';
  readonly vcpus: number | null;
  readonly memory_kib: number | null;
  readonly cpu_shares: number | null;
  readonly vnc_port: number | null;
  readonly console: string | null;
  readonly addresses: string;
  readonly overlay: string | null;
  /** "enforced", "none asked" or why interface bandwidth cannot be limited on this host. */
  readonly bandwidth: string;
}
