// The name service caches that keep copies of the account files: nscd and sssd. After the files
// change they are told to drop what they hold, as useradd does, but only where they are installed
// and running (a call to a cache that is not there would only fail).
import { readFile } from 'node:fs/promises';
import { CommandError, runCommand } from '../exec.js';
import type { Logger } from '../../log.js';
import { describeError } from '../../util/errors.js';

const ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

interface NameCache {
  readonly name: string;
  /** The pid file the daemon writes while it runs. */
  readonly pidFile: string;
  /** The daemon's process name, as /proc/<pid>/comm has it. */
  readonly comm: string;
  readonly commands: readonly (readonly [string, readonly string[]])[];
}

const CACHES: readonly NameCache[] = [
  { name: 'nscd', pidFile: '/run/nscd/nscd.pid', comm: 'nscd', commands: [['nscd', ['-i', 'passwd']], ['nscd', ['-i', 'group']]] },
  { name: 'sssd', pidFile: '/run/sssd.pid', comm: 'sssd', commands: [['sss_cache', ['-E']]] },
];

async function running(cache: NameCache): Promise<boolean> {
  const pid = (await readFile(cache.pidFile, 'utf8').catch(() => '')).trim();
  if (!/^\d+$/.test(pid)) return false;
  const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
  return comm === cache.comm;
}

/** Tells each running cache to drop its users and groups; a failure is logged, never thrown. */
export async function invalidateNameCaches(logger: Logger): Promise<void> {
  for (const cache of CACHES) {
    if (!(await running(cache))) continue;
    for (const [file, args] of cache.commands) {
      try {
        await runCommand(file, [...args], { env: ENV, timeoutMs: 10_000 });
      } catch (err) {
        // Not installed although its daemon runs (a container's host process, say): nothing to tell it with.
        if (err instanceof CommandError && err.missing) break;
        logger.warn('name cache not invalidated', { cache: cache.name, error: describeError(err) });
      }
    }
  }
}
