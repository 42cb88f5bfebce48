// The metrics' wiring: the registry, read from the node database, the image cache and, per
// sliver, from the limits in force on the host and the guests.
import type { Config } from '../config/config.js';
import type { DatabaseStore } from '../db/store.js';
import type { ImageCache } from '../images/cache.js';
import type { Enforcer } from '../limits/enforcer.js';
import type { HostLimits } from '../limits/host-limits.js';
import { readLimitsInForce } from '../limits/in-force.js';
import type { Logger } from '../log.js';
import { createMetrics, type NodeMetrics } from '../metrics/registry.js';
import { readSlivers } from '../metrics/sliver-source.js';
import type { LibvirtRuntime } from '../runtimes/libvirt/runtime.js';
import { describeError } from '../util/errors.js';

export interface MetricsParts {
  readonly version: string;
  readonly store: DatabaseStore;
  readonly images: ImageCache;
  readonly limits: HostLimits;
  readonly enforcer: Enforcer;
  readonly guests: LibvirtRuntime;
  readonly logger: Logger;
  now(): Date;
}

export function createNodeMetrics(config: Config, parts: MetricsParts): NodeMetrics {
  const { store, images, limits, enforcer, guests, logger, now } = parts;
  return createMetrics({
    version: parts.version, db: () => store.data, images: () => images.list(), defaultRuntime: config.defaultRuntime, now,
    slivers: {
      read: () => readSlivers({
        db: () => store.data,
        defaultRuntime: config.defaultRuntime,
        // No disk: where quotas do not count usage, it is a walk of every home, too long for a
        // scrape; `nodemgr status` shows it.
        limitsInForce: (slivers) => readLimitsInForce({
          ...limits, disk: null, byteCaps: enforcer.byteCaps(), byteCapPeriodSeconds: config.byteCapPeriodMs / 1000,
          homeBase: config.homeBase, problems: enforcer.problems(),
        }, slivers),
        byteCaps: () => enforcer.byteCaps(),
        guestStatus: (name) => guests.status(name),
      }),
      onError: (error) => logger.warn('per-sliver metrics not read', { error: describeError(error) }),
    },
  });
}
