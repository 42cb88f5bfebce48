// The configuration file: `key = value` lines, `#` comments, every key optional.
//
// One table of key descriptors (name, value type, default, documentation) drives parsing, the
// defaults and the documentation, so a key cannot be parsed without being documented or
// documented with a default other than the one the daemon uses.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { invalidAccountName } from '../accounts/names.js';
import { MAX_SHAPED_UIDS } from '../limits/shaping.js';
import { RUNTIME_KINDS, type RuntimeKind } from '../slices/types.js';
import { describeError } from '../util/errors.js';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

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
  sliverUidMin: number;
  sliverUidMax: number;
  homeBase: string;
  sliverShell: string;
  delegateShell: string;
  disabledShell: string;
  maxParallelAccountOps: number;
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
}

/** A configuration that cannot be used; the message names the file, the line, the key and the reason. */
export class ConfigError extends Error {
  readonly file: string | null;
  readonly line: number | null;
  readonly key: string | null;
  readonly reason: string;

  constructor(reason: string, where: { file?: string | null; line?: number | null; key?: string | null } = {}) {
    const file = where.file ?? null;
    const line = where.line ?? null;
    const key = where.key ?? null;
    const place = [file, line === null ? null : `line ${line}`].filter((p) => p !== null).join(' ');
    const head = [place === '' ? null : place, key].filter((p) => p !== null).join(': ');
    super(head === '' ? reason : `${head}: ${reason}`);
    this.name = 'ConfigError';
    this.file = file;
    this.line = line;
    this.key = key;
    this.reason = reason;
  }
}

let cachedRoot: string | null = null;

/** The directory of nodemgr's package.json: found upwards from this module, in src/ or dist/src/. */
export function packageRoot(): string {
  if (cachedRoot !== null) return cachedRoot;
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return (cachedRoot = dir);
    if (dirname(dir) === dir) throw new Error(`no package.json in ${start} or any directory above it`);
  }
}

// ---- value types ------------------------------------------------------------------------------

/** Thrown by a value type with the reason only; the parser adds file, line and key. */
class ValueError extends Error {}

interface ValueType<T> {
  parse(text: string, baseDir: string): T;
  /** How a value is written in the file (the inverse of parse, for documentation). */
  show(value: T): string;
}

function got(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
}

// Timers take at most 2^31-1 ms; a longer duration would fire at once.
const LONGEST_TIMER_MS = 2 ** 31 - 1;

/** A whole number in [min, max]; `unit` is spelt in messages ("seconds") and `scale` converts it. */
function wholeNumber(min: number, max: number, opts: { unit?: string; scale?: number; showRange?: boolean } = {}): ValueType<number> {
  const scale = opts.scale ?? 1;
  const unit = opts.unit === undefined ? '' : ` of ${opts.unit}`;
  const expected = opts.showRange ? `from ${min} to ${max}` : `>= ${min}`;
  return {
    parse(text) {
      const n = /^[0-9]+$/.test(text) ? Number(text) : NaN;
      if (Number.isNaN(n) || n < min) throw new ValueError(`expected a whole number${unit} ${expected}, got ${got(text)}`);
      if (n > max) throw new ValueError(`expected a whole number${unit} from ${min} to ${max}, got ${got(text)}`);
      return n * scale;
    },
    show: (value) => String(value / scale),
  };
}

const count = (min: number, max = Number.MAX_SAFE_INTEGER) => wholeNumber(min, max);
const range = (min: number, max: number) => wholeNumber(min, max, { showRange: true });
const seconds = (min: number) =>
  wholeNumber(min, Math.floor(LONGEST_TIMER_MS / 1000), { unit: 'seconds', scale: 1000 });
const milliseconds = (min: number, max: number) => wholeNumber(min, max, { unit: 'milliseconds' });

const path: ValueType<string> = {
  parse(text, baseDir) {
    if (text === '') throw new ValueError('expected a path, got an empty value');
    if (text.includes('\0')) throw new ValueError(`expected a path, got ${got(text)} (contains a NUL byte)`);
    return resolve(baseDir, text);
  },
  show: (value) => value,
};

