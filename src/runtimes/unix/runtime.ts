// The Unix runtime: a sliver or a delegate is a real Unix account made with shadow-utils.
//
// Ownership: an account is this daemon's when its GECOS field is exactly "nodemgr sliver" or
// "nodemgr delegate" AND its uid lies in the configured range. Anything else (system accounts,
// people's accounts, an account with the marker but outside the range) is foreign and is never
// changed, stopped or removed. The marker also says the kind, so recovery after a restart needs
// nothing but /etc/passwd.
import { chmod, chown, lstat, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { basename, isAbsolute, join } from 'node:path';
import { invalidAccountName } from '../../accounts/names.js';
import type { AccountKind } from '../../db/types.js';
import type { Logger } from '../../log.js';
import type { AccountRuntime, AccountSpec, HostSnapshot, ObservedAccount } from '../types.js';
import { writeAuthorizedKeys } from './authorized-keys.js';
import {
  forgetStarted, initscriptDir, initscriptHash, launchInitscript, recordStarted, removeInitscriptFiles, startedHash,
  writeInitscript,
} from './initscript.js';
import { parseGroup, parsePasswd, parseShadow, type PasswdEntry, type ShadowEntry } from '../../host/passwd.js';
import { killProcessesOf } from '../../host/processes.js';
import { exclusive, runShadowUtil } from './shadow-utils.js';
import { describeError, PermanentError } from '../../util/errors.js';

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
  /** The account databases, read only (commands always change the real ones). */
  passwdFile?: string;
  shadowFile?: string;
  groupFile?: string;
}

const MARKER_PREFIX = 'nodemgr ';

/** The GECOS field that marks an account as made by this daemon, and of which kind. */
export function ownershipMarker(kind: AccountKind): string {
  return `${MARKER_PREFIX}${kind}`;
}

export function kindFromMarker(gecos: string): AccountKind | null {
  if (gecos === ownershipMarker('sliver')) return 'sliver';
  if (gecos === ownershipMarker('delegate')) return 'delegate';
  return null;
}

// The password field of a started account: no password can match it, yet it is not "locked",
// so key logins work however sshd is set up (without PAM, OpenSSH refuses locked accounts).
const NO_PASSWORD = '*';

interface HostAccount extends PasswdEntry {
  /** Null when the shadow file could not be read (not root). */
  readonly shadow: ShadowEntry | null;
}

type Ownership = { owned: true; kind: AccountKind } | { owned: false; reason: string };

