// The daemon's parts, measured: each wrapper hands the part on unchanged and tells the metrics
// what happened. The parts themselves know nothing of the metrics.
import type { ApiServerOptions } from '../api/server.js';
import { ApiFault, FaultCode } from '../api/faults.js';
import type { SyncStatusFile } from '../sync/sync-status.js';
import type { Converger } from '../sync/converge.js';
import type { NodeMetrics } from './registry.js';

const seconds = (startedMs: number) => (Date.now() - startedMs) / 1000;

/** The sync status file, counting every outcome it records. */
export function countedSyncStatus(file: SyncStatusFile, metrics: NodeMetrics): SyncStatusFile {
  return {
    get current() {
      return file.current;
    },
    record(status) {
      metrics.sync(status.outcome);
      file.record(status);
    },
    flush: () => file.flush(),
  };
}

/** The converger, timing every pass. */
export function timedConverger(converger: Converger, metrics: NodeMetrics): Converger {
  return {
    async converge(trigger) {
      const started = Date.now();
      try {
        return await converger.converge(trigger);
      } finally {
        metrics.converge(seconds(started));
      }
    },
    desired: () => converger.desired(),
  };
}

/** `task`, timed into the sync duration histogram. */
export async function timedSync<T>(metrics: NodeMetrics, task: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await task();
  } finally {
    metrics.syncDuration(seconds(started));
  }
}

const FAULT_NAMES = new Map<number, string>(Object.entries(FaultCode).map(([name, code]) => [code, name]));

/** The fault's name for the metrics' label: "none" for a result, "internal" for anything unexpected. */
export function faultLabel(error: unknown): string {
  if (error === undefined) return 'none';
  return error instanceof ApiFault ? FAULT_NAMES.get(error.code) ?? String(error.code) : 'internal';
}

/**
 * The API's call, counted and timed by method; a method the API does not have is counted as
 * "unknown", so that callers cannot make a label value of their own.
 */
export function measuredCall(call: ApiServerOptions['call'], names: readonly string[], metrics: NodeMetrics): ApiServerOptions['call'] {
  const known = new Set(names);
  return async (caller, method, params) => {
    const started = Date.now();
    const label = known.has(method) ? method : 'unknown';
    try {
      const result = await call(caller, method, params);
      metrics.apiCall(label, 'none', seconds(started));
      return result;
    } catch (error) {
      metrics.apiCall(label, faultLabel(error), seconds(started));
      throw error;
    }
  };
}
