// Where the daemon keeps its files, from the configuration: shared by the daemon and the commands
// that only look (status, plan) and the benchmarks.
import { join } from 'node:path';
import type { Config } from '../config/config.js';

export function databasePath(config: Config): string {
  return join(config.stateDir, 'nodemgr.json');
}

export function lockPath(config: Config): string {
  return join(config.stateDir, 'nodemgr.lock');
}

export function byteCapPath(config: Config): string {
  return join(config.stateDir, 'byte-caps.json');
}
