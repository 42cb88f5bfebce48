import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  ConfigError, defaultConfig, describeConfigKeys, loadConfig, packageRoot, parseConfig, type Config,
} from '../../src/config/config.js';
import { parseAuthorityUrl } from '../../src/authority/fetch.js';
import { parseSlicesDocument } from '../../src/slices/parse.js';

const FILE = 'etc/nodemgr.conf';

function withoutFile(config: Config): Omit<Config, 'configFile'> {
  const { configFile: _ignored, ...rest } = config;
  return rest;
}

/** The message of the ConfigError that parsing `text` throws. */
function errorOf(text: string, file = FILE): string {
  try {
    parseConfig(text, file);
  } catch (error) {
    if (error instanceof ConfigError) return error.message;
    throw error;
  }
  throw new Error(`no error for ${JSON.stringify(text)}`);
}

test('the defaults need no file', (t) => {
  const root = packageRoot();
  t.deepEqual(defaultConfig(), {
    configFile: null,
    nodeId: 1,
    authorityUrl: pathToFileURL(join(root, 'etc', 'slices.xml')).href,
    authorityCaFile: null,
    authorityTimeoutMs: 30_000,
    pollPeriodMs: 900_000,
    pollJitterMs: 60_000,
    backoffInitialMs: 5_000,
    backoffMaxMs: 900_000,
    documentMaxBytes: 67_108_864,
    stateDir: '/var/lib/nodemgr',
    runDir: '/run/nodemgr',
    logDir: '/var/log/nodemgr',
    logLevel: 'info',
    logFormat: 'text',
    sliverUidMin: 70_000,
    sliverUidMax: 79_999,
    homeBase: '/home',
    sliverShell: '/bin/bash',
    delegateShell: '/usr/local/libexec/nodemgr/forward_api_calls',
    disabledShell: '/usr/sbin/nologin',
    maxParallelAccountOps: 4,
    maxParallelUnixAccountOps: 256,
    opRetryInitialMs: 2_000,
    opRetryMaxMs: 300_000,
    dbCoalesceMs: 50,
    apiPort: 812,
    apiSocket: '/run/nodemgr/api.sock',
    apiMaxRequestBytes: 16_777_216,
    authorityCertFile: null,
    authorityDelegate: null,
    apiTlsAddress: '0.0.0.0',
    apiTlsPort: 0,
    apiTlsCertFile: null,
    apiTlsKeyFile: null,
    apiTlsCaFile: null,
    metricsAddress: '127.0.0.1',
    metricsPort: 9812,
    allowedUsersFile: '/etc/nodemgr/allowed-users',
    cgroupRoot: '/sys/fs/cgroup',
    cgroupParent: 'nodemgr',
    shapingDevice: 'auto',
    shapingLinkRateKbit: 1_000_000,
    exemptPrefixes: [],
    exemptCapKbit: 1_000_000,
    byteCapPeriodMs: 86_400_000,
    byteCapSampleMs: 30_000,
    straySweepMs: 10_000,
    sshAddress: '0.0.0.0',
    sshPort: 2222,
    sshMaxSessions: 200,
    sshMaxSessionsPerAccount: 20,
    sshIdleTimeoutMs: 3_600_000,
    sshMaxAuthAttempts: 6,
    sshLoginGraceMs: 30_000,
    sshMaxStartups: 100,
    defaultRuntime: 'unix',
    libvirtQemuUri: 'qemu:///system',
    libvirtLxcUri: 'lxc:///system',
    guestDir: '/var/lib/nodemgr/guests',
    addressPool: '/etc/nodemgr/mac-addresses',
    guestBridge: null,
    guestReadyTimeoutMs: 300_000,
    guestAccel: 'auto',
    guestReadyMarker: 'nodemgr-ready',
    imageCacheDir: '/var/cache/nodemgr/images',
    imageCacheMaxBytes: 21_474_836_480,
    taskDir: '/var/lib/nodemgr/tasks',
    taskStartTimeoutMs: 180_000,
    taskSilenceTimeoutMs: 300_000,
    taskWallTimeLimitMs: 86_400_000,
    taskReservationTtlMs: 600_000,
    taskStageMaxBytes: 4_294_967_296,
    taskDefaultVcpus: 1,
    taskDefaultMemoryBytes: 536_870_912,
    cpuOvercommit: 4,
    memOvercommit: 1,
    vcRepositoryDir: '/var/lib/nodemgr/vc-repository',
    vcRepositoryUrl: null,
    vcMaxComputeCpus: 2,
    vcDir: '/var/lib/nodemgr/clusters',
    vcPrivateSubnet: '10.1.0.0/16',
    vcRenames: ['/etc/sysconfig/network-scripts/ifcfg-eth*', '/etc/udev/rules.d/70-persistent-net.rules'],
    vcPublicGateway: null,
    vcDnsServers: [],
    vcDomain: 'cluster.local',
  });
});