const optionalPath: ValueType<string | null> = {
  parse: (text, baseDir) => (text === '' ? null : path.parse(text, baseDir)),
  show: (value) => value ?? '',
};

// sun_path holds 108 bytes including the terminating NUL.
const SOCKET_PATH_MAX = 107;

const socketPath: ValueType<string> = {
  parse(text, baseDir) {
    const value = path.parse(text, baseDir);
    const bytes = Buffer.byteLength(value);
    if (bytes > SOCKET_PATH_MAX) throw new ValueError(`${got(value)} is ${bytes} bytes long; a Unix socket path may have at most ${SOCKET_PATH_MAX}`);
    return value;
  },
  show: (value) => value,
};

const optionalAccountName: ValueType<string | null> = {
  parse(text) {
    if (text === '') return null;
    const bad = invalidAccountName(text);
    if (bad !== null) throw new ValueError(`expected an account name, got ${got(text)}: ${bad}`);
    return text;
  },
  show: (value) => value ?? '',
};

const authorityUrl: ValueType<string> = {
  parse(text, baseDir) {
    // A password in the URL must not reach a message: messages end up in logs.
    const shown = (t: string): string => got(t.replace(/\/\/[^/@]*@/, '//***@'));
    const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(text)?.[1]?.toLowerCase();
    if (scheme === undefined) {
      throw new ValueError(`expected an http:, https: or file: URL, got ${shown(text)} (a local file is written file:PATH)`);
    }
    if (scheme !== 'http' && scheme !== 'https' && scheme !== 'file') {
      throw new ValueError(`expected an http:, https: or file: URL, got ${shown(text)} (scheme "${scheme}:" is not supported)`);
    }
    let url: URL;
    try {
      // A file: URL without a leading "/" is relative to the configuration file's directory.
      url = scheme === 'file' ? new URL(text, pathToFileURL(baseDir.endsWith('/') ? baseDir : `${baseDir}/`)) : new URL(text);
    } catch {
      throw new ValueError(`expected an http:, https: or file: URL, got ${shown(text)} (not a valid URL)`);
    }
    if (scheme !== 'file') return url.href;
    if (url.search !== '' || url.hash !== '') throw new ValueError(`a file: URL names a file and takes no query or fragment, got ${shown(text)}`);
    let file: string;
    try {
      file = fileURLToPath(url);
    } catch (error) {
      throw new ValueError(`expected a file: URL of this host, got ${shown(text)} (${describeError(error)})`);
    }
    if (url.pathname.endsWith('/')) throw new ValueError(`expected a file: URL naming a file, got ${shown(text)} (a directory)`);
    return pathToFileURL(file).href;
  },
  show: (value) => value,
};

function oneOf<T extends string>(...choices: readonly T[]): ValueType<T> {
  return {
    parse(text) {
      if ((choices as readonly string[]).includes(text)) return text as T;
      throw new ValueError(`expected one of ${choices.join(', ')}, got ${got(text)}`);
    },
    show: (value) => value,
  };
}

// ---- the keys ---------------------------------------------------------------------------------

type Field = Exclude<keyof Config, 'configFile'>;

interface KeyDescriptor {
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

const interfaceName: ValueType<string> = {
  parse(text) {
    // The kernel's rule for device names: 1 to 15 bytes, no "/", no white space, not "." or "..".
    if (text === 'auto' || text === 'none') return text;
    if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(text) || text === '.' || text === '..') {
      throw new ValueError(`expected a network device name (1 to 15 letters, digits, "_", "-", ".", ":" or "@"), "auto" or "none", got ${got(text)}`);
    }
    return text;
  },
  show: (value) => value,
};

const cgroupName: ValueType<string> = {
  parse(text) {
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(text)) {
      throw new ValueError(`expected a cgroup directory name (letters, digits, "_", "-", "." not first, at most 64), got ${got(text)}`);
    }
    return text;
  },
  show: (value) => value,
};

