// The per-sliver metrics, pure: what one sliver's reading is (from the limits in force that
// `nodemgr status` shows, the byte counters of the bandwidth enforcer, or a libvirt guest's
// status), and which series each metric makes of it, in base units.
import type { SliverByteCaps } from '../limits/bwmon.js';
import type { LimitsInForce } from '../limits/in-force.js';
import type { GuestStatus } from '../runtimes/types.js';
import type { RuntimeKind } from '../slices/types.js';

/** Ordinary traffic and the traffic exempt from the node's cap (net_i2_*), as the byte caps name them. */
export type Traffic = 'ordinary' | 'exempt';

export interface TrafficReading {
  /** The traffic class's byte counter: a counter, which starts again when the class is made afresh. */
  readonly sentBytes: number | null;
  /** Bytes sent in the current byte-cap period. */
  readonly periodSentBytes: number | null;
  readonly throttled: boolean | null;
  readonly ceilingBytesPerSecond: number | null;
  readonly guaranteeBytesPerSecond: number | null;
}

/** One sliver as the host holds it; null where this host does not measure or enforce it. */
export interface SliverReading {
  readonly name: string;
  readonly runtime: RuntimeKind;
  readonly cpuSeconds: number | null;
  readonly memoryBytes: number | null;
  readonly processes: number | null;
  readonly oomKills: number | null;
  readonly cpuShares: number | null;
  /** The CPU cap, in CPUs (0.5: half of one CPU's time). */
  readonly cpuCapCpus: number | null;
  readonly vcpus: number | null;
  readonly memoryMaxBytes: number | null;
  readonly processesMax: number | null;
  readonly traffic: Readonly<Partial<Record<Traffic, TrafficReading>>>;
}

const numberIn = (limits: LimitsInForce, key: string): number | null => {
  const value = limits[key];
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
};
const booleanIn = (limits: LimitsInForce, key: string): boolean | null => {
  const value = limits[key];
  return typeof value === 'boolean' ? value : null;
};
const times = (value: number | null, factor: number) => (value === null ? null : value * factor);

/** kbit/s (the rspec's unit, SI) to bytes per second. */
const KBIT_IN_BYTES = 1000 / 8;

/** The rspec's name stem of each traffic's rates and counts. */
const TRAFFIC_STEMS: ReadonlyArray<[Traffic, string, 'main' | 'exempt']> = [['ordinary', 'net', 'main'], ['exempt', 'net_i2', 'exempt']];

/**
 * A Unix sliver's reading: its limits in force and usage as readLimitsInForce read them back (in
 * the rspec's units: KiB, kbit/s, percent of a CPU), and its byte counts as the enforcer keeps them.
 */
export function unixSliverReading(name: string, limits: LimitsInForce, caps: SliverByteCaps | undefined): SliverReading {
  const traffic: Partial<Record<Traffic, TrafficReading>> = {};
  for (const [label, stem, pair] of TRAFFIC_STEMS) {
    const state = caps?.[pair];
    const reading: TrafficReading = {
      sentBytes: state?.lastCounter ?? null,
      periodSentBytes: state?.usedBytes ?? null,
      throttled: booleanIn(limits, `${stem}_throttled`),
      ceilingBytesPerSecond: times(numberIn(limits, `${stem}_max_rate`), KBIT_IN_BYTES),
      guaranteeBytesPerSecond: times(numberIn(limits, `${stem}_min_rate`), KBIT_IN_BYTES),
    };
    if (Object.values(reading).some((v) => v !== null)) traffic[label] = reading;
  }
  return {
    name, runtime: 'unix',
    cpuSeconds: numberIn(limits, 'cpu_used_seconds'),
    memoryBytes: times(numberIn(limits, 'mem_used'), 1024),
    processes: numberIn(limits, 'processes'),
    oomKills: numberIn(limits, 'oom_kills'),
    cpuShares: numberIn(limits, 'cpu_shares'),
    cpuCapCpus: times(numberIn(limits, 'cpu_cap'), 1 / 100),
    vcpus: null,
    memoryMaxBytes: times(numberIn(limits, 'mem_max'), 1024),
    processesMax: numberIn(limits, 'proc_max'),
    traffic,
  };
}

/**
 * A libvirt sliver's reading: what its domain's definition holds (vCPUs, memory, CPU shares). Its
 * usage inside the guest is not read: the guest layer's status does not carry it.
 */