test('the image cache keys: a directory resolved against the file, and a bound in whole bytes', (t) => {
  const config = parseConfig('image_cache_dir = images\nimage_cache_max_bytes = 1073741824', '/etc/nodemgr/nodemgr.conf');
  t.is(config.imageCacheDir, '/etc/nodemgr/images');
  t.is(config.imageCacheMaxBytes, 1_073_741_824);
  t.is(errorOf('image_cache_max_bytes = 20G'), 'etc/nodemgr.conf line 1: image_cache_max_bytes: expected a whole number >= 1048576, got "20G"');
  t.is(errorOf('image_cache_max_bytes = 1000'), 'etc/nodemgr.conf line 1: image_cache_max_bytes: expected a whole number >= 1048576, got "1000"');
  t.is(errorOf('cpu_overcommit = 0'), 'etc/nodemgr.conf line 1: cpu_overcommit: expected a number from 0.1 to 100 (such as 1.5), got "0"');
  t.is(parseConfig('mem_overcommit = 1.5', FILE).memOvercommit, 1.5);
  t.is(errorOf('image_cache_dir ='), 'etc/nodemgr.conf line 1: image_cache_dir: expected a path, got an empty value');
});

test('the virtual cluster keys: a repository directory, or a URL of one that ends in "/", and a bound on a compute\'s CPUs', (t) => {
  const config = parseConfig('vc_repository_dir = clusters\nvc_repository_url = https://repo.example.org/vc\nvc_max_compute_cpus = 8', '/etc/nodemgr/nodemgr.conf');
  t.is(config.vcRepositoryDir, '/etc/nodemgr/clusters');
  t.is(config.vcRepositoryUrl, 'https://repo.example.org/vc/');
  t.is(config.vcMaxComputeCpus, 8);
  t.is(parseConfig('vc_repository_url = file:clusters', '/etc/nodemgr/nodemgr.conf').vcRepositoryUrl, 'file:///etc/nodemgr/clusters/');
  t.is(parseConfig('vc_repository_url =', FILE).vcRepositoryUrl, null);
  t.is(errorOf('vc_repository_url = ftp://repo.example.org/vc'),
    'etc/nodemgr.conf line 1: vc_repository_url: expected an http:, https: or file: URL of a directory, got "ftp://repo.example.org/vc"');
  t.is(errorOf('vc_repository_url = https://me:secret@repo.example.org/vc'),
    'etc/nodemgr.conf line 1: vc_repository_url: expected an http:, https: or file: URL of a directory without credentials (the URLs of its files are shown to every local user)');
  t.is(errorOf('vc_max_compute_cpus = 0'), 'etc/nodemgr.conf line 1: vc_max_compute_cpus: expected a whole number from 1 to 1024, got "0"');
});

