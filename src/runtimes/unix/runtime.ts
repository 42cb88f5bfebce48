// The Unix runtime: a sliver or a delegate is a real Unix account, made and removed in batches of
// one locked write of the account files (account-batcher.ts), marked as this daemon's (host-accounts.ts). This module puts together what the runtime is: the host as
// observed (cheaply, while the account files are unchanged), the operations on one account
// (operations.ts), and the tidying of what an interrupted operation left (leftovers.ts).
import { readdir, stat } from 'node:fs/promises';
import { invalidAccountName } from '../../host/account-names.js';
import { sharedProcessScan } from '../../host/process-scan.js';
import type { AccountKind } from '../../db/types.js';
import type { Logger } from '../../log.js';
import { describeError } from '../../util/errors.js';
import type { AccountRuntime, AccountSpec, HostSnapshot, ObservedAccount } from '../types.js';
import { commitAccountBatch, HOST_ACCOUNT_FILES, readAccountFiles, type AccountFilePaths } from '../../host/account-files/commit.js';
import { orphanGroups, type BatchRequests } from '../../host/account-files/plan.js';
import type { PasswdEntry } from '../../host/passwd.js';
import { accountBatcher } from './account-batcher.js';
import { exclusive } from './shadow-utils.js';
import { hostAccounts } from './host-accounts.js';
import { initscriptDir } from './initscript.js';
import { leftovers } from './leftovers.js';
import { configureAccount, createAccount, destroyAccount, loginEnabled, startAccount, stopAccount, type UnixContext } from './operations.js';

// A converge pass hands its creates (or destroys) to the supervisors in one go; the supervisors
// reach the runtime within a few event-loop turns of one another. A few milliseconds gathers them
// without keeping a lone change waiting for anything noticeable.
const BATCH_GATHER_MS = 5;

export interface UnixRuntimeOptions {
  uidMin: number;
  uidMax: number;
  /** Directory holding the homes, e.g. /home. */
  homeBase: string;
  /** Login shell of a started sliver, e.g. /bin/bash. */
  sliverShell: string;
  /** Login shell of an enabled delegate (forward_api_calls); it need not exist yet. */
  delegateShell: string;
  /** Login shell of a stopped account, e.g. /usr/sbin/nologin. */
  disabledShell: string;
  /** Per-run state (initscripts and what was started), e.g. /run/nodemgr. */
  runDir: string;
  /** The account files that creations and removals write (and lock); default the host's, in /etc. */
  accountFilePaths?: AccountFilePaths;
  /** The account databases, read only (default the host's). */
  passwdFile?: string;
  shadowFile?: string;
  groupFile?: string;
}

/** A sliver's account as a login (an ssh session) takes it, and whether it is started. */
export interface LoginAccount {
  readonly account: { readonly name: string; readonly uid: number; readonly gid: number; readonly home: string; readonly shell: string };
  readonly started: boolean;
}

/** The Unix runtime: every account it makes has a uid. */
export interface UnixRuntime extends AccountRuntime {
  create(spec: AccountSpec): Promise<{ uid: number }>;
  /** The owned sliver account of that name as the account files have it now; null when there is none. */
  loginAccount(name: string): Promise<LoginAccount | null>;
  stop(name: string, kind: AccountKind): Promise<void>;
  destroy(name: string, kind: AccountKind): Promise<void>;
}

