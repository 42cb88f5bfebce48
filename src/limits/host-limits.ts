// The limit adapters this host can use, made from the configuration. Whatever the host lacks is
// reported with the reason and left out, so that the rest still works: a node without a usable
// uplink still gets CPU and memory limits.
import { availableParallelism } from 'node:os';
import type { Config } from '../config/config.js';
import type { Logger } from '../log.js';
import { createSliverCgroups, type SliverCgroups } from './cgroups.js';
import { createDiskLimits, type DiskLimits } from './disk.js';
import { createTrafficShaper, defaultRouteDevice, type TrafficShaper } from './tc.js';
import { describeError } from '../util/errors.js';

/** The HTB major number of our tree: "NM" in ASCII, what tells our qdisc from anyone else's. */
export const SHAPING_MAJOR = '4e4d';

export interface HostLimits {
  readonly cgroups: SliverCgroups | null;
  readonly shaper: TrafficShaper | null;
  readonly disk: DiskLimits;
  readonly cpuCount: number;
  /** Why a kind of limit is not enforced on this host, by kind. */
  readonly unavailable: ReadonlyMap<'cgroups' | 'bandwidth', string>;
}

/** With `readOnly` (status), nothing is created on the host, not even the parent groups. */
export async function hostLimits(config: Config, logger: Logger, options: { readOnly?: boolean } = {}): Promise<HostLimits> {
  const unavailable = new Map<'cgroups' | 'bandwidth', string>();
  let cgroups: SliverCgroups | null = null;
  try {
    cgroups = await createSliverCgroups({ root: config.cgroupRoot, parent: config.cgroupParent });
    if (!options.readOnly) await cgroups.ensureParent();
  } catch (error) {
    cgroups = null;
    unavailable.set('cgroups', describeError(error));
    logger.error('cgroups unavailable: CPU, memory and process limits are not enforced', { error: describeError(error) });
  }

  let shaper: TrafficShaper | null = null;
  let device: string | null = config.shapingDevice;
  if (device === 'auto') {
    device = await defaultRouteDevice().catch((error: unknown) => {
      unavailable.set('bandwidth', `the default route could not be read: ${describeError(error)}`);
      return null;
    });
    if (device === null && !unavailable.has('bandwidth')) {
      unavailable.set('bandwidth', 'shaping_device is auto and the host has no IPv4 default route');
    }
  } else if (device === 'none') {
    device = null;
    unavailable.set('bandwidth', 'shaping_device is none');
  }
  if (device !== null) {
    shaper = createTrafficShaper({
      layout: {
        device, major: SHAPING_MAJOR, uidMin: config.sliverUidMin, uidMax: config.sliverUidMax,
        linkRateKbit: config.shapingLinkRateKbit, nodeCapKbit: config.shapingLinkRateKbit,
        exemptCapKbit: config.exemptCapKbit, exemptPrefixes: config.exemptPrefixes,
      },
    });
  } else {
    logger.warn('bandwidth not shaped', { reason: unavailable.get('bandwidth') ?? '' });
  }

  return {
    // A status must not wait minutes on a home with millions of files: the walk (used where
    // quotas do not count usage) stops early and says its figure is a lower bound.
    cgroups, shaper, disk: createDiskLimits({ homeBase: config.homeBase, walkMaxMs: 5_000 }),
    cpuCount: availableParallelism(), unavailable,
  };
}