test('the TLS keys: off by default; turned on, each of the three files must be named, and the port must be free of the others', (t) => {
  const files = 'api_tls_cert = tls/node.pem\napi_tls_key = tls/node.key\napi_tls_ca = tls/ca.pem\nallowed_users = allowed-users';
  const config = parseConfig(`api_tls_port = 8812\n${files}`, '/etc/nodemgr/nodemgr.conf');
  t.like(config, {
    apiTlsAddress: '0.0.0.0', apiTlsPort: 8812, apiTlsCertFile: '/etc/nodemgr/tls/node.pem', apiTlsKeyFile: '/etc/nodemgr/tls/node.key',
    apiTlsCaFile: '/etc/nodemgr/tls/ca.pem', allowedUsersFile: '/etc/nodemgr/allowed-users',
  });
  // Off, the files are not needed.
  t.is(parseConfig('api_tls_cert =', FILE).apiTlsPort, 0);
  t.is(
    errorOf('api_tls_port = 8812\napi_tls_key = k.pem\napi_tls_ca = ca.pem'),
    "etc/nodemgr.conf line 1: api_tls_port: the TLS listener is on (api_tls_port = 8812 (line 1)) and needs api_tls_cert, the node's PEM certificate; it is empty",
  );
  t.is(
    errorOf('api_tls_port = 8812\napi_tls_cert = c.pem\napi_tls_key =\napi_tls_ca = ca.pem'),
    'etc/nodemgr.conf line 3: api_tls_key: the TLS listener is on (api_tls_port = 8812 (line 1)) and needs api_tls_key, the PEM private key of api_tls_cert; it is empty',
  );
  t.regex(errorOf('api_tls_port = 8812\napi_tls_cert = c.pem\napi_tls_key = k.pem'), /line 1: api_tls_port: .* needs api_tls_ca, the PEM certificate of the CA/);
  t.is(
    errorOf(`api_tls_port = 812\n${files}`),
    'etc/nodemgr.conf line 1: api_tls_port: api_tls_port must differ from api_port, got api_tls_port = 812 (line 1) and api_port = 812 (default)',
  );
  t.regex(errorOf(`api_tls_port = 2222\n${files}`), /api_tls_port must differ from ssh_port/);
  // On another address than the other listeners, the same port is free.
  t.is(parseConfig(`api_tls_port = 812\napi_tls_address = 192.0.2.1\n${files}`, FILE).apiTlsPort, 812);
  t.regex(errorOf('api_tls_address = node.example.org'), /api_tls_address: expected an IPv4 or IPv6 address/);
  t.regex(errorOf('allowed_users ='), /allowed_users: expected a path, got an empty value/);
});

test('the libvirt keys: runtime, URIs, bridge and ready marker are checked', (t) => {
  const config = parseConfig('default_runtime = qemu\nstate_dir = /srv/nm\nguest_bridge = br0\nguest_ready_timeout = 90', FILE);
  t.is(config.defaultRuntime, 'qemu');
  t.is(config.guestDir, '/srv/nm/guests', 'guest_dir follows state_dir');
  t.is(config.guestBridge, 'br0');
  t.is(config.guestReadyTimeoutMs, 90_000);
  t.throws(() => parseConfig('default_runtime = xen', FILE), { message: /default_runtime: expected one of unix, lxc, qemu, got "xen"/ });
  t.throws(() => parseConfig('libvirt_qemu_uri = /var/run/libvirt', FILE), { message: /libvirt_qemu_uri: expected a libvirt connection URI/ });
  t.throws(() => parseConfig('guest_bridge = br0;reboot', FILE), { message: /guest_bridge: expected a bridge device name/ });
  t.throws(() => parseConfig('guest_ready_marker = x', FILE), { message: /guest_ready_marker: expected 2 to 64 printable/ });
});

