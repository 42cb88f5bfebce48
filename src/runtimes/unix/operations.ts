// What the unix runtime does to one account: create, configure, start, stop and destroy, each
// idempotent. Creations, removals and the shell and login changes of configure, start and stop
// change the account files in batches (account-batcher.ts).
import { lstat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { AccountKind } from '../../db/types.js';
import { type ProcessScan } from '../../host/process-scan.js';
import { killProcessesOf } from '../../host/processes.js';
import type { Logger } from '../../log.js';
import type { AccountChange, AccountOutcome } from '../../host/account-files/plan.js';
import { PermanentError } from '../../util/errors.js';
import type { AccountSpec, StartContext } from '../types.js';
import { writeAuthorizedKeys } from './authorized-keys.js';
import { ownershipMarker, type HostAccount, type HostAccounts } from './host-accounts.js';
import {
  forgetStarted, initscriptDir, initscriptHash, launchInitscript, recordStarted, removeInitscriptFiles, startedHash,
  writeInitscript,
} from './initscript.js';
import type { AccountBatcher } from './account-batcher.js';
import { makeHome } from './home.js';
import type { Leftovers } from './leftovers.js';
import { runShadowUtil } from './shadow-utils.js';

// The password field of a started account: no password can match it, yet it is not "locked",
// so key logins work however sshd is set up (without PAM, OpenSSH refuses locked accounts).
const NO_PASSWORD = '*';

export interface UnixContext {
  readonly accounts: HostAccounts;
  readonly leftovers: Leftovers;
  readonly batcher: AccountBatcher;
  /** Removes what an account batch killed half-way left in the account files. */
  tidyAccountFiles(): Promise<void>;
  /** Which uids have processes (one /proc scan for the destroys of a batch). */
  readonly processScan: ProcessScan;
  readonly logger: Logger;
  readonly uidMin: number;
  readonly uidMax: number;
  readonly homeBase: string;
  readonly runDir: string;
  readonly disabledShell: string;
  /** The login shell of a started account of that kind. */
  shellOf(kind: AccountKind): string;
}

const shadowUtil = (c: UnixContext, file: string, args: string[]) => runShadowUtil(file, args, c.logger);

export const isLocked = (account: HostAccount) => account.shadow?.locked ?? false;
export const loginEnabled = (c: UnixContext, account: HostAccount) => account.shell !== c.disabledShell && !isLocked(account);

/** The outcome's error for a refused account; permanent when the request itself can never be done. */
function refusal(outcome: AccountOutcome & { kind: 'refused' }, name: string, op: string): Error {
  const message = `cannot ${op} account "${name}": ${outcome.reason}`;
  return outcome.permanent ? new PermanentError(message) : new Error(message);
}

/**
 * A shell or login change, in the batch of the account files' changes: a start or a stop of many
 * slivers is one write, not one usermod each (a usermod takes as long as a useradd). An account
 * without a shadow line (not one nodemgr made) keeps usermod's own handling of its passwd field.
 */
async function changeAccount(c: UnixContext, account: HostAccount, change: AccountChange, op: string): Promise<void> {
  if (change.shell === null && change.login === null) return;
  if (account.shadow === null) {
    const args = [...(change.shell === null ? [] : ['-s', change.shell]), ...(change.login === 'enable' ? ['-p', NO_PASSWORD] : change.login === 'lock' ? ['-L'] : [])];
    await shadowUtil(c, 'usermod', [...args, account.name]);
    return;
  }
  const outcome = await c.batcher.change(change);
  if (outcome.kind === 'refused') throw refusal(outcome, account.name, op);
}

export async function createAccount(c: UnixContext, spec: AccountSpec): Promise<{ uid: number }> {
  if (spec.kind !== 'sliver' && spec.kind !== 'delegate') throw new Error(`unknown account kind ${JSON.stringify(spec.kind)}`);
  const home = join(c.homeBase, spec.name);
  // Something at the home's path is an orphan of ours to remove, or a reason to refuse; unless it
  // is the home of the account itself (a create retried, or redone after a restart).
  if (await lstat(home).then(() => true, () => false)) {
    if (!(await c.accounts.owned(spec.name, 'create'))) await c.leftovers.claimHomePath(home);
  }
  const started = Date.now();
  // An enabled account is made with the login state start() would give it, which saves a change
  // of the account files per account. That is safe: logins are by key only, "*" matches no
  // password, and no key is written before configure. A disabled one is made locked, with no
  // login shell.
  const outcome = await c.batcher.create({
    name: spec.name,
    gecos: ownershipMarker(spec.kind),
    home,
    shell: spec.enabled ? c.shellOf(spec.kind) : c.disabledShell,
    password: spec.enabled ? NO_PASSWORD : '!',
  });
  switch (outcome.kind) {
    case 'created': {
      await makeHome(home, outcome);
      c.logger.info('account created', { account: spec.name, kind: spec.kind, uid: outcome.uid, duration_ms: Date.now() - started });
      return { uid: outcome.uid };
    }
    case 'exists': {
      // Created before (a retry, or a restart after a kill): never a second account.
      const existing = await c.accounts.owned(spec.name, 'create');
      if (!existing) throw new Error(`cannot create account "${spec.name}": it was removed while being created; retrying`);
      if (existing.kind !== spec.kind) throw new Error(`cannot create ${spec.kind} "${spec.name}": a ${existing.kind} of that name exists`);
      await c.leftovers.ensureHome(existing);
      return { uid: existing.uid };
    }
    case 'refused':
      throw refusal(outcome, spec.name, 'create');
    default:
      throw new Error(`cannot create account "${spec.name}": the account batch answered ${outcome.kind}`);
  }
}

export async function configureAccount(c: UnixContext, spec: AccountSpec): Promise<void> {
  const account = await c.accounts.required(spec, 'configure');
  // A create killed after the batch wrote the entry leaves no home, or an empty one of root's, and
  // a restart sees the account and goes on with configure: what create had left to do is done here.
  await c.leftovers.ensureHome(account);
  await writeAuthorizedKeys(account.home, account, spec.keys, (message) => c.logger.warn(message, { account: spec.name }));
  // A started account keeps the shell of its kind (the delegate shell may have been
  // configured, or installed, after the account was started).
  if (loginEnabled(c, account) && account.shell !== c.shellOf(spec.kind)) {
    await changeAccount(c, account, { name: spec.name, shell: c.shellOf(spec.kind), login: null }, 'configure');
  }
  c.logger.debug('account configured', { account: spec.name, keys: spec.keys.length });
}

export async function startAccount(c: UnixContext, spec: AccountSpec, context: StartContext): Promise<void> {
  const account = await c.accounts.required(spec, 'start');
  const wasRunning = loginEnabled(c, account);
  const shell = c.shellOf(spec.kind);
  // "*" enables the account with no usable password, which is what a key-only account is
  // (`usermod -U` would refuse one whose password would become empty).
  await changeAccount(c, account, {
    name: spec.name, shell: account.shell === shell ? null : shell, login: account.shadow?.hash === NO_PASSWORD ? null : 'enable',
  }, 'start');
  if (spec.kind !== 'sliver') return;

  const text = spec.initscript ?? '';
  const hash = initscriptHash(text);
  if (text === '') {
    // No script to run, but the start is still recorded: observe() reads it as "started
    // since boot", so that after a reboot the planner starts the sliver again.
    await removeInitscriptFiles(c.runDir, spec.name);
    await mkdir(initscriptDir(c.runDir), { recursive: true, mode: 0o711 });
    await recordStarted(c.runDir, spec.name, hash);
    return;
  }
  if (wasRunning && (await startedHash(c.runDir, spec.name)) === hash) {
    c.logger.debug('initscript already started', { account: spec.name });
    return;
  }
  const target = { name: spec.name, uid: account.uid, gid: account.gid, home: account.home, shell };
  const path = await writeInitscript(c.runDir, target, text);
  const launched = await launchInitscript(target, path, context.cgroupProcFiles);
  await recordStarted(c.runDir, spec.name, hash);
  c.logger.info('initscript started', { account: spec.name, pid: launched.pid });
  void launched.exited.then(({ code, signal }) => {
    c.logger.debug('initscript ended', { account: spec.name, pid: launched.pid, code, signal });
  });
}

/** Login disabled, the next start runs the initscript again, every process of the uid killed. */
async function stopHostAccount(c: UnixContext, account: HostAccount): Promise<void> {
  // A lock puts "!" before the hash; an account is never left half-locked, and "!" alone (a new
  // account) is locked already.
  await changeAccount(c, account, {
    name: account.name, shell: account.shell === c.disabledShell ? null : c.disabledShell,
    login: account.shadow !== null && account.shadow.locked ? null : 'lock',
  }, 'stop');
  await forgetStarted(c.runDir, account.name);
  // Whatever of the uid is still running (the supervisor's hooks emptied the sliver's groups).
  const killed = await killProcessesOf(account.uid, account.gid);
  c.logger.debug('account processes killed', { account: account.name, uid: account.uid, killed });
}

export async function stopAccount(c: UnixContext, name: string): Promise<void> {
  const account = await c.accounts.owned(name, 'stop');
  if (!account) {
    await forgetStarted(c.runDir, name);
    return;
  }
  await stopHostAccount(c, account);
}

export async function destroyAccount(c: UnixContext, name: string): Promise<void> {
  const account = await c.accounts.owned(name, 'destroy');
  if (!account) {
    await removeInitscriptFiles(c.runDir, name);
    return;
  }
  const started = Date.now();
  await forgetStarted(c.runDir, name);
  // The entry goes first (with its shadow line and private group, in the batch): from then on
  // nobody can log in as the account, so what is killed below cannot be replaced.
  const outcome = await c.batcher.remove(name);
  if (outcome.kind === 'refused') throw refusal(outcome, name, 'destroy');
  // Whatever of the uid still runs (the supervisor's hooks emptied the sliver's groups), then its
  // home and mail, found by owner: the uid is no one's now, and its processes are dead, so nothing
  // can race the removal.
  const killed = (await c.processScan.uidsWithProcesses()).has(account.uid) ? await killProcessesOf(account.uid, account.gid) : 0;
  await c.leftovers.removeHome(account);
  await c.leftovers.removeMailSpool(account);
  await removeInitscriptFiles(c.runDir, name);
  c.logger.info('account destroyed', { account: name, uid: account.uid, killed, duration_ms: Date.now() - started });
}
