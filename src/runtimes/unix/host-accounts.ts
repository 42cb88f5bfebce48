// The accounts on the host as the unix runtime sees them, and which are its own.
//
// Ownership: an account is this daemon's when its GECOS field is exactly "nodemgr sliver" or
// "nodemgr delegate" AND its uid lies in the configured range. Anything else (system accounts,
// people's accounts, an account with the marker but outside the range) is foreign and is never
// changed, stopped or removed. The marker also says the kind, so recovery after a restart needs
// nothing but /etc/passwd.
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { invalidAccountName } from '../../host/account-names.js';
import type { AccountKind } from '../../db/types.js';
import { parsePasswd, parseShadow, type PasswdEntry, type ShadowEntry } from '../../host/passwd.js';
import type { Logger } from '../../log.js';
import { describeError, PermanentError } from '../../util/errors.js';
import { ownString } from '../../util/text.js';
import type { AccountSpec } from '../types.js';

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

export interface HostAccount extends PasswdEntry {
  /** Null when the shadow file could not be read (not root). */
  readonly shadow: ShadowEntry | null;
}

export type OwnedAccount = HostAccount & { readonly kind: AccountKind };

export type Ownership = { owned: true; kind: AccountKind } | { owned: false; reason: string };

export interface AccountFiles {
  readonly passwdFile: string;
  readonly shadowFile: string;
  readonly groupFile: string;
}

export interface HostAccounts {
  readonly files: AccountFiles;
  inRange(uid: number): boolean;
  readAll(): Promise<HostAccount[]>;
  find(name: string): Promise<HostAccount | null>;
  ownership(account: HostAccount): Ownership;
  /** The account if it exists and is ours; throws if it exists and is not; null when absent. */
  owned(name: string, op: string): Promise<OwnedAccount | null>;
  /** The account of the spec, which must exist, be ours and be of the spec's kind. */
  required(spec: AccountSpec, op: string): Promise<OwnedAccount>;
}

/** One copy of each value many accounts share (a shell, a comment, a locked password), made during one read. */
function sharedCopies(): (value: string) => string {
  const seen = new Map<string, string>();
  return (value) => {
    let own = seen.get(value);
    if (own === undefined) seen.set(value, (own = ownString(value)));
    return own;
  };
}

export function hostAccounts(files: AccountFiles, range: { uidMin: number; uidMax: number }, logger: Logger): HostAccounts {
  const { uidMin, uidMax } = range;
  const inRange = (uid: number) => uid >= uidMin && uid <= uidMax;

  // Every operation of every account looks its account up: with a thousand accounts in a batch,
  // reading and parsing both files each time is most of the work. The files are replaced by rename
  // (by this daemon and by shadow-utils alike), so the same inode, size and times mean the same text.
  // After a batch has rewritten them, every waiting operation finds the copy stale at once: the copy
  // is kept from the moment its read starts, so they share that read, where ten thousand of them
  // would each hold a copy of the files. A read that fails is not kept.
  type Snapshot = { accounts: HostAccount[]; byName: Map<string, HostAccount> };
  let cached: { key: string; snapshot: Promise<Snapshot> } | null = null;
  // Two stat calls per lookup, made synchronously: the inodes are cached by the kernel, and the
  // asynchronous form cost more CPU than the lookup itself, waiting behind fsyncs in libuv's threads.
  const fileKey = (file: string) => {
    try {
      const st = statSync(file, { bigint: true });
      return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    } catch {
      return 'none'; // the read that follows names what is wrong
    }
  };
  const filesKey = () => `${fileKey(files.passwdFile)}|${fileKey(files.shadowFile)}`;

  const readAll = async (): Promise<HostAccount[]> => (await current()).accounts;
  const current = async (): Promise<Snapshot> => {
    const key = filesKey();
    if (cached?.key === key) return cached.snapshot;
    const snapshot = readFiles().then((accounts) => {
      const byName = new Map<string, HostAccount>();
      for (const a of accounts) if (!byName.has(a.name)) byName.set(a.name, a); // the first entry is the one that counts
      return { accounts, byName };
    });
    const kept = { key, snapshot };
    cached = kept;
    snapshot.catch(() => {
      if (cached === kept) cached = null;
    });
    return snapshot;
  };

  // The copy keeps strings of its own (util/text.ts ownString): the accounts' names go on into the
  // limits, the supervisors and the metrics for as long as the accounts live, and as views of the
  // text they were cut from they kept every version of the files (a dozen at 10,000 accounts).
  const readFiles = async (): Promise<HostAccount[]> => {
    const passwd = parsePasswd(await readFile(files.passwdFile, 'utf8'));
    let shadow: Map<string, ShadowEntry> | null = null;
    try {
      shadow = new Map(parseShadow(await readFile(files.shadowFile, 'utf8')).map((e) => [e.name, e]));
    } catch (err) {
      logger.debug('shadow file not readable; login state from shells only', { file: files.shadowFile, error: describeError(err) });
    }
    const shared = sharedCopies();
    return passwd.map((p) => {
      const name = ownString(p.name);
      const entry = shadow?.get(p.name);
      return {
        name, uid: p.uid, gid: p.gid, gecos: shared(p.gecos), home: ownString(p.home), shell: shared(p.shell),
        shadow: entry ? { name, hash: shared(entry.hash), locked: entry.locked } : null,
      };
    });
  };
  const find = async (name: string) => (await current()).byName.get(name) ?? null;

  const ownership = (account: HostAccount): Ownership => {
    const kind = kindFromMarker(account.gecos);
    if (kind === null) return { owned: false, reason: 'it has no nodemgr marker' };
    if (!inRange(account.uid)) return { owned: false, reason: `its uid ${account.uid} is outside ${uidMin}-${uidMax}` };
    if (invalidAccountName(account.name) !== null) return { owned: false, reason: 'its name is not a manageable name' };
    return { owned: true, kind };
  };

  const owned = async (name: string, op: string): Promise<OwnedAccount | null> => {
    const invalid = invalidAccountName(name);
    if (invalid) throw new PermanentError(`refusing account ${JSON.stringify(name)}: ${invalid}`);
    const account = await find(name);
    if (!account) return null;
    const owner = ownership(account);
    if (!owner.owned) {
      throw new Error(`refusing to ${op} account "${name}": it exists and is not managed by nodemgr (${owner.reason})`);
    }
    return { ...account, kind: owner.kind };
  };

  return {
    files, inRange, readAll, find, ownership, owned,
    async required(spec, op) {
      const account = await owned(spec.name, op);
      if (!account) throw new Error(`cannot ${op} account "${spec.name}": it does not exist`);
      if (account.kind !== spec.kind) {
        throw new Error(`cannot ${op} account "${spec.name}" as a ${spec.kind}: it is a ${account.kind}`);
      }
      return account;
    },
  };
}