test('the limit keys: device names, prefixes and cgroup names are checked, and the uid range must fit the class numbers', (t) => {
  const config = parseConfig('shaping_device = eth0\nexempt_prefixes = 10.0.0.0/8, 2001:db8::/32\nshaping_link_rate = 100000', FILE);
  t.is(config.shapingDevice, 'eth0');
  t.deepEqual(config.exemptPrefixes, ['10.0.0.0/8', '2001:db8::/32']);
  t.is(config.exemptCapKbit, 100_000, 'the exempt cap follows the link rate');
  t.throws(() => parseConfig('shaping_device = eth0; rm -rf /', FILE), { message: /shaping_device: expected a network device name/ });
  t.throws(() => parseConfig('shaping_device = averyveryverylongname', FILE), { message: /1 to 15/ });
  t.throws(() => parseConfig('exempt_prefixes = 10.0.0.0/33', FILE), { message: /exempt_prefixes: .*"10.0.0.0\/33"/ });
  t.throws(() => parseConfig('exempt_prefixes = 10.0.0.0', FILE), { message: /address prefixes/ });
  t.throws(() => parseConfig('cgroup_parent = ../escape', FILE), { message: /cgroup_parent: expected a cgroup directory name/ });
  // a path below the root, as the unit's delegated subtree is
  t.is(parseConfig('cgroup_parent = system.slice/nodemgr.service/slivers', FILE).cgroupParent, 'system.slice/nodemgr.service/slivers');
  t.throws(() => parseConfig('cgroup_parent = system.slice/../escape', FILE), { message: /cgroup_parent: expected a cgroup directory name/ });
  t.throws(() => parseConfig('cgroup_parent = /absolute', FILE), { message: /cgroup_parent: expected a cgroup directory name/ });
  t.throws(() => parseConfig('sliver_uid_min = 10000\nsliver_uid_max = 60000', FILE), { message: /at most 32639 uids .*shaping_device = none/ });
  t.is(parseConfig('sliver_uid_min = 10000\nsliver_uid_max = 60000\nshaping_device = none', FILE).sliverUidMax, 60_000);
});

test('packageRoot is the directory of nodemgr package.json, and the default authority is its example document', (t) => {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { name: string };
  t.is(pkg.name, 'nodemgr');
  t.true(existsSync(fileURLToPath(defaultConfig().authorityUrl)));
});

test('an empty file, or one of comments and blank lines only, is the defaults', (t) => {
  const dir = '/etc/nodemgr';
  for (const text of ['', '\n\n', '# nothing here\n   \n\t# indented comment\r\n']) {
    const config = parseConfig(text, join(dir, 'nodemgr.conf'));
    t.is(config.configFile, '/etc/nodemgr/nodemgr.conf');
    t.deepEqual(withoutFile(config), withoutFile(defaultConfig()));
  }
});

test('values are read with trailing comments, any spacing and CRLF line ends; seconds become milliseconds', (t) => {
  const config = parseConfig(
    [
      'node_id=42',
      '  poll_period   =   60   # once a minute',
      'poll_jitter = 0\t# no jitter',
      'log_level = debug',
      'db_coalesce_ms = 0',
      'api_port = 0 # TCP off',
    ].join('\r\n'),
    '/etc/nodemgr/nodemgr.conf',
  );
  t.is(config.nodeId, 42);
  t.is(config.pollPeriodMs, 60_000);
  t.is(config.pollJitterMs, 0);
  t.is(config.logLevel, 'debug');
  t.is(config.dbCoalesceMs, 0);
  t.is(config.apiPort, 0);
});

test('a "#" that does not follow white space is part of the value', (t) => {
  const config = parseConfig('authority_url = https://plc.example.org/slices.xml#node # the PLC', '/etc/nodemgr.conf');
  t.is(config.authorityUrl, 'https://plc.example.org/slices.xml#node');
});

test('a bad whole number names the file, the line, the key and the reason', (t) => {
  const text = ['# comment', '', 'node_id = 1', '', '# more', '', 'poll_period = ten'].join('\n');
  t.is(errorOf(text), 'etc/nodemgr.conf line 7: poll_period: expected a whole number of seconds >= 10, got "ten"');
  t.is(errorOf('poll_period = 5'), 'etc/nodemgr.conf line 1: poll_period: expected a whole number of seconds >= 10, got "5"');
  t.is(errorOf('node_id = -3'), 'etc/nodemgr.conf line 1: node_id: expected a whole number >= 1, got "-3"');
  t.is(errorOf('node_id = 1.5'), 'etc/nodemgr.conf line 1: node_id: expected a whole number >= 1, got "1.5"');
  t.is(errorOf('node_id ='), 'etc/nodemgr.conf line 1: node_id: expected a whole number >= 1, got ""');
  t.is(errorOf('api_port = 70000'), 'etc/nodemgr.conf line 1: api_port: expected a whole number from 0 to 65535, got "70000"');
  t.is(
    errorOf('poll_period = 99999999'),
    'etc/nodemgr.conf line 1: poll_period: expected a whole number of seconds from 10 to 2147483, got "99999999"',
  );
});

