// Running usermod, the shadow-utils tool for single changes of an account (a shell, a lock), and the
// queue that keeps this process's changes of the account files (batches included) one at a time.
import type { Logger } from '../../log.js';
import { serialQueue } from '../../util/serial.js';
import { CommandError, runCommand } from '../../host/exec.js';

// A fixed environment: the tools' messages in English, for recognising a lock held by another tool.
const SHADOW_UTILS_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const LOCK_ATTEMPTS = 6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// One account-file change at a time within this process: a batch and a usermod would only contend
// for the same locks, and the sweep of orphaned homes reads passwd and the homes as one view.
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
