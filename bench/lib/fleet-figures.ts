// The arithmetic of the fleet rehearsal, pure: spreads over nodes, the authority's access log read
// as poll cycles, and what a cycle means for larger fleets.

export interface Spread {
  readonly count: number;
  readonly p50: number;
  readonly p95: number;
  readonly max: number;
}

/** p50/p95/max by the nearest-rank method (the value at rank ceil(p * n)). */
export function spreadOf(values: readonly number[]): Spread {
  if (values.length === 0) throw new Error('spreadOf: no values');
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!;
  return { count: sorted.length, p50: rank(0.5), p95: rank(0.95), max: sorted[sorted.length - 1]! };
}

/** One line of the authority's access log, in the `fleet` log format of fleet-nginx.ts. */
export interface AccessEntry {
  /** Seconds since the epoch, with milliseconds ($msec). */
  readonly time: number;
  readonly client: string;
  readonly status: number;
  /** The request as received, headers included ($request_length). */
  readonly requestBytes: number;
  /** The response as sent, headers included ($bytes_sent). */
  readonly responseBytes: number;
  readonly ifNoneMatch: boolean;
  readonly ifModifiedSince: boolean;
  readonly gzip: boolean;
  readonly uri: string;
}

// $msec $remote_addr $status $request_length $bytes_sent "$http_if_none_match" "$http_if_modified_since" "$sent_http_content_encoding" "$request_uri"
const LINE = /^(\d+\.\d+) (\S+) (\d{3}) (\d+) (\d+) "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)"$/;

/** Parses the access log; a line it cannot read is an error naming its number (the format is ours). */
export function parseAccessLog(text: string): AccessEntry[] {
  const entries: AccessEntry[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const m = LINE.exec(line);
    if (!m) throw new Error(`access log line ${i + 1} is not in the fleet format: ${JSON.stringify(line.slice(0, 200))}`);
    const present = (value: string) => value !== '' && value !== '-';
    entries.push({
      time: Number(m[1]), client: m[2]!, status: Number(m[3]), requestBytes: Number(m[4]), responseBytes: Number(m[5]),
      ifNoneMatch: present(m[6]!), ifModifiedSince: present(m[7]!), gzip: m[8] === 'gzip', uri: m[9]!,
    });
  });
  return entries;
}

export interface PollCycle {
  /** Nodes seen: one request each, the first each made at or after the cycle's start. */
  readonly requests: number;
  readonly byStatus: Readonly<Record<number, number>>;
  readonly gzipped: number;
  readonly conditional: number;
  readonly requestBytes: number;
  readonly responseBytes: number;
}

/**
 * One poll cycle: each client's first request for `uri` at or after `since`. A node polls once a
 * period, so this is what the authority serves for one round of the fleet, whatever the jitter.
 */
export function pollCycle(entries: readonly AccessEntry[], uri: string, since: number): PollCycle {
  const first = new Map<string, AccessEntry>();
  for (const entry of entries) {
    if (entry.uri !== uri || entry.time < since) continue;
    const seen = first.get(entry.client);
    if (!seen || entry.time < seen.time) first.set(entry.client, entry);
  }
  const byStatus: Record<number, number> = {};
  let gzipped = 0;
  let conditional = 0;
  let requestBytes = 0;
  let responseBytes = 0;
  for (const entry of first.values()) {
    byStatus[entry.status] = (byStatus[entry.status] ?? 0) + 1;
    if (entry.gzip) gzipped++;
    if (entry.ifNoneMatch || entry.ifModifiedSince) conditional++;
    requestBytes += entry.requestBytes;
    responseBytes += entry.responseBytes;
  }
  return { requests: first.size, byStatus, gzipped, conditional, requestBytes, responseBytes };
}

export interface AuthorityLoad {
  readonly requestsPerSecond: number;
  /** Both directions, headers included. */
  readonly bytesPerSecond: number;
}

/**
 * What `nodes` nodes polling every `periodSeconds` plus a uniform jitter of up to `jitterSeconds`
 * ask of the authority, when each request and its answer cost `bytesPerRequest`: a node's mean
 * interval is the period plus half the jitter.
 */
export function authorityLoad(nodes: number, bytesPerRequest: number, periodSeconds: number, jitterSeconds: number): AuthorityLoad {
  const interval = periodSeconds + jitterSeconds / 2;
  return { requestsPerSecond: nodes / interval, bytesPerSecond: (nodes * bytesPerRequest) / interval };
}

/** "1.2 MB" style, in powers of 1000 (network figures). */
export function bytesText(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}