test('the error carries its parts for callers', (t) => {
  const error = t.throws(() => parseConfig('\npoll_jitter = soon', 'a.conf'), { instanceOf: ConfigError });
  t.like(error, { file: 'a.conf', line: 2, key: 'poll_jitter', reason: 'expected a whole number of seconds >= 0, got "soon"' });
});

test('an unknown key is an error, with the close key name when there is one', (t) => {
  t.is(errorOf('node_id = 2\npol_period = 60'), 'etc/nodemgr.conf line 2: pol_period: unknown key (did you mean poll_period?)');
  t.is(errorOf('uid_max = 80000'), 'etc/nodemgr.conf line 1: uid_max: unknown key (did you mean sliver_uid_max?)');
  t.is(errorOf('Log_Level = info'), 'etc/nodemgr.conf line 1: Log_Level: unknown key (did you mean log_level?)');
  t.is(errorOf('colour = blue'), 'etc/nodemgr.conf line 1: colour: unknown key');
});

test('a line that is not "key = value" is an error', (t) => {
  t.is(errorOf('\n\npoll_period 60'), 'etc/nodemgr.conf line 3: expected "key = value", got "poll_period 60"');
  t.is(errorOf('= 60'), 'etc/nodemgr.conf line 1: expected "key = value", got "= 60"');
});

test('a key set twice names both lines', (t) => {
  t.is(
    errorOf('poll_period = 60\nnode_id = 3\npoll_period = 60'),
    'etc/nodemgr.conf line 3: poll_period: set again; it was first set on line 1 and a key may be set only once',
  );
});

test('quoted values are refused rather than taken literally', (t) => {
  t.is(errorOf('state_dir = "/var/lib/x"'), 'etc/nodemgr.conf line 1: state_dir: values are written without quotes, got "\\"/var/lib/x\\""');
});

test('the authority URL must be http:, https: or file:', (t) => {
  t.is(
    errorOf('authority_url = ftp://plc.example.org/slices.xml'),
    'etc/nodemgr.conf line 1: authority_url: expected an http:, https: or file: URL, got "ftp://plc.example.org/slices.xml" (scheme "ftp:" is not supported)',
  );
  t.is(
    errorOf('authority_url = /srv/slices.xml'),
    'etc/nodemgr.conf line 1: authority_url: expected an http:, https: or file: URL, got "/srv/slices.xml" (a local file is written file:PATH)',
  );
  t.regex(errorOf('authority_url = file://elsewhere/slices.xml'), /^etc\/nodemgr\.conf line 1: authority_url: expected a file: URL of this host/);
  t.regex(errorOf('authority_url = file:slices.xml?x=1'), /takes no query or fragment/);
  t.is(parseConfig('authority_url = HTTPS://PLC.example.org:8443/xml/', FILE).authorityUrl, 'https://plc.example.org:8443/xml/');
});

