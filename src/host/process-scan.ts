// Which uids have live processes, from one scan of /proc shared by every caller that asks at about
// the same time: a batch of destroys asks for hundreds of uids at once, and one scan answers them
// all where one scan each would read every process's status hundreds of times.
import { readdir } from 'node:fs/promises';
import { sharedRead } from '../util/shared-read.js';
import { readProcess } from './processes.js';

export interface ProcessScan {
  /**
   * The uids (real or saved) of the live processes, from a scan that starts after this call, so
   * that a process that existed when it was made is in the answer.
   */
  uidsWithProcesses(): Promise<ReadonlySet<number>>;
}

export function sharedProcessScan(procRoot = '/proc'): ProcessScan {
  const scan = async (): Promise<ReadonlySet<number>> => {
    const pids = (await readdir(procRoot)).filter((n) => /^\d+$/.test(n)).map(Number);
    const infos = await Promise.all(pids.map((pid) => readProcess(pid, procRoot)));
    const uids = new Set<number>();
    for (const info of infos) {
      if (info === null || info.state === 'Z' || info.state === 'X') continue;
      uids.add(info.uids[0]!);
      uids.add(info.uids[2]!);
    }
    return uids;
  };
  return { uidsWithProcesses: sharedRead(scan) };
}
