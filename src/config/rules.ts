// Rules between keys: each value may be fine on its own and the pair still unusable. Pure: a rule
// returns its reason, and the loader says where in the file the keys were set.
import { MAX_SHAPED_UIDS } from '../limits/shaping.js';
import type { Config } from './schema.js';
import { got, SOCKET_PATH_MAX } from './values.js';

/** A key's value and where it came from, for messages about two keys: "poll_period = 60 (line 4)". */
export type Origin = (key: string, value: number) => string;

export interface CrossRule {
  /** The keys the rule reads; its reason is reported at the last line that set one of them. */
  readonly keys: readonly string[];
  check(config: Config, from: Origin): string | null;
}

const TLS_FILE_FIELDS = { api_tls_cert: 'apiTlsCertFile', api_tls_key: 'apiTlsKeyFile', api_tls_ca: 'apiTlsCaFile' } as const;
const TLS_FILE_NEEDS = {
  api_tls_cert: "the node's PEM certificate",
  api_tls_key: 'the PEM private key of api_tls_cert',
  api_tls_ca: "the PEM certificate of the CA that signs the clients' certificates",
} as const;

/** Whether listeners on these two addresses would take the same port (a wildcard takes every address). */
function overlap(a: string, b: string): boolean {
  const wildcard = (address: string) => address === '0.0.0.0' || address === '::';
  return a === b || wildcard(a) || wildcard(b);
}

export const CROSS_RULES: readonly CrossRule[] = [
  {
    keys: ['sliver_uid_min', 'sliver_uid_max'],
    check: (c, from) => {
      const span = `${from('sliver_uid_min', c.sliverUidMin)} and ${from('sliver_uid_max', c.sliverUidMax)}`;
      if (c.sliverUidMax <= c.sliverUidMin) return `sliver_uid_max must be greater than sliver_uid_min, got ${span}`;
      const size = c.sliverUidMax - c.sliverUidMin + 1;
      return size < 10 ? `the uid range must hold at least 10 uids, got ${size}: ${span}` : null;
    },
  },
  {
    // Traffic classes are numbered from the uid; 16 bits hold two per uid for this many.
    keys: ['sliver_uid_min', 'sliver_uid_max', 'shaping_device'],
    check: (c, from) => {
      const size = c.sliverUidMax - c.sliverUidMin + 1;
      return c.shapingDevice === 'none' || size <= MAX_SHAPED_UIDS ? null
        : `with shaping on, the uid range may hold at most ${MAX_SHAPED_UIDS} uids (two traffic classes each), got ${size}: ${from('sliver_uid_min', c.sliverUidMin)} and ${from('sliver_uid_max', c.sliverUidMax)} (narrow it or set shaping_device = none)`;
    },
  },
  {
    keys: ['fetch_backoff_initial', 'fetch_backoff_max'],
    check: (c, from) => c.backoffInitialMs <= c.backoffMaxMs ? null
      : `fetch_backoff_initial must not exceed fetch_backoff_max, got ${from('fetch_backoff_initial', c.backoffInitialMs / 1000)} and ${from('fetch_backoff_max', c.backoffMaxMs / 1000)}`,
  },
  {
    keys: ['op_retry_initial', 'op_retry_max'],
    check: (c, from) => c.opRetryInitialMs <= c.opRetryMaxMs ? null
      : `op_retry_initial must not exceed op_retry_max, got ${from('op_retry_initial', c.opRetryInitialMs / 1000)} and ${from('op_retry_max', c.opRetryMaxMs / 1000)}`,
  },
  ...(['api_tls_cert', 'api_tls_key', 'api_tls_ca'] as const).map((name): CrossRule => ({
    keys: ['api_tls_port', name],
    check: (c, from) => c.apiTlsPort === 0 || c[TLS_FILE_FIELDS[name]] !== null ? null
      : `the TLS listener is on (${from('api_tls_port', c.apiTlsPort)}) and needs ${name}, ${TLS_FILE_NEEDS[name]}; it is empty`,
  })),
  {
    // Checked here rather than left to the listen: the daemon would stop half started.
    keys: ['api_port', 'ssh_port', 'ssh_address', 'api_tls_address', 'api_tls_port'],
    check: (c, from) => {
      if (c.apiTlsPort === 0) return null;
      const other = c.apiTlsPort === c.apiPort && overlap(c.apiTlsAddress, '127.0.0.1') ? 'api_port'
        : c.apiTlsPort === c.sshPort && overlap(c.apiTlsAddress, c.sshAddress) ? 'ssh_port' : null;
      return other === null ? null
        : `api_tls_port must differ from ${other}, got ${from('api_tls_port', c.apiTlsPort)} and ${from(other, c.apiTlsPort)}`;
    },
  },
  {
    // The metrics endpoint cannot share a port with another listener on an address it overlaps.
    keys: ['metrics_port', 'metrics_address', 'api_port', 'ssh_port', 'ssh_address', 'api_tls_address', 'api_tls_port'],
    check: (c, from) => {
      if (c.metricsPort === 0) return null;
      const other = c.metricsPort === c.apiPort && overlap(c.metricsAddress, '127.0.0.1') ? 'api_port'
        : c.metricsPort === c.sshPort && overlap(c.metricsAddress, c.sshAddress) ? 'ssh_port'
          : c.metricsPort === c.apiTlsPort && overlap(c.metricsAddress, c.apiTlsAddress) ? 'api_tls_port' : null;
      return other === null ? null
        : `metrics_port must differ from ${other}, got ${from('metrics_port', c.metricsPort)} and ${from(other, c.metricsPort)}`;
    },
  },
  {
    // The socket's default follows run_dir, so a long run_dir can make it unusable.
    keys: ['run_dir', 'api_socket'],
    check: (c) => {
      const bytes = Buffer.byteLength(c.apiSocket);
      return bytes <= SOCKET_PATH_MAX ? null
        : `the API socket ${got(c.apiSocket)} would be ${bytes} bytes long; a Unix socket path may have at most ${SOCKET_PATH_MAX} (set api_socket to a shorter path)`;
    },
  },
];

/** The first rule the configuration breaks, with its reason; null when it keeps them all. */
export function brokenRule(config: Config, from: Origin): { rule: CrossRule; reason: string } | null {
  for (const rule of CROSS_RULES) {
    const reason = rule.check(config, from);
    if (reason !== null) return { rule, reason };
  }
  return null;
}