export function createUnixRuntime(options: UnixRuntimeOptions, logger: Logger): UnixRuntime {
  const { uidMin, uidMax, homeBase, runDir, disabledShell } = options;
  if (!Number.isInteger(uidMin) || !Number.isInteger(uidMax) || uidMin < 1 || uidMin > uidMax) {
    throw new Error(`unix runtime: uid range ${uidMin}-${uidMax} is not a range of non-root uids`);
  }
  const files = {
    passwdFile: options.passwdFile ?? '/etc/passwd',
    shadowFile: options.shadowFile ?? '/etc/shadow',
    groupFile: options.groupFile ?? '/etc/group',
  };
  const accounts = hostAccounts(files, { uidMin, uidMax }, logger);
  const paths = options.accountFilePaths ?? HOST_ACCOUNT_FILES;
  const rules = { uidMin, uidMax, owns: (entry: PasswdEntry) => accounts.ownership({ ...entry, shadow: null }).owned };
  const commit = (requests: BatchRequests) => commitAccountBatch(requests, { paths, rules, logger });
  const batcher = accountBatcher(commit, { gatherMs: BATCH_GATHER_MS });
  // What a batch killed between two renames left (see account-files/plan.ts): looked for without
  // the lock, removed by an empty batch, which looks again under the lock.
  const tidyAccountFiles = async () => {
    if (orphanGroups(await readAccountFiles(paths), { ...rules, today: 0 }).size === 0) return;
    await exclusive(() => commit({ creates: [], removes: [] }));
    logger.info('groups left by an interrupted account batch removed');
  };
  const context: UnixContext = {
    accounts, leftovers: leftovers(accounts, { homeBase, runDir }, logger), tidyAccountFiles, batcher, processScan: sharedProcessScan(), logger, uidMin, uidMax, homeBase, runDir, disabledShell,
    shellOf: (kind) => (kind === 'sliver' ? options.sliverShell : options.delegateShell),
  };
  const observed = hostObserver(context);

  return {
    async loginAccount(name) {
      if (invalidAccountName(name) !== null) return null;
      const account = await accounts.find(name);
      if (!account) return null;
      const owner = accounts.ownership(account);
      if (!owner.owned || owner.kind !== 'sliver') return null;
      const started = (await observed.snapshot()).owned.find((o) => o.name === name)?.started ?? false;
      return { account: { name, uid: account.uid, gid: account.gid, home: account.home, shell: account.shell }, started };
    },
    observe: (observeOptions = {}) => observed.observe(observeOptions.readOnly ?? false),
    create: (spec) => createAccount(context, spec),
    configure: (spec) => configureAccount(context, spec),
    start: (spec, startContext) => startAccount(context, spec, startContext),
    stop: (name) => stopAccount(context, name),
    async destroy(name) {
      try {
        await destroyAccount(context, name);
      } catch (err) {
        observed.sweepAgain();
        throw err;
      }
    },
  };
}

/**
 * The accounts on the host as observed. What the account files looked like at the last snapshot
 * is remembered: when none of them changed (same inode, size and times), neither did the
 * snapshot, so a no-change sync costs three stat calls and returns the very same object.
 */
function hostObserver(c: UnixContext) {
  const { accounts, runDir, logger } = c;
  let cached: { key: string; snapshot: HostSnapshot } | null = null;
  // Leftovers of an interrupted destroy (a home or run files whose account is gone) are looked for
  // when the account files changed since the last sweep, at the first observe (a restart after a
  // crash) and after a destroy that failed; not on every pass, since the sweep lists every home.
  let sweptAt: string | null = null;

  const filesKey = async (): Promise<string> => {
    const parts = await Promise.all(
      [accounts.files.passwdFile, accounts.files.shadowFile, initscriptDir(runDir)].map((f) =>
        stat(f, { bigint: true }).then((st) => `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`, () => 'none'),
      ),
    );
    return parts.join('|');
  };

  const readSnapshot = async (): Promise<HostSnapshot> => {
    const owned: ObservedAccount[] = [];
    const foreign = new Set<string>();
    const startRecords = new Set(await readdir(initscriptDir(runDir)).catch(() => [] as string[]));
    for (const account of await accounts.readAll()) {
      const owner = accounts.ownership(account);
      if (owner.owned) {
        const enabled = loginEnabled(c, account);
        const started = enabled && (owner.kind !== 'sliver' || startRecords.has(`${account.name}.started`));
        owned.push({ name: account.name, kind: owner.kind, runtime: 'unix', uid: account.uid, loginEnabled: enabled, started });
      } else {
        foreign.add(account.name);
      }
    }
    return { owned, foreign };
  };

  const snapshot = async (): Promise<HostSnapshot> => {
    const key = await filesKey();
    if (cached?.key === key) return cached.snapshot;
    const fresh = await readSnapshot();
    cached = { key, snapshot: fresh };
    return fresh;
  };

  return {
    snapshot,
    sweepAgain: () => {
      sweptAt = null;
    },
    async observe(readOnly: boolean): Promise<HostSnapshot> {
      const key = readOnly ? null : await filesKey();
      if (key !== null && key !== sweptAt) {
        sweptAt = key;
        // Tidying must not keep the daemon from seeing its accounts: a failure is reported and
        // the next observe tries again.
        await c.leftovers.sweepHomes().catch((err) => {
          sweptAt = null;
          logger.warn('orphaned homes not removed', { error: describeError(err) });
        });
        await c.tidyAccountFiles().catch((err) => {
          sweptAt = null;
          logger.warn('account files not tidied', { error: describeError(err) });
        });
        await c.leftovers.sweepRunDir().catch((err) => {
          sweptAt = null;
          logger.warn('stale initscripts not removed', { error: describeError(err) });
        });
      }
      return snapshot();
    },
  };
}