export function guestSliverReading(name: string, status: GuestStatus): SliverReading {
  return {
    name, runtime: status.runtime,
    cpuSeconds: null, memoryBytes: null, processes: null, oomKills: null,
    cpuShares: status.cpu_shares, cpuCapCpus: null, vcpus: status.vcpus,
    memoryMaxBytes: times(status.memory_kib, 1024), processesMax: null, traffic: {},
  };
}

export type SeriesLabels = Readonly<Record<string, string>>;

export interface SliverSeries {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge';
  /** Beyond sliver and runtime. */
  readonly extraLabels: readonly string[];
  /** The series of one sliver: extra labels and value; none where the reading has no value. */
  values(reading: SliverReading): Array<[SeriesLabels, number]>;
}

const one = (value: number | null): Array<[SeriesLabels, number]> => (value === null ? [] : [[{}, value]]);

function perTraffic(field: keyof TrafficReading): SliverSeries['values'] {
  return (reading) => TRAFFIC_STEMS.flatMap(([traffic]) => {
    const value = reading.traffic[traffic]?.[field];
    if (value === null || value === undefined) return [];
    return [[{ traffic }, typeof value === 'boolean' ? Number(value) : value] as [SeriesLabels, number]];
  });
}

const series = (name: string, type: SliverSeries['type'], help: string, values: SliverSeries['values'], extraLabels: string[] = []): SliverSeries =>
  ({ name, type, help, values, extraLabels });

/** Every per-sliver metric, labelled sliver and runtime (and traffic where there are two). */
export const SLIVER_SERIES: readonly SliverSeries[] = [
  series('nodemgr_sliver_cpu_seconds_total', 'counter', 'CPU time the sliver\'s processes used (its cgroup\'s CPU usage), seconds.', (r) => one(r.cpuSeconds)),
  series('nodemgr_sliver_memory_bytes', 'gauge', 'Memory the sliver\'s cgroup uses now, bytes.', (r) => one(r.memoryBytes)),
  series('nodemgr_sliver_processes', 'gauge', 'Processes in the sliver\'s cgroup.', (r) => one(r.processes)),
  series('nodemgr_sliver_oom_kills_total', 'counter', 'Processes of the sliver the kernel killed at its memory limit.', (r) => one(r.oomKills)),
  series('nodemgr_sliver_sent_bytes_total', 'counter', 'Bytes sent through the sliver\'s traffic class, by traffic (ordinary, or exempt from the node\'s cap).', perTraffic('sentBytes'), ['traffic']),
  series('nodemgr_sliver_period_sent_bytes', 'gauge', 'Bytes the sliver sent in the current byte-cap period, by traffic.', perTraffic('periodSentBytes'), ['traffic']),
  series('nodemgr_sliver_throttled', 'gauge', '1 while the sliver\'s traffic is throttled for reaching its byte cap in this period, by traffic.', perTraffic('throttled'), ['traffic']),
  series('nodemgr_sliver_cpu_shares', 'gauge', 'CPU shares in force (the cgroup\'s, or the guest domain\'s).', (r) => one(r.cpuShares)),
  series('nodemgr_sliver_cpu_cap_cpus', 'gauge', 'CPU cap in force, in CPUs (0.5 is half of one CPU\'s time); absent when uncapped.', (r) => one(r.cpuCapCpus)),
  series('nodemgr_sliver_vcpus', 'gauge', 'Virtual CPUs of the sliver\'s guest domain.', (r) => one(r.vcpus)),
  series('nodemgr_sliver_memory_max_bytes', 'gauge', 'Memory limit in force (the cgroup\'s, or the guest domain\'s memory), bytes; absent when unlimited.', (r) => one(r.memoryMaxBytes)),
  series('nodemgr_sliver_processes_max', 'gauge', 'Process limit in force in the sliver\'s cgroup; absent when unlimited.', (r) => one(r.processesMax)),
  series('nodemgr_sliver_rate_ceiling_bytes_per_second', 'gauge', 'Rate ceiling of the sliver\'s traffic class in force, bytes per second, by traffic.', perTraffic('ceilingBytesPerSecond'), ['traffic']),
  series('nodemgr_sliver_rate_guarantee_bytes_per_second', 'gauge', 'Guaranteed rate of the sliver\'s traffic class in force, bytes per second, by traffic.', perTraffic('guaranteeBytesPerSecond'), ['traffic']),
];
