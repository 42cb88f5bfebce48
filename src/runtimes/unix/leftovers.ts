// What an interrupted create or destroy can leave of a unix account, and how it is found and
// removed safely: a home without an account, initscripts of an account that is gone, the home and
// mail of an account whose entry was removed.
import { chmod, lstat, readdir, readFile, rm, rmdir } from 'node:fs/promises';
import { basename, isAbsolute, join } from 'node:path';
import { invalidAccountName } from '../../host/account-names.js';
import { parsePasswd } from '../../host/passwd.js';
import { killProcessesOf } from '../../host/processes.js';
import type { Logger } from '../../log.js';
import type { HostAccount, HostAccounts } from './host-accounts.js';
import { initscriptDir, removeInitscriptFiles } from './initscript.js';
import { HOME_MODE, makeHome } from './home.js';
import { removeTree } from './remove-tree.js';
import { exclusive } from './shadow-utils.js';

const MAIL_DIR = '/var/mail';

export interface Leftovers {
  /** Homes in the home base whose uid is ours and has no account (an interrupted destroy or create). */
  sweepHomes(): Promise<void>;
  /** Initscripts and start records of accounts that are gone. */
  sweepRunDir(): Promise<void>;
  /** Makes way for a new account's home: removes an orphan of ours there, refuses anything else. */
  claimHomePath(home: string): Promise<void>;
  /** A missing home (a create cut short after the entry was written) is made again, empty. */
  ensureHome(account: HostAccount): Promise<void>;
  /** The mail spool of an account that is gone, when it is still the account's. */
  removeMailSpool(account: HostAccount): Promise<void>;
  /** The home of an account that is gone (its entry removed, its processes killed), when it is still the account's. */
  removeHome(account: HostAccount): Promise<void>;
}

export function leftovers(accounts: HostAccounts, options: { homeBase: string; runDir: string }, logger: Logger): Leftovers {
  const { homeBase, runDir } = options;
  const { passwdFile } = accounts.files;

  /**
   * Removes a home directory that no account owns any more. Safe because it is taken only when its
   * owner uid is in our range (uids there are handed out by us alone) and no passwd entry has that
   * uid or that name: nobody can log in as it, and it can only be what an interrupted destroy (or
   * create) left behind. Processes of the uid, if any survived, are killed first; those of other
   * users (a home its owner opened to them) may still change the tree, which removeTree withstands.
   */
  const removeOrphanHome = async (path: string, uid: number, gid: number, why: string) => {
    await killProcessesOf(uid, gid);
    await removeTree(path);
    logger.info('orphaned home removed', { home: path, uid, why });
  };

  return {
    sweepHomes: () =>
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
          if (!st || !st.isDirectory() || !accounts.inRange(st.uid)) continue;
          candidates.push({ path, name, uid: st.uid, gid: st.gid });
        }
        if (candidates.length === 0) return;
        // Read after the listing: an account made in between is then seen and its home kept.
        const entries = parsePasswd(await readFile(passwdFile, 'utf8'));
        const uids = new Set(entries.map((a) => a.uid));
        const accountNames = new Set(entries.map((a) => a.name));
        for (const c of candidates) {
          if (uids.has(c.uid) || accountNames.has(c.name)) continue;
          await removeOrphanHome(c.path, c.uid, c.gid, 'its uid is in the nodemgr range and has no account');
        }
      }),

    // The account list is read after the directory: start() writes these files only for an
    // account that exists, so a file whose account is missing from that later read is stale.
    async sweepRunDir() {
      let files: string[];
      try {
        files = await readdir(initscriptDir(runDir));
      } catch {
        return;
      }
      const names = new Set(parsePasswd(await readFile(passwdFile, 'utf8')).map((a) => a.name));
      for (const file of files) {
        const name = file.split('.')[0]!;
        if (invalidAccountName(name) === null && !names.has(name)) await removeInitscriptFiles(runDir, name);
      }
    },

    // A new account must not get a directory that is already there (someone else's files) as its home.
    async claimHomePath(home) {
      const st = await lstat(home).catch(() => null);
      if (!st) return;
      const all = await accounts.readAll();
      if (st.isDirectory() && accounts.inRange(st.uid) && !all.some((a) => a.uid === st.uid)) {
        await removeOrphanHome(home, st.uid, st.gid, 'in the way of a new account');
        return;
      }
      throw new Error(`refusing to create account "${basename(home)}": ${home} already exists and is not an orphan of nodemgr`);
    },

    async ensureHome(account) {
      let st = await lstat(account.home).catch(() => null);
      // An empty directory of root's at the home of an account of ours: what an older version's
      // create killed between making the home and giving it away left (claimHomePath refused
      // anything else there).
      if (st?.isDirectory() && st.uid === 0 && basename(account.home) === account.name && (await readdir(account.home)).length === 0) {
        await rmdir(account.home);
        st = null;
      }
      if (st) {
        // A home made by an older useradd that does not know HOME_MODE has the umask's 0755. The
        // home's own name sits in homeBase, which only root can change, so chmod by path cannot be
        // sent elsewhere.
        if (st.isDirectory() && st.uid === account.uid && (st.mode & 0o777) !== HOME_MODE && (st.mode & 0o027) !== 0) {
          await chmod(account.home, HOME_MODE);
        }
        return;
      }
      // The entry is written before the home is made, so a create cut short in between leaves this.
      await makeHome(account.home, account);
      logger.info('account home was missing; made', { account: account.name, home: account.home });
    },

    async removeMailSpool(account) {
      const spool = join(MAIL_DIR, account.name);
      const st = await lstat(spool).catch(() => null);
      if (st && !st.isDirectory() && st.uid === account.uid) await rm(spool, { force: true });
    },

    async removeHome(account) {
      const home = account.home;
      if (!isAbsolute(home) || basename(home) !== account.name) return;
      const st = await lstat(home).catch(() => null);
      if (!st || !st.isDirectory() || st.uid !== account.uid) return;
      // The caller killed the uid's processes after removing its entry; other users' processes
      // may still be at work in it (removeTree).
      await removeTree(home);
    },
  };
}
