// The configuration's schema: the `Config` every module reads, and one table of key descriptors
// (name, value type, default, documentation) that drives parsing, the defaults and the
// documentation, so a key cannot be parsed without being documented or documented with a default
// other than the one the daemon uses.
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RUNTIME_KINDS, type RuntimeKind } from '../slices/types.js';
import { packageRoot } from './package-root.js';
import {
  authorityUrl, bridgeName, cgroupPath, count, dnsDomain, factor, globList, interfaceName, ipv4List, ipv4Prefix, optionalIpv4, ipAddress, kbits, libvirtUri, milliseconds, oneOf,
  optionalAccountName, optionalDirectoryUrl, optionalPath, path, prefixList, range, readyMarker, seconds, socketPath, type ValueType,
} from './values.js';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type LogFormat = 'text' | 'json';

export interface Config {
  /** Absolute path of the file read, null when the defaults alone apply. */
  configFile: string | null;
  nodeId: number;
  /** http:, https: or absolute file: URL of the authority document. */
  authorityUrl: string;
  /** PEM CA bundle for an https authority; null: the system's roots. */
  authorityCaFile: string | null;
  authorityTimeoutMs: number;
  pollPeriodMs: number;
  pollJitterMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  documentMaxBytes: number;
  stateDir: string;
  runDir: string;
  logDir: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
  sliverUidMin: number;
  sliverUidMax: number;
  homeBase: string;
  sliverShell: string;
  delegateShell: string;
  disabledShell: string;
  maxParallelAccountOps: number;
  maxParallelUnixAccountOps: number;
  opRetryInitialMs: number;
  opRetryMaxMs: number;
  dbCoalesceMs: number;
  /** TCP port of the API on loopback; 0: no TCP listener. */
  apiPort: number;
  apiSocket: string;
  /** Largest API request body accepted, in bytes. */
  apiMaxRequestBytes: number;
  /** PEM certificate of the authority's signing key; null: no ticket or push is accepted. */
  authorityCertFile: string | null;
  /** The delegate account through which the authority may push documents (DeliverSlices). */
  authorityDelegate: string | null;
  /** The API over TLS with client certificates: its address and port; port 0: no TLS listener. */
  apiTlsAddress: string;
  apiTlsPort: number;
  /** PEM files of the TLS listener: the node's certificate, its key, and the CA that signs the clients'. */
  apiTlsCertFile: string | null;
  apiTlsKeyFile: string | null;
  apiTlsCaFile: string | null;
  /** The Prometheus metrics endpoint (GET /metrics): its address and port; port 0: none. */
  metricsAddress: string;
  metricsPort: number;
  /** The certificate subjects that may call over TLS, one per line (XenBEE's allowed-users file). */
  allowedUsersFile: string;
  /** Where the cgroup file systems are mounted, and the daemon's own group under each. */
  cgroupRoot: string;
  cgroupParent: string;
  /** The uplink whose outgoing traffic is shaped: a device name, "auto" (the default route's) or "none". */
  shapingDevice: string;
  shapingLinkRateKbit: number;
  /** Destination prefixes whose traffic counts as exempt (net_i2_*), e.g. a research network's. */
  exemptPrefixes: string[];
  exemptCapKbit: number;
  byteCapPeriodMs: number;
  byteCapSampleMs: number;
  straySweepMs: number;
  /** The ssh gateway's address and port; port 0: no gateway. */
  sshAddress: string;
  sshPort: number;
  sshMaxSessions: number;
  sshMaxSessionsPerAccount: number;
  sshIdleTimeoutMs: number;
  sshMaxAuthAttempts: number;
  sshLoginGraceMs: number;
  sshMaxStartups: number;
  /** What a sliver is made of when its slice names no runtime. */
  defaultRuntime: RuntimeKind;
  libvirtQemuUri: string;
  libvirtLxcUri: string;
  /** One directory per libvirt sliver: its overlay disk and console log. */
  guestDir: string;
  /** The MAC/IP pool file (`MAC IP # comment` lines). */
  addressPool: string;
  /** The bridge a guest's interfaces join; null: a tap device of their own (type ethernet). */
  guestBridge: string | null;
  guestReadyTimeoutMs: number;
  /** kvm, qemu (software emulation), or auto: kvm where /dev/kvm exists. */
  guestAccel: 'auto' | 'kvm' | 'qemu';
  guestReadyMarker: string;
  /** The image cache: its directory and the most its files may hold together, in bytes. */
  imageCacheDir: string;
  imageCacheMaxBytes: number;
  /** The on-demand tasks' and instances' spools (one directory each) and guests' files. */
  taskDir: string;
  taskStartTimeoutMs: number;
  taskSilenceTimeoutMs: number;
  taskWallTimeLimitMs: number;
  taskReservationTtlMs: number;
  /** The most one staged file (in or out) may hold, in bytes. */
  taskStageMaxBytes: number;
  taskDefaultVcpus: number;
  taskDefaultMemoryBytes: number;
  /** The capacity budget: the host's vCPUs and memory times these. */
  cpuOvercommit: number;
  memOvercommit: number;
  /** The repository of virtual clusters (vcdb.txt, descriptions, images): a directory of this host... */
  vcRepositoryDir: string;
  /** ...or, when set, the http:, https: or file: URL it is served at (ending in "/"); null: the directory. */
  vcRepositoryUrl: string | null;
  /** The most vCPUs one compute of a virtual cluster gets: a request for more CPUs is met with more computes. */
  vcMaxComputeCpus: number;
  /** The clusters' guests' own files (overlays, console logs). */
  vcDir: string;
  vcPrivateSubnet: string;
  vcRenames: string[];
  vcPublicGateway: string | null;
  vcDnsServers: string[];
  vcDomain: string;
}