test('the authority URL is checked by the fetch\'s rules: a file: URL of another host, with credentials or with a NUL is refused', (t) => {
  for (const [url, host] of [['file://otherhost/slices.xml', 'otherhost'], ['file://127.0.0.1/slices.xml', '127.0.0.1'], ['file:\\\\plc\\slices.xml', 'plc']] as const) {
    t.regex(errorOf(`authority_url = ${url}`), new RegExp(`^etc/nodemgr\\.conf line 1: authority_url: expected a file: URL of this host, got .*\\(a file: URL names a local file, not one on host "${host.replace(/\./g, '\\.')}"\\)$`));
    t.throws(() => parseAuthorityUrl(url, '/etc/nodemgr'), { message: new RegExp(`not one on host "${host.replace(/\./g, '\\.')}"`) });
  }
  const credentials = errorOf('authority_url = file://plc:s3cret@/srv/slices.xml');
  t.regex(credentials, /^etc\/nodemgr\.conf line 1: authority_url: expected an http:, https: or file: URL, got "file:\/\/\*\*\*@\/srv\/slices\.xml"/);
  t.false(credentials.includes('s3cret'));
  t.regex(errorOf('authority_url = file:/srv/slices%00.xml'), /authority_url: expected a file: URL of this host, got "file:\/srv\/slices%00\.xml" \(not a usable file path \(it contains a NUL byte\)\)$/);
  t.is(errorOf('authority_url ='), 'etc/nodemgr.conf line 1: authority_url: expected an http:, https: or file: URL, got an empty value');
  t.regex(errorOf('authority_url = file:/srv/'), /authority_url: expected a file: URL naming a file, got "file:\/srv\/" \(names a directory\)$/);
});

test('the configuration accepts an authority URL exactly when the fetch does, and keeps the form the fetch uses', (t) => {
  const values = [
    'http://plc.example/slices.xml', 'HTTPS://plc:s3cret@PLC.example:8443/x?node=1', 'http://[::1]/x', 'http://', 'ftp://plc.example/x',
    'plc.example/slices.xml', 'file:slices.xml', 'file:../plc/slices.xml', 'file:////srv/x', 'file://localhost/srv/x', 'file:/srv/x?',
    'file:/srv/x?a=1', 'file:/srv/x#top', 'file:', 'file:///', 'file:/%2F', 'file://otherhost/x', 'file://u:p@/x',
  ];
  for (const value of values) {
    let fetched: string;
    try {
      fetched = parseAuthorityUrl(value, '/etc/nodemgr').href;
    } catch {
      fetched = 'refused';
    }
    let configured: string;
    try {
      configured = parseConfig(`authority_url = ${value}`, '/etc/nodemgr/nodemgr.conf').authorityUrl;
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      configured = 'refused';
    }
    t.is(configured, fetched, value);
  }
});

test('a password in the authority URL does not appear in an error', (t) => {
  const message = errorOf('authority_url = http://node:s3cret@[bad/slices.xml');
  t.false(message.includes('s3cret'));
  t.regex(message, /http:\/\/\*\*\*@/);
});

test('relative paths and a relative file: URL are resolved against the file\'s directory', (t) => {
  const config = parseConfig(
    [
      'authority_url = file:slices.xml',
      'authority_ca_file = ca/plc.pem',
      'state_dir = state',
      'run_dir = ../run',
      'log_dir = /var/log/elsewhere',
      'home_base = ./homes/',
    ].join('\n'),
    '/opt/node mgr/etc/nodemgr.conf',
  );
  t.is(config.authorityUrl, 'file:///opt/node%20mgr/etc/slices.xml');
  t.is(config.authorityCaFile, '/opt/node mgr/etc/ca/plc.pem');
  t.is(config.stateDir, '/opt/node mgr/etc/state');
  t.is(config.runDir, '/opt/node mgr/run');
  t.is(config.logDir, '/var/log/elsewhere');
  t.is(config.homeBase, '/opt/node mgr/etc/homes');
  t.is(config.apiSocket, '/opt/node mgr/run/api.sock');
  t.is(parseConfig('authority_url = file:///srv/plc/slices.xml', '/etc/x.conf').authorityUrl, 'file:///srv/plc/slices.xml');
  t.is(parseConfig('authority_url = file:../plc/slices.xml', '/etc/nodemgr/x.conf').authorityUrl, 'file:///etc/plc/slices.xml');
});

test('a relative file name is resolved against the working directory first', (t) => {
  const config = parseConfig('state_dir = state', 'nodemgr.conf');
  t.is(config.configFile, join(process.cwd(), 'nodemgr.conf'));
  t.is(config.stateDir, join(process.cwd(), 'state'));
});

test('an empty authority_ca_file means the system roots', (t) => {
  t.is(parseConfig('authority_ca_file =   # system roots', FILE).authorityCaFile, null);
});

