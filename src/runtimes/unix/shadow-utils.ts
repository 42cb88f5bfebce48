// Running the shadow-utils tools (useradd, usermod, userdel, groupdel) that change the account files.
import type { Logger } from '../../log.js';
import { serialQueue } from '../../util/serial.js';
import { CommandError, runCommand } from '../../host/exec.js';

// A fixed environment: the tools' messages in English, for recognising a lock held by another tool.
const SHADOW_UTILS_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const LOCK_ATTEMPTS = 6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// One account-file change at a time within this process: the tools would only contend for the
// same lock files, and the sweep of orphaned homes must not run while useradd is half-way (its
// home may exist before its passwd entry is visible).
const accountFiles = serialQueue();

/** Runs `task` when no other account-file change of this process is running. */
export function exclusive<T>(task: () => Promise<T>): Promise<T> {
  return accountFiles.run(task);
}

/**
 * Runs a shadow-utils command, waiting out a lock that another tool (vipw, adduser, a second
 * useradd) holds on the account files: they fail at once with "cannot lock ...; try again later".
 */
export async function runShadowUtil(file: string, args: string[], logger: Logger): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await exclusive(() => runCommand(file, args, { env: SHADOW_UTILS_ENV, timeoutMs: 30_000 }));
      return;
    } catch (err) {
      if (!(err instanceof CommandError) || !/cannot lock/i.test(err.stderr) || attempt >= LOCK_ATTEMPTS) throw err;
      logger.debug('account files locked by another tool; retrying', { command: file, attempt });
      await sleep(50 * 2 ** attempt);
    }
  }
}
