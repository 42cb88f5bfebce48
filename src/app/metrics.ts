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
import { readSlivers, type SliverSources } from '../metrics/sliver-source.js';
import type { LibvirtRuntime } from '../runtimes/libvirt/runtime.js';
import { describeError } from '../util/errors.js';

/** What the metrics read, and no more (the scrape bench hands over these alone). */
export interface MetricsParts {
  readonly version: string;
  readonly store: Pick<DatabaseStore, 'data'>;
  readonly images: Pick<ImageCache, 'list'>;
  readonly limits: Pick<HostLimits, 'cgroups' | 'shaper' | 'unavailable'>;
  readonly enforcer: Pick<Enforcer, 'byteCaps' | 'problems'>;
  readonly guests: Pick<LibvirtRuntime, 'status'>;
  readonly logger: Logger;
  now(): Date;
}

type MetricsConfig = Pick<Config, 'defaultRuntime' | 'byteCapPeriodMs' | 'homeBase'>;

/** Where the per-sliver readings come from on this node. */
export function sliverSourcesOf(config: MetricsConfig, parts: MetricsParts): SliverSources {
  const { store, limits, enforcer, guests } = parts;
  return {
    db: () => store.data,
    defaultRuntime: config.defaultRuntime,
    // No disk: where quotas do not count usage, it is a walk of every home, too long for a
    // scrape; `nodemgr status` shows it.
    limitsInForce: (slivers) => readLimitsInForce({
      cgroups: limits.cgroups, shaper: limits.shaper, unavailable: limits.unavailable, disk: null,
      byteCaps: enforcer.byteCaps(), byteCapPeriodSeconds: config.byteCapPeriodMs / 1000, homeBase: config.homeBase, problems: enforcer.problems(),
    }, slivers),
    byteCaps: () => enforcer.byteCaps(),
    guestStatus: (name) => guests.status(name),
  };
}

export function createNodeMetrics(config: MetricsConfig, parts: MetricsParts): NodeMetrics {
  const { store, images, logger, now } = parts;
  const sources = sliverSourcesOf(config, parts);
  return createMetrics({
    version: parts.version, db: () => store.data, images: () => images.list(), defaultRuntime: config.defaultRuntime, now,
    slivers: {
      read: () => readSlivers(sources),
      onError: (error) => logger.warn('per-sliver metrics not read', { error: describeError(error) }),
    },
  });
}