test('log_level takes one of four levels', (t) => {
  t.is(errorOf('log_level = verbose'), 'etc/nodemgr.conf line 1: log_level: expected one of error, warn, info, debug, got "verbose"');
});

test('log_format is text or json', (t) => {
  t.is(parseConfig('log_format = json', FILE).logFormat, 'json');
  t.is(errorOf('log_format = xml'), 'etc/nodemgr.conf line 1: log_format: expected one of text, json, got "xml"');
});

test('the api socket follows run_dir unless set, and must fit a Unix socket path', (t) => {
  t.is(parseConfig('run_dir = /run/nm2', FILE).apiSocket, '/run/nm2/api.sock');
  t.is(parseConfig('run_dir = /run/nm2\napi_socket = /run/api.sock', FILE).apiSocket, '/run/api.sock');
  const long = `/run/${'d'.repeat(110)}`;
  t.regex(errorOf(`run_dir = ${long}`), /^etc\/nodemgr\.conf line 1: run_dir: the API socket ".*" would be 124 bytes long; a Unix socket path may have at most 107/);
  t.regex(errorOf(`api_socket = ${long}/a.sock`), /^etc\/nodemgr\.conf line 1: api_socket: ".*" is 122 bytes long/);
});

test('the uid range must be ordered, in bounds and hold at least 10 uids', (t) => {
  t.is(
    errorOf('sliver_uid_min = 80000'),
    'etc/nodemgr.conf line 1: sliver_uid_min: sliver_uid_max must be greater than sliver_uid_min, got sliver_uid_min = 80000 (line 1) and sliver_uid_max = 79999 (default)',
  );
  t.is(
    errorOf('sliver_uid_max = 70005\nsliver_uid_min = 70000'),
    'etc/nodemgr.conf line 2: sliver_uid_min: the uid range must hold at least 10 uids, got 6: sliver_uid_min = 70000 (line 2) and sliver_uid_max = 70005 (line 1)',
  );
  t.is(errorOf('sliver_uid_min = 999'), 'etc/nodemgr.conf line 1: sliver_uid_min: expected a whole number from 1000 to 4294967294, got "999"');
  t.is(errorOf('sliver_uid_max = 4294967295'), 'etc/nodemgr.conf line 1: sliver_uid_max: expected a whole number from 1000 to 4294967294, got "4294967295"');
  const config = parseConfig('sliver_uid_min = 1000\nsliver_uid_max = 1009', FILE);
  t.is(config.sliverUidMin, 1000);
  t.is(config.sliverUidMax, 1009);
});

test('an initial backoff may not exceed its maximum', (t) => {
  t.is(
    errorOf('fetch_backoff_max = 3'),
    'etc/nodemgr.conf line 1: fetch_backoff_max: fetch_backoff_initial must not exceed fetch_backoff_max, got fetch_backoff_initial = 5 (default) and fetch_backoff_max = 3 (line 1)',
  );
  t.is(
    errorOf('op_retry_initial = 600'),
    'etc/nodemgr.conf line 1: op_retry_initial: op_retry_initial must not exceed op_retry_max, got op_retry_initial = 600 (line 1) and op_retry_max = 300 (default)',
  );
  const config = parseConfig('op_retry_initial = 1\nop_retry_max = 1', FILE);
  t.is(config.opRetryInitialMs, 1000);
  t.is(config.opRetryMaxMs, 1000);
});

test('describeConfigKeys lists each key once, and writing its default gives the default', (t) => {
  const keys = describeConfigKeys();
  t.is(new Set(keys.map((k) => k.key)).size, keys.length);
  t.is(keys.length, Object.keys(defaultConfig()).length - 1);
  for (const { key, default: value, doc } of keys) {
    t.true(doc.length > 20, key);
    if (value.startsWith('<')) continue; // derived from another key
    t.deepEqual(withoutFile(parseConfig(`${key} = ${value}`, '/x/nodemgr.conf')), withoutFile(defaultConfig()), key);
  }
});