/** The Unix runtime: every account it makes has a uid. */
/** A sliver's account as a login (an ssh session) takes it, and whether it is started. */
export interface LoginAccount {
  readonly account: { readonly name: string; readonly uid: number; readonly gid: number; readonly home: string; readonly shell: string };
  readonly started: boolean;
}

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
  const passwdFile = options.passwdFile ?? '/etc/passwd';
  const shadowFile = options.shadowFile ?? '/etc/shadow';
  const groupFile = options.groupFile ?? '/etc/group';
  const inRange = (uid: number) => uid >= uidMin && uid <= uidMax;
  const shellOf = (kind: AccountKind) => (kind === 'sliver' ? options.sliverShell : options.delegateShell);

  const readAccounts = async (): Promise<HostAccount[]> => {
    const passwd = parsePasswd(await readFile(passwdFile, 'utf8'));
    let shadow: Map<string, ShadowEntry> | null = null;
    try {
      shadow = new Map(parseShadow(await readFile(shadowFile, 'utf8')).map((e) => [e.name, e]));
    } catch (err) {
      logger.debug('shadow file not readable; login state from shells only', { file: shadowFile, error: describeError(err) });
    }
    return passwd.map((p) => ({ ...p, shadow: shadow ? (shadow.get(p.name) ?? null) : null }));
  };

  const findAccount = async (name: string): Promise<HostAccount | null> =>
    (await readAccounts()).find((a) => a.name === name) ?? null;

  const ownership = (account: HostAccount): Ownership => {
    const kind = kindFromMarker(account.gecos);
    if (kind === null) return { owned: false, reason: 'it has no nodemgr marker' };
    if (!inRange(account.uid)) return { owned: false, reason: `its uid ${account.uid} is outside ${uidMin}-${uidMax}` };
    if (invalidAccountName(account.name) !== null) return { owned: false, reason: 'its name is not a manageable name' };
    return { owned: true, kind };
  };

  const isLocked = (account: HostAccount) => account.shadow?.locked ?? false;
  const loginEnabled = (account: HostAccount) => account.shell !== disabledShell && !isLocked(account);

  const checkName = (name: string) => {
    const invalid = invalidAccountName(name);
    if (invalid) throw new PermanentError(`refusing account ${JSON.stringify(name)}: ${invalid}`);
  };

  /** The account if it exists and is ours; throws if it exists and is not; null when absent. */
  const ownedAccount = async (name: string, op: string): Promise<(HostAccount & { kind: AccountKind }) | null> => {
    checkName(name);
    const account = await findAccount(name);
    if (!account) return null;
    const owner = ownership(account);
    if (!owner.owned) {
      throw new Error(`refusing to ${op} account "${name}": it exists and is not managed by nodemgr (${owner.reason})`);
    }
    return { ...account, kind: owner.kind };
  };

  const requireOwned = async (spec: AccountSpec, op: string) => {
    const account = await ownedAccount(spec.name, op);
    if (!account) throw new Error(`cannot ${op} account "${spec.name}": it does not exist`);
    if (account.kind !== spec.kind) {
      throw new Error(`cannot ${op} account "${spec.name}" as a ${spec.kind}: it is a ${account.kind}`);
    }
    return account;
  };

  const shadowUtil = (file: string, args: string[]) => runShadowUtil(file, args, logger);

  const disableLogin = async (account: HostAccount) => {
    const args: string[] = [];
    if (account.shell !== disabledShell) args.push('-s', disabledShell);
    // -L puts "!" before the hash; an account is never left half-locked, and "!" alone (a new
    // account) is locked already.
    if (account.shadow === null || !account.shadow.locked) args.push('-L');
    if (args.length > 0) await shadowUtil('usermod', [...args, account.name]);
  };

  const stopAccount = async (account: HostAccount) => {
    await disableLogin(account);
    // The next start must run the initscript again: its processes are about to die.
    await forgetStarted(runDir, account.name);
    // Whatever of the uid is still running (the supervisor's hooks emptied the sliver's groups).
    const killed = await killProcessesOf(account.uid, account.gid);
    logger.debug('account processes killed', { account: account.name, uid: account.uid, killed });
  };

  /**
   * Removes a home directory that no account owns any more. Safe because it is taken only when its
   * owner uid is in our range (uids there are handed out by us alone) and no passwd entry has that
   * uid or that name: nobody can log in as it, and it can only be what an interrupted destroy (or
   * create) left behind. Processes of the uid, if any survived, are killed first, so nothing can
   * swap a directory for a symlink while root walks the tree; and the walk never follows symlinks.
   */
  const removeOrphanHome = async (path: string, uid: number, gid: number, why: string) => {
    await killProcessesOf(uid, gid);
    await rm(path, { recursive: true, force: true });
    logger.info('orphaned home removed', { home: path, uid, why });
  };

  const sweepOrphans = () =>
    exclusive(async () => {
      let names: string[];
      try {
        names = await readdir(homeBase);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      const candidates: { path: string; name: string; uid: number; gid: number }[] = [];
      for (const name of names) {
        if (invalidAccountName(name) !== null) continue;
        const path = join(homeBase, name);
        const st = await lstat(path).catch(() => null);
        if (!st || !st.isDirectory() || !inRange(st.uid)) continue;
        candidates.push({ path, name, uid: st.uid, gid: st.gid });
      }
      if (candidates.length === 0) return;
      // Read after the listing: an account made in between is then seen and its home kept.
      const accounts = parsePasswd(await readFile(passwdFile, 'utf8'));
      const uids = new Set(accounts.map((a) => a.uid));
      const accountNames = new Set(accounts.map((a) => a.name));
      for (const c of candidates) {
        if (uids.has(c.uid) || accountNames.has(c.name)) continue;
        await removeOrphanHome(c.path, c.uid, c.gid, 'its uid is in the nodemgr range and has no account');
      }
    });

  /**
   * Initscripts and start records of accounts that are gone (the run directory outlives them until
   * reboot). The account list is read after the directory: start() writes these files only for an
   * account that exists, so a file whose account is missing from that later read is stale.
   */
  const sweepRunDir = async () => {
    let files: string[];
    try {
      files = await readdir(initscriptDir(runDir));
    } catch {
      return;
    }
    const accounts = new Set(parsePasswd(await readFile(passwdFile, 'utf8')).map((a) => a.name));
    for (const file of files) {
      const name = file.split('.')[0]!;
      if (invalidAccountName(name) === null && !accounts.has(name)) await removeInitscriptFiles(runDir, name);
    }
  };

  // What the account files looked like at the last snapshot: when none of them changed (same
  // inode, size and mtime), neither did the snapshot, and a no-change sync costs three stat calls.
  let cached: { key: string; snapshot: HostSnapshot } | null = null;
  const filesKey = async (): Promise<string> => {
    const parts = await Promise.all(
      [passwdFile, shadowFile, initscriptDir(runDir)].map((f) =>
        stat(f, { bigint: true }).then((st) => `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`, () => 'none'),
      ),
    );
    return parts.join('|');
  };
  // Leftovers of an interrupted destroy (a home or run files whose account is gone) are looked for
  // when the account files changed since the last sweep, at the first observe (a restart after a
  // crash) and after a destroy that failed; not on every pass, since the sweep lists every home.
  let sweptAt: string | null = null;

  const snapshot = async (): Promise<HostSnapshot> => {
    const key = await filesKey();
    if (cached?.key === key) return cached.snapshot;
    const fresh = await readSnapshot();
    cached = { key, snapshot: fresh };
    return fresh;
  };

  const readSnapshot = async (): Promise<HostSnapshot> => {
    const owned: ObservedAccount[] = [];
    const foreign = new Set<string>();
    const startRecords = new Set(await readdir(initscriptDir(runDir)).catch(() => [] as string[]));
    for (const account of await readAccounts()) {
      const owner = ownership(account);
      if (owner.owned) {
        const enabled = loginEnabled(account);
        const started = enabled && (owner.kind !== 'sliver' || startRecords.has(`${account.name}.started`));
        owned.push({ name: account.name, kind: owner.kind, runtime: 'unix', uid: account.uid, loginEnabled: enabled, started });
      } else {
        foreign.add(account.name);
      }
    }
    return { owned, foreign };
  };

  return {
    async loginAccount(name) {
      if (invalidAccountName(name) !== null) return null;
      const account = await findAccount(name);
      if (!account) return null;
      const owner = ownership(account);
      if (!owner.owned || owner.kind !== 'sliver') return null;
      const started = (await snapshot()).owned.find((o) => o.name === name)?.started ?? false;
      return { account: { name, uid: account.uid, gid: account.gid, home: account.home, shell: account.shell }, started };
    },

    async observe(observeOptions = {}) {
      const key = observeOptions.readOnly ? null : await filesKey();
      if (key !== null && key !== sweptAt) {
        sweptAt = key;
        // Tidying must not keep the daemon from seeing its accounts: a failure is reported and
        // the next observe tries again.
        await sweepOrphans().catch((err) => {
          sweptAt = null;
          logger.warn('orphaned homes not removed', { error: describeError(err) });
        });
        await sweepRunDir().catch((err) => {
          sweptAt = null;
          logger.warn('stale initscripts not removed', { error: describeError(err) });
        });
      }
      return snapshot();
    },

    async create(spec) {
      if (spec.kind !== 'sliver' && spec.kind !== 'delegate') throw new Error(`unknown account kind ${JSON.stringify(spec.kind)}`);
      const existing = await ownedAccount(spec.name, 'create');
      if (existing) {
        // Created before (a retry, or a restart after a kill): never a second account.
        if (existing.kind !== spec.kind) {
          throw new Error(`cannot create ${spec.kind} "${spec.name}": a ${existing.kind} of that name exists`);
        }
        await ensureHome(existing);
        return { uid: existing.uid };
      }
      const home = join(homeBase, spec.name);
      await claimHomePath(home);
      const started = Date.now();
      const range = (key: string) => ['-K', `${key}_MIN=${uidMin}`, '-K', `${key}_MAX=${uidMax}`];
      // An enabled account is made with the login state start() would give it, which saves a
      // usermod (a lock on the account files) per account. That is safe: logins are by key only,
      // "*" matches no password, and no key is written before configure. A disabled one is made
      // locked, with no login shell.
      await shadowUtil('useradd', [
        '-m', '-d', home,
        '-c', ownershipMarker(spec.kind),
        '-s', spec.enabled ? shellOf(spec.kind) : disabledShell,
        '-p', spec.enabled ? NO_PASSWORD : '!',
        '-U', ...range('UID'), ...range('GID'),
        // 0750 with the account's private group, of which it is the only member: nobody else can
        // read the home, as with 0700, while the group bit leaves room to share it deliberately.
        '-K', 'HOME_MODE=0750',
        // Slivers get no subordinate id ranges (they run no user namespaces of their own), and
        // lastlog/faillog need no sparse entries for high uids.
        '-K', 'SUB_UID_COUNT=0', '-K', 'SUB_GID_COUNT=0', '-l',
        spec.name,
      ]);
      const made = await ownedAccount(spec.name, 'create');
      if (!made) throw new Error(`useradd reported success but "${spec.name}" is not in ${passwdFile}`);
      await ensureHome(made);
      logger.info('account created', { account: spec.name, kind: spec.kind, uid: made.uid, duration_ms: Date.now() - started });
      return { uid: made.uid };
    },

    async configure(spec) {
      const account = await requireOwned(spec, 'configure');
      await writeAuthorizedKeys(account.home, account, spec.keys, (message) =>
        logger.warn(message, { account: spec.name }),
      );
      // A started account keeps the shell of its kind (the delegate shell may have been
      // configured, or installed, after the account was started).
      if (loginEnabled(account) && account.shell !== shellOf(spec.kind)) {
        await shadowUtil('usermod', ['-s', shellOf(spec.kind), spec.name]);
      }
      logger.debug('account configured', { account: spec.name, keys: spec.keys.length });
    },

    async start(spec, context) {
      const account = await requireOwned(spec, 'start');
      const wasRunning = loginEnabled(account);
      const shell = shellOf(spec.kind);
      const args: string[] = [];
      if (account.shell !== shell) args.push('-s', shell);
      // `usermod -U` refuses an account whose password would become empty; "*" enables the
      // account with no usable password, which is what a key-only account is.
      if (account.shadow?.hash !== NO_PASSWORD) args.push('-p', NO_PASSWORD);
      if (args.length > 0) await shadowUtil('usermod', [...args, spec.name]);
      if (spec.kind !== 'sliver') return;

      const text = spec.initscript ?? '';
      const hash = initscriptHash(text);
      if (text === '') {
        // No script to run, but the start is still recorded: observe() reads it as "started
        // since boot", so that after a reboot the planner starts the sliver again.
        await removeInitscriptFiles(runDir, spec.name);
        await mkdir(initscriptDir(runDir), { recursive: true, mode: 0o711 });
        await recordStarted(runDir, spec.name, hash);
        return;
      }
      if (wasRunning && (await startedHash(runDir, spec.name)) === hash) {
        logger.debug('initscript already started', { account: spec.name });
        return;
      }
      const target = { name: spec.name, uid: account.uid, gid: account.gid, home: account.home, shell };
      const path = await writeInitscript(runDir, target, text);
      const launched = await launchInitscript(target, path, context.cgroupProcFiles);
      await recordStarted(runDir, spec.name, hash);
      logger.info('initscript started', { account: spec.name, pid: launched.pid });
      void launched.exited.then(({ code, signal }) => {
        logger.debug('initscript ended', { account: spec.name, pid: launched.pid, code, signal });
      });
    },

    async stop(name) {
      const account = await ownedAccount(name, 'stop');
      if (!account) {
        await forgetStarted(runDir, name);
        return;
      }
      await stopAccount(account);
    },

    async destroy(name, kind) {
      try {
        await destroyAccount(name, kind);
      } catch (err) {
        sweptAt = null;
        throw err;
      }
    },
  };

  async function destroyAccount(name: string, _kind: AccountKind): Promise<void> {
      const account = await ownedAccount(name, 'destroy');
      if (!account) {
        await removeInitscriptFiles(runDir, name);
        return;
      }
      const started = Date.now();
      await stopAccount(account);
      try {
        // -r removes the home and mail spool; with USERGROUPS_ENAB (Debian's default) userdel also
        // removes the private group. No -f: that would remove a home or group that is not the
        // account's own.
        await shadowUtil('userdel', ['-r', name]);
      } catch (err) {
        // userdel removes the entry first and the home after; if the entry is gone, what it could
        // not finish is done below.
        if (await findAccount(name)) throw err;
        logger.warn('userdel failed after removing the account; finishing', { account: name, error: describeError(err) });
      }
      await removePrivateGroup(account);
      // Still there when userdel was killed between removing the entry and the home, or when it
      // could not remove all of it (it stops at the first error). The account is gone and its
      // processes are dead, so nothing can race the removal; only a directory owned by its uid is
      // taken.
      await removeLeftoverHome(account);
      await removeInitscriptFiles(runDir, name);
      logger.info('account destroyed', { account: name, uid: account.uid, duration_ms: Date.now() - started });
  }

  /**
   * useradd -m adopts a directory that is already there without changing its owner, so a new
   * account would get someone else's files as its home. An orphan of ours (uid in the range, no
   * account) is removed, as observe() would; anything else makes create refuse.
   */
  async function claimHomePath(home: string): Promise<void> {
    const st = await lstat(home).catch(() => null);
    if (!st) return;
    const accounts = await readAccounts();
    if (st.isDirectory() && inRange(st.uid) && !accounts.some((a) => a.uid === st.uid)) {
      await removeOrphanHome(home, st.uid, st.gid, 'in the way of a new account');
      return;
    }
    throw new Error(`refusing to create account "${basename(home)}": ${home} already exists and is not an orphan of nodemgr`);
  }

  /** A home that is missing (a create cut short after the entry was written) is made again, empty. */
  async function ensureHome(account: HostAccount): Promise<void> {
    const st = await lstat(account.home).catch(() => null);
    if (st) {
      // A useradd that does not know HOME_MODE leaves the umask's 0755. The home's own name sits
      // in homeBase, which only root can change, so chmod by path cannot be sent elsewhere.
      if (st.isDirectory() && st.uid === account.uid && (st.mode & 0o777) !== 0o750 && (st.mode & 0o027) !== 0) {
        await chmod(account.home, 0o750);
      }
      return;
    }
    await mkdir(account.home, { mode: 0o750 });
    await chown(account.home, account.uid, account.gid);
    await chmod(account.home, 0o750);
    logger.warn('account home was missing; made again', { account: account.name, home: account.home });
  }

  async function removePrivateGroup(account: HostAccount): Promise<void> {
    const groups = parseGroup(await readFile(groupFile, 'utf8').catch(() => ''));
    const group = groups.find((g) => g.name === account.name);
    // Only the group that useradd -U made for this account: same name, its gid, no members.
    if (!group || group.gid !== account.gid || !inRange(group.gid) || group.members.length > 0) return;
    if ((await readAccounts()).some((a) => a.gid === group.gid)) return;
    await shadowUtil('groupdel', [account.name]);
  }

  async function removeLeftoverHome(account: HostAccount): Promise<void> {
    const home = account.home;
    if (!isAbsolute(home) || basename(home) !== account.name) return;
    const st = await lstat(home).catch(() => null);
    if (!st || !st.isDirectory() || st.uid !== account.uid) return;
    await removeOrphanHome(home, account.uid, account.gid, 'left by userdel');
  }
}