/** "10.0.0.0/8, 2001:db8::/32": IPv4 or IPv6 prefixes, comma separated; empty for none. */
const prefixList: ValueType<string[]> = {
  parse(text) {
    if (text.trim() === '') return [];
    return text.split(',').map((item) => {
      const prefix = item.trim();
      const m = /^([0-9a-fA-F.:]+)\/(\d{1,3})$/.exec(prefix);
      const family = m ? isIP(m[1]!) : 0;
      if (!m || family === 0 || Number(m[2]) > (family === 4 ? 32 : 128)) {
        throw new ValueError(`expected address prefixes such as 10.0.0.0/8 or 2001:db8::/32, separated by commas, got ${got(prefix)}`);
      }
      return prefix;
    });
  },
  show: (value) => value.join(', '),
};

const ipAddress: ValueType<string> = {
  parse(text) {
    if (isIP(text) === 0) throw new ValueError(`expected an IPv4 or IPv6 address such as 0.0.0.0 or ::, got ${got(text)}`);
    return text;
  },
  show: (value) => value,
};

const libvirtUri: ValueType<string> = {
  parse(text) {
    if (!/^[a-z][a-z0-9+]*:\/\/[^\s]*$/.test(text)) throw new ValueError(`expected a libvirt connection URI such as qemu:///system, got ${got(text)}`);
    return text;
  },
  show: (value) => value,
};

const bridgeName: ValueType<string | null> = {
  parse(text) {
    if (text === '' || text === 'none') return null;
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(text)) {
      throw new ValueError(`expected a bridge device name (1 to 15 letters, digits, "_", "-" or ".") or none, got ${got(text)}`);
    }
    return text;
  },
  show: (value) => value ?? 'none',
};

const readyMarker: ValueType<string> = {
  parse(text) {
    if (!/^[\x21-\x7e][\x20-\x7e]{0,62}[\x21-\x7e]$/.test(text)) {
      throw new ValueError(`expected 2 to 64 printable ASCII characters, got ${got(text)}`);
    }
    return text;
  },
  show: (value) => value,
};

const kbits = (min: number) => wholeNumber(min, 100_000_000, { unit: 'kbit/s' });

const KEYS: readonly KeyDescriptor[] = [
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
    'At most this many account creations and destructions run at once across the node.'),
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
  key('cgroup_root', 'cgroupRoot', path, '/sys/fs/cgroup',
    'Where the cgroup file systems are mounted; cgroup v2 (one unified hierarchy) or v1 (one per controller) is detected there.'),
  key('cgroup_parent', 'cgroupParent', cgroupName, 'nodemgr',
    "The daemon's own group in every hierarchy: each sliver's group is made under it, and nothing outside it is touched."),
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
];

const BY_KEY: ReadonlyMap<string, KeyDescriptor> = new Map(KEYS.map((d) => [d.key, d]));

/** A key's value and where it came from, for messages about two keys: "poll_period = 60 (line 4)". */
type Origin = (key: string, value: number) => string;