test('the shipped etc/nodemgr.conf is the defaults and documents every key', (t) => {
  const file = join(packageRoot(), 'etc', 'nodemgr.conf');
  const text = readFileSync(file, 'utf8');
  const config = parseConfig(text, file);
  t.is(config.configFile, file);
  t.deepEqual(withoutFile(config), withoutFile(defaultConfig()));
  const lines = text.split('\n');
  for (const { key } of describeConfigKeys()) {
    // Set, or shown commented out where the default follows the installation or another key.
    const at = lines.findIndex((line) => new RegExp(`^(# )?${key} =`).test(line));
    t.not(at, -1, `${key} is not in etc/nodemgr.conf`);
    // The comment of a key is the paragraph it ends (two keys of one rule share a comment).
    let comment = '';
    for (let i = at - 1; i >= 0 && lines[i]!.trim() !== ''; i--) comment = `${lines[i]}\n${comment}`;
    t.regex(comment, /Defaults?:/, `${key} has no comment giving its default`);
  }
});

test('the example authority document gives node 1 two slivers and a delegate, and node 2 its own slice', (t) => {
  const body = readFileSync(fileURLToPath(defaultConfig().authorityUrl));
  const doc = parseSlicesDocument(body, { nodeId: 1, maxBytes: defaultConfig().documentMaxBytes });
  t.deepEqual(doc.skipped, []);
  t.is(doc.slicesSeen, 3);
  t.deepEqual(doc.slivers.map((s) => [s.name, s.rspec]), [
    ['example_web', { cpu_share: 32, net_max_rate: 10000 }],
    ['example_seed', { cpu_share: 5, net_max_rate: 2000, enabled: 1 }],
  ]);
  const web = doc.slivers[0]!;
  t.deepEqual(web.controllers, ['del_example']);
  t.is(web.keys.length, 1);
  t.regex(web.initscript ?? '', /sleep infinity .*&\n/);
  t.deepEqual(doc.delegates.map((d) => [d.name, d.keys.length]), [['del_example', 1]]);
  const other = parseSlicesDocument(body, { nodeId: 2, maxBytes: 1 << 20 });
  t.deepEqual(other.slivers.map((s) => s.name), ['example_other']);
});

test('loadConfig reads a named file and resolves paths against its directory', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'nodemgr.conf');
  await writeFile(file, 'state_dir = state\npoll_period = 60\n');
  const config = await loadConfig(file);
  t.is(config.configFile, file);
  t.is(config.stateDir, join(dir, 'state'));
  t.is(config.pollPeriodMs, 60_000);
});

test('loadConfig refuses a named file that does not exist, naming it', async (t) => {
  const error = await t.throwsAsync(loadConfig('/nonexistent/nodemgr.conf'), { instanceOf: ConfigError });
  t.is(error?.message, '/nonexistent/nodemgr.conf: no such file');
});

test.serial('loadConfig(null) takes NODEMGR_CONFIG, else the defaults', async (t) => {
  const saved = process.env['NODEMGR_CONFIG'];
  t.teardown(() => {
    if (saved === undefined) delete process.env['NODEMGR_CONFIG'];
    else process.env['NODEMGR_CONFIG'] = saved;
  });
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'env.conf');
  await writeFile(file, 'node_id = 9\n');

  delete process.env['NODEMGR_CONFIG'];
  t.deepEqual(await loadConfig(null), defaultConfig());
  process.env['NODEMGR_CONFIG'] = '';
  t.deepEqual(await loadConfig(null), defaultConfig());
  process.env['NODEMGR_CONFIG'] = file;
  t.is((await loadConfig(null)).nodeId, 9);
  t.is((await loadConfig(null)).configFile, file);
  // --config wins over the environment.
  t.is((await loadConfig(join(packageRoot(), 'etc', 'nodemgr.conf'))).nodeId, 1);
  process.env['NODEMGR_CONFIG'] = join(dir, 'missing.conf');
  const error = await t.throwsAsync(loadConfig(null), { instanceOf: ConfigError });
  t.is(error?.message, `${join(dir, 'missing.conf')}: no such file (named by NODEMGR_CONFIG)`);
});