type Field = Exclude<keyof Config, 'configFile'>;

export interface KeyDescriptor {
  readonly key: string;
  readonly field: Field;
  readonly doc: string;
  /** The default as written in the file, or how it is derived (e.g. "<run_dir>/api.sock"). */
  defaultText(): string;
  /** Sets the default; fields of keys listed earlier are already final. */
  setDefault(config: Config): void;
  /** Parses `text` into the field; throws ValueError with the reason. */
  setFromText(config: Config, text: string, baseDir: string): void;
}

function key<F extends Field>(
  name: string,
  field: F,
  type: ValueType<Config[F]>,
  defaultValue: Config[F] | { derived: (config: Config) => Config[F]; text: string },
  doc: string,
): KeyDescriptor {
  const isDerived = (d: typeof defaultValue): d is { derived: (config: Config) => Config[F]; text: string } =>
    typeof d === 'object' && d !== null && 'derived' in d;
  return {
    key: name,
    field,
    doc,
    defaultText: () => (isDerived(defaultValue) ? defaultValue.text : type.show(defaultValue)),
    setDefault(config) {
      config[field] = isDerived(defaultValue) ? defaultValue.derived(config) : defaultValue;
    },
    setFromText(config, text, baseDir) {
      config[field] = type.parse(text, baseDir);
    },
  };
}