/** Rules between keys; the reason is reported at the last line that set one of `keys`. */
const CROSS_RULES: ReadonlyArray<{ keys: readonly string[]; check(config: Config, from: Origin): string | null }> = [
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

/** Close key names for "did you mean": edit distance of at most a third of the name, or containment. */
function suggestion(unknown: string): string | null {
  const name = unknown.toLowerCase().replace(/-/g, '_');
  let best: { key: string; distance: number } | null = null;
  for (const { key: candidate } of KEYS) {
    const distance = candidate === name ? 0 : editDistance(name, candidate);
    const close = distance <= Math.max(2, Math.floor(candidate.length / 3))
      || (name.length >= 4 && (candidate.includes(name) || name.includes(candidate)));
    if (close && (best === null || distance < best.distance)) best = { key: candidate, distance };
  }
  return best?.key ?? null;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

// ---- the API ----------------------------------------------------------------------------------

/** Builds the configuration: values from `set` (key -> value text), the defaults for the rest. */
function build(set: ReadonlyMap<string, { text: string; line: number }>, file: string | null, baseDir: string): Config {
  const config = { configFile: file === null ? null : resolve(file) } as Config;
  for (const d of KEYS) {
    const given = set.get(d.key);
    if (given === undefined) {
      d.setDefault(config);
      continue;
    }
    try {
      d.setFromText(config, given.text, baseDir);
    } catch (error) {
      if (!(error instanceof ValueError)) throw error;
      throw new ConfigError(error.message, { file, line: given.line, key: d.key });
    }
  }
  const from: Origin = (k, value) => {
    const given = set.get(k);
    return `${k} = ${value} (${given === undefined ? 'default' : `line ${given.line}`})`;
  };
  for (const rule of CROSS_RULES) {
    const reason = rule.check(config, from);
    if (reason === null) continue;
    const lines = rule.keys.flatMap((k) => {
      const given = set.get(k);
      return given === undefined ? [] : [{ key: k, line: given.line }];
    });
    const last = lines.sort((x, y) => y.line - x.line)[0];
    throw new ConfigError(reason, { file, line: last?.line ?? null, key: last?.key ?? rule.keys[0] ?? null });
  }
  return config;
}

/** The configuration when no file is given: every key at its default. */
export function defaultConfig(): Config {
  return build(new Map(), null, '/');
}

/**
 * Parses the text of a configuration file. `file` names it in messages, and relative paths in
 * values are resolved against its directory; nothing is read from disk.
 */
export function parseConfig(text: string, file: string): Config {
  const set = new Map<string, { text: string; line: number }>();
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = index + 1;
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const eq = trimmed.indexOf('=');
    const name = (eq < 0 ? trimmed : trimmed.slice(0, eq)).trim();
    if (eq < 0 || !/^[A-Za-z0-9_.-]+$/.test(name)) {
      throw new ConfigError(`expected "key = value", got ${got(trimmed)}`, { file, line });
    }
    // A comment after a value starts with "#" after white space, so a "#" inside a URL stays.
    const value = trimmed.slice(eq + 1).replace(/(^|\s)#.*$/, '').trim();
    const descriptor = BY_KEY.get(name);
    if (descriptor === undefined) {
      const close = suggestion(name);
      throw new ConfigError(`unknown key${close === null ? '' : ` (did you mean ${close}?)`}`, { file, line, key: name });
    }
    const first = set.get(name);
    if (first !== undefined) {
      throw new ConfigError(`set again; it was first set on line ${first.line} and a key may be set only once`, { file, line, key: name });
    }
    if (/^(["']).*\1$/.test(value)) {
      throw new ConfigError(`values are written without quotes, got ${got(value)}`, { file, line, key: name });
    }
    set.set(name, { text: value, line });
  });
  return build(set, file, dirname(resolve(file)));
}

/**
 * Reads the configuration from `file`; with null, from the file that $NODEMGR_CONFIG names, or
 * the defaults alone when it is unset or empty. A file that is named but cannot be read is an error.
 */
export async function loadConfig(file: string | null): Promise<Config> {
  if (file === '') throw new ConfigError('the configuration file name is empty');
  const fromEnv = file === null;
  const name = file ?? process.env['NODEMGR_CONFIG'] ?? '';
  if (name === '') return defaultConfig();
  let text: string;
  try {
    text = await readFile(name, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file'
      : code === 'EISDIR' ? 'is a directory, not a configuration file'
        : code === 'EACCES' ? 'permission denied'
          : `cannot be read (${describeError(error)})`;
    throw new ConfigError(`${why}${fromEnv ? ' (named by NODEMGR_CONFIG)' : ''}`, { file: name });
  }
  return parseConfig(text, name);
}

/** Every key with its default as written in the file and what it does, in the order of the file. */
export function describeConfigKeys(): Array<{ key: string; default: string; doc: string }> {
  return KEYS.map((d) => ({ key: d.key, default: d.defaultText(), doc: d.doc }));
}