/** The keys in the order of etc/nodemgr.conf; a derived default may read the keys above it. */
export const KEYS: readonly KeyDescriptor[] = [
  key('node_id', 'nodeId', count(1), 1,
    "This node's id in the authority document: only the slices with a <node id> equal to it are this node's."),
  key('authority_url', 'authorityUrl', authorityUrl,
    pathToFileURL(join(packageRoot(), 'etc', 'slices.xml')).href,
    'Where the authority document (slices.xml) is fetched: an http:, https: or file: URL. A relative file: URL is relative to the directory of this file.'),
  key('authority_ca_file', 'authorityCaFile', optionalPath, null,
    "PEM bundle of the CA certificates an https authority is checked against; empty: the system's roots."),
  key('authority_timeout', 'authorityTimeoutMs', seconds(1), 30_000,
    'Seconds a fetch of the authority document may take before it is abandoned and counted as failed.'),
  key('poll_period', 'pollPeriodMs', seconds(10), 900_000,
    'Seconds between fetches of the authority document (PlanetLab polled every 15 minutes).'),
  key('poll_jitter', 'pollJitterMs', seconds(0), 60_000,
    'Up to this many seconds, chosen at random, are added to every wait so that the nodes of a fleet do not fetch in lockstep.'),
  key('fetch_backoff_initial', 'backoffInitialMs', seconds(1), 5_000,
    'Seconds before the first retry of a failed fetch; the wait doubles with every further failure.'),
  key('fetch_backoff_max', 'backoffMaxMs', seconds(1), 900_000,
    'Seconds, the longest wait between retries of a failing fetch (at least fetch_backoff_initial).'),
  key('document_max_bytes', 'documentMaxBytes', range(1024, 256 * 1024 * 1024), 64 * 1024 * 1024,
    'Bytes; a larger authority document is refused whole and the records in force stay.'),
  key('state_dir', 'stateDir', path, '/var/lib/nodemgr',
    'Directory of the node database, the last good authority document and the lock file.'),
  key('run_dir', 'runDir', path, '/run/nodemgr',
    'Directory of the sockets and the files that last one run of the daemon.'),
  key('log_dir', 'logDir', path, '/var/log/nodemgr',
    "Directory of the daemon's log file, nodemgr.log."),
  key('log_level', 'logLevel', oneOf<LogLevel>('error', 'warn', 'info', 'debug'), 'info',
    'Least severe level logged: error, warn, info or debug.'),
  key('log_format', 'logFormat', oneOf<LogFormat>('text', 'json'), 'text',
    'Form of each log line: text (time level message key=value...) or json (one object a line).'),
  key('sliver_uid_min', 'sliverUidMin', range(1000, 4_294_967_294), 70_000,
    'Lowest uid of the accounts the daemon creates (slivers and delegates); it never manages an account outside the range.'),
  key('sliver_uid_max', 'sliverUidMax', range(1000, 4_294_967_294), 79_999,
    'Highest uid of the accounts the daemon creates; the range must hold at least 10 uids.'),
  key('home_base', 'homeBase', path, '/home',
    "Directory under which each account's home is made (<home_base>/<name>)."),
  key('sliver_shell', 'sliverShell', path, '/bin/bash',
    'Login shell of a sliver account while its login is enabled.'),
  key('delegate_shell', 'delegateShell', path, '/usr/local/libexec/nodemgr/forward_api_calls',
    "Login shell of a delegate account: it forwards what it reads to the API. At start the daemon copies the forward_api_calls built with the package here (when missing or different) and lists it in /etc/shells."),
  key('disabled_shell', 'disabledShell', path, '/usr/sbin/nologin',
    'Shell of an account whose login is disabled (not started yet, or enabled=0).'),
  key('max_parallel_account_ops', 'maxParallelAccountOps', range(1, 1024), 4,
    'At most this many creations and destructions of libvirt slivers (lxc, qemu) run at once across the node.'),
  key('max_parallel_unix_account_ops', 'maxParallelUnixAccountOps', range(1, 4096), 256,
    'At most this many creations and destructions of Unix accounts run at once; those in flight together change the account files in one locked write, so more at once means fewer writes.'),
  key('op_retry_initial', 'opRetryInitialMs', seconds(1), 2_000,
    'Seconds before a failed account operation is retried; the wait doubles with every further failure.'),
  key('op_retry_max', 'opRetryMaxMs', seconds(1), 300_000,
    'Seconds, the longest wait between retries of a failing account operation (at least op_retry_initial).'),
  key('db_coalesce_ms', 'dbCoalesceMs', milliseconds(0, 60_000), 50,
    'Milliseconds during which changes to the node database are gathered into one write to disk.'),
  key('api_port', 'apiPort', range(0, 65_535), 812,
    'TCP port of the API on 127.0.0.1; 0 turns the TCP listener off (the Unix socket stays).'),
  key('api_socket', 'apiSocket', socketPath,
    { derived: (config) => join(config.runDir, 'api.sock'), text: '<run_dir>/api.sock' },
    'Path of the Unix socket of the API; unset, it is api.sock in run_dir.'),
  key('api_max_request_bytes', 'apiMaxRequestBytes', range(4096, 256 * 1024 * 1024), 16 * 1024 * 1024,
    'Largest API request accepted, in bytes; a larger one is answered with a fault. It bounds pushed documents too.'),
  key('authority_cert', 'authorityCertFile', optionalPath, null,
    "PEM certificate of the authority's signing key: tickets and pushed documents must be signed by it. Empty: Ticket, AdminTicket and DeliverSlices are refused."),
  key('authority_delegate', 'authorityDelegate', optionalAccountName, null,
    'The delegate account through which the authority pushes documents (DeliverSlices); empty: only root may push.'),
  key('api_tls_address', 'apiTlsAddress', ipAddress, '0.0.0.0',
    'Address the API listens on over TLS, for remote callers known by their client certificates.'),
  key('api_tls_port', 'apiTlsPort', range(0, 65_535), 0,
    'TCP port of the API over TLS; 0 (the default) turns it off. Turned on, api_tls_cert, api_tls_key and api_tls_ca must be set.'),
  key('api_tls_cert', 'apiTlsCertFile', optionalPath, null,
    "PEM certificate the TLS listener presents (the node's own); needed when api_tls_port is not 0."),
  key('api_tls_key', 'apiTlsKeyFile', optionalPath, null,
    'PEM private key of api_tls_cert, unencrypted; needed when api_tls_port is not 0.'),
  key('api_tls_ca', 'apiTlsCaFile', optionalPath, null,
    "PEM certificates of the CA that signs the clients' certificates: a client must present one it signed. Needed when api_tls_port is not 0."),
  key('allowed_users', 'allowedUsersFile', path, '/etc/nodemgr/allowed-users',
    "The certificate subjects that may call over TLS, one per line in OpenSSL's one-line form (/OU=Persons/CN=test user 1); # starts a comment. Read again when it changes; missing, nobody is allowed."),
  key('metrics_address', 'metricsAddress', ipAddress, '127.0.0.1',
    'Address the Prometheus metrics endpoint (GET /metrics) listens on.'),
  key('metrics_port', 'metricsPort', range(0, 65_535), 9812,
    'TCP port of the Prometheus metrics endpoint; 0 turns it off.'),
  key('cgroup_root', 'cgroupRoot', path, '/sys/fs/cgroup',
    'Where the cgroup file systems are mounted; cgroup v2 (one unified hierarchy) or v1 (one per controller) is detected there.'),
  key('cgroup_parent', 'cgroupParent', cgroupPath, 'nodemgr',
    "The daemon's own group in every hierarchy, a path below its root: each sliver's group is made under it, and nothing outside it is touched."),
  key('shaping_device', 'shapingDevice', interfaceName, 'auto',
    "Network device whose outgoing traffic is shaped (one HTB class pair per sliver); auto: the device of the IPv4 default route; none: no shaping."),
  key('shaping_link_rate', 'shapingLinkRateKbit', kbits(8), 1_000_000,
    'kbit/s, the rate of the shaped link: the top of the class tree, and the node cap when no bwcap record gives one.'),
  key('exempt_prefixes', 'exemptPrefixes', prefixList, [],
    'Destination prefixes (comma separated, IPv4 or IPv6) whose traffic goes to the exempt classes and is counted against net_i2_* instead of net_*.'),
  key('exempt_cap', 'exemptCapKbit', kbits(8),
    { derived: (config) => config.shapingLinkRateKbit, text: '<shaping_link_rate>' },
    'kbit/s, the cap on all exempt traffic together.'),
  key('byte_cap_period', 'byteCapPeriodMs', seconds(1), 86_400_000,
    "Seconds in a byte-cap period: net_max_kbyte and net_i2_max_kbyte are allowances per period, counted from each sliver's last reset."),
  key('byte_cap_sample_interval', 'byteCapSampleMs', seconds(1), 30_000,
    "Seconds between reads of the slivers' byte counters; throttling starts at most this long after a threshold is crossed."),
  key('stray_sweep_interval', 'straySweepMs', seconds(1), 10_000,
    "Seconds between sweeps that move processes of a sliver's uid started outside its cgroup (an ssh login, say) into it."),
  key('ssh_address', 'sshAddress', ipAddress, '0.0.0.0',
    "Address the ssh gateway listens on: slice users log into their slivers and delegates reach the API through it."),
  key('ssh_port', 'sshPort', range(0, 65_535), 2222,
    'TCP port of the ssh gateway; 0 turns it off. The host key is made on first start in state_dir.'),
  key('ssh_max_sessions', 'sshMaxSessions', range(1, 100_000), 200,
    'At most this many ssh sessions (shells, commands, API requests) at once on the node; more are refused with a message.'),
  key('ssh_max_sessions_per_account', 'sshMaxSessionsPerAccount', range(1, 100_000), 20,
    'At most this many ssh sessions at once for one sliver or delegate.'),
  key('ssh_idle_timeout', 'sshIdleTimeoutMs', seconds(1), 3_600_000,
    'Seconds; an ssh connection with no data either way for this long is closed.'),
  key('ssh_max_auth_attempts', 'sshMaxAuthAttempts', range(1, 100), 6,
    'Authentication attempts (keys offered) allowed on one ssh connection before it is closed.'),
  key('ssh_login_grace', 'sshLoginGraceMs', seconds(1), 30_000,
    'Seconds an ssh connection may take to log in before it is closed.'),
  key('ssh_max_startups', 'sshMaxStartups', range(1, 100_000), 100,
    'At most this many ssh connections not yet logged in at once (as sshd\'s MaxStartups); one more is closed as it comes.'),
  key('default_runtime', 'defaultRuntime', oneOf<RuntimeKind>(...RUNTIME_KINDS), 'unix',
    'What a sliver is made of when its slice has no runtime attribute: unix (an account), lxc (a libvirt container) or qemu (a libvirt virtual machine).'),
  key('libvirt_qemu_uri', 'libvirtQemuUri', libvirtUri, 'qemu:///system',
    'libvirt connection of the qemu slivers.'),
  key('libvirt_lxc_uri', 'libvirtLxcUri', libvirtUri, 'lxc:///system',
    'libvirt connection of the lxc slivers.'),
  key('guest_dir', 'guestDir', path,
    { derived: (config) => join(config.stateDir, 'guests'), text: '<state_dir>/guests' },
    "Directory of the libvirt slivers' own files (copy-on-write disk, console log), one directory each; the hypervisor's user must be able to reach it."),
  key('address_pool', 'addressPool', path, '/etc/nodemgr/mac-addresses',
    "The MAC/IP pool of the libvirt slivers' interfaces: lines of `MAC IP # comment`. Read again when it changes."),
  key('guest_bridge', 'guestBridge', bridgeName, null,
    "Bridge the libvirt slivers' interfaces are attached to; none: each gets a tap device of its own."),
  key('guest_ready_timeout', 'guestReadyTimeoutMs', seconds(1), 300_000,
    'Seconds a started guest has to report ready on its console; after that it is powered off, reported failed and started again later.'),
  key('guest_accel', 'guestAccel', oneOf<'auto' | 'kvm' | 'qemu'>('auto', 'kvm', 'qemu'), 'auto',
    'How qemu slivers run: kvm (hardware virtualisation), qemu (software emulation, slow but works anywhere) or auto (kvm where /dev/kvm exists).'),
  key('guest_ready_marker', 'guestReadyMarker', readyMarker, 'nodemgr-ready',
    'The text a guest writes when it is ready: a virtual machine on its serial console, a container into /var/lib/nodemgr/ready in its root.'),
  key('image_cache_dir', 'imageCacheDir', path, '/var/cache/nodemgr/images',
    'Directory of the image cache: the images, kernels, initrds and data files of the libvirt slivers, and its index.json.'),
  key('image_cache_max_bytes', 'imageCacheMaxBytes', count(1024 * 1024), 20 * 1024 ** 3,
    'Bytes the cached files may hold together; past it, the least recently used entries that no sliver uses are evicted.'),
  key('task_dir', 'taskDir', path,
    { derived: (config) => join(config.stateDir, 'tasks'), text: '<state_dir>/tasks' },
    "Directory of the on-demand tasks and instances: each one's spool (staged files, outputs) and its guest's own files; the hypervisor's user must be able to reach it."),
  key('task_start_timeout', 'taskStartTimeoutMs', seconds(1), 180_000,
    "Seconds a task's or instance's guest has, from its boot, for its agent (QEMU's guest agent) to answer; after that the task fails and its guest is removed."),
  key('task_silence_timeout', 'taskSilenceTimeoutMs', seconds(1), 300_000,
    "Seconds a running task's agent may stay silent before the task fails."),
  key('task_wall_time_limit', 'taskWallTimeLimitMs', seconds(1), 86_400_000,
    "Seconds a task's job may run when its document sets no jsdl-posix:WallTimeLimit; then it is killed and the task fails, saying so."),
  key('task_reservation_ttl', 'taskReservationTtlMs', seconds(1), 600_000,
    'Seconds a reservation (Reserve) waits for its Confirm before it expires.'),
  key('task_stage_max_bytes', 'taskStageMaxBytes', count(1024), 4 * 1024 ** 3,
    "The most one staged file of a task may hold, in bytes, fetched (stage-in) or read back from the guest (stage-out)."),
  key('task_default_vcpus', 'taskDefaultVcpus', range(1, 1024), 1,
    'vCPUs of a task whose document sets no jsdl:TotalCPUCount.'),
  key('task_default_memory', 'taskDefaultMemoryBytes', count(16 * 1024 * 1024), 512 * 1024 * 1024,
    'Bytes of memory of a task whose document sets no jsdl:TotalPhysicalMemory.'),
  key('cpu_overcommit', 'cpuOvercommit', factor(0.1, 100), 4,
    "The capacity budget's vCPUs are the host's CPUs times this: what libvirt slivers, tasks and instances may hold together."),
  key('mem_overcommit', 'memOvercommit', factor(0.1, 100), 1,
    "The capacity budget's memory is the host's memory times this."),
  key('vc_repository_dir', 'vcRepositoryDir', path, '/var/lib/nodemgr/vc-repository',
    "The repository of virtual clusters: vcdb.txt (lines of name,path/to/name.xml), each cluster's description and its images next to it. Used when vc_repository_url is empty."),
  key('vc_repository_url', 'vcRepositoryUrl', optionalDirectoryUrl, null,
    'Where the repository of virtual clusters is served instead: an http:, https: or file: URL of the directory that holds vcdb.txt. Images fetched from it are kept in the image cache. Empty: vc_repository_dir.'),
  key('vc_max_compute_cpus', 'vcMaxComputeCpus', range(1, 1024), 2,
    'The most vCPUs one compute of a virtual cluster gets: a request for more CPUs is met with more computes.'),
  key('vc_dir', 'vcDir', path,
    { derived: (config) => join(config.stateDir, 'clusters'), text: '<state_dir>/clusters' },
    "Directory of the virtual clusters' nodes' own files (copy-on-write disks, console logs); the hypervisor's user must be able to reach it."),
  key('vc_private_subnet', 'vcPrivateSubnet', ipv4Prefix, '10.1.0.0/16',
    "The private subnet of a cluster whose description gives none: the frontend takes its first address, the computes the next ones. Each cluster's network is isolated, so every cluster may use the same subnet."),
  key('vc_renames', 'vcRenames', globList, ['/etc/sysconfig/network-scripts/ifcfg-eth*', '/etc/udev/rules.d/70-persistent-net.rules'],
    "Paths in each node's disk renamed out of the way (to <path>.nodemgr-orig) when vc-out.xml is written, as pragma_boot did: the image's own network configuration."),
  key('vc_public_gateway', 'vcPublicGateway', optionalIpv4, null,
    "The gateway a frontend's public interface is told in vc-out.xml; empty: the first address of the subnet of its public address (from the address pool)."),
  key('vc_dns_servers', 'vcDnsServers', ipv4List, [],
    'Name servers told to the clusters in vc-out.xml; empty: the public gateway.'),
  key('vc_domain', 'vcDomain', dnsDomain, 'cluster.local',
    "The DNS domain of the clusters' names: a frontend is <cluster>.<vc_domain>."),
];

const BY_KEY: ReadonlyMap<string, KeyDescriptor> = new Map(KEYS.map((d) => [d.key, d]));

/** The descriptor of key `name`, undefined for a key the file may not set. */
export function keyNamed(name: string): KeyDescriptor | undefined {
  return BY_KEY.get(name);
}

/** Every key with its default as written in the file and what it does, in the order of the file. */
export function describeConfigKeys(): Array<{ key: string; default: string; doc: string }> {
  return KEYS.map((d) => ({ key: d.key, default: d.defaultText(), doc: d.doc }));
}
