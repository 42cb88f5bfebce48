// systemd/nodemgr.service under a real systemd: a Debian 12 virtual machine (systemd as PID 1,
// cgroup v2) in which nodemgr is installed as the README tells an operator, then driven with the
// guest's own systemctl and journalctl. Run by `npm run test:systemd` (it boots a software-emulated
// machine: minutes, not seconds); a plain `npm test` skips it.
import test from 'ava';
import { isRoot } from '../system/support/host.js';
import { waitFor } from '../support/wait.js';
import { bootGuest, guestImage, type Guest } from './support/guest.js';
import { installScript, stageShare, type Share } from './support/install.js';

const CONFIG = '/etc/nodemgr/nodemgr.conf';
/** The example document's accounts for node 1 (etc/slices.xml). */
const SLIVERS = ['example_web', 'example_seed'];
const DELEGATE = 'del_example';
/**
 * Allowed beyond RestartSec (read from systemd below): systemd noticing the death, ExecStopPost,
 * ExecStartPre and node's start, in a software-emulated machine on a shared host.
 */
const SLACK_MS = 20_000;

const why =
  process.env.NODEMGR_SYSTEMD_TEST !== '1' ? 'boots a virtual machine for minutes: run it with `npm run test:systemd`'
  : !isRoot ? 'needs root (it builds a Debian image and boots it)'
  : null;
if (why) test.skip(`nodemgr.service under a real systemd: ${why}`, () => undefined);
const serial = why ? test.skip : test.serial;

let guest: Guest | null = null;
let share: Share | null = null;

test.before(async (t) => {
  if (why) return;
  const image = await guestImage();
  share = await stageShare();
  guest = await bootGuest(image, share.dir);
  t.log(`guest booted (${guest.accel})`);
  await guest.must(installScript(share.tarball), 10 * 60_000);
  // QEMU's user network with restrict=on hands out no router; the default route is what nodemgr's
  // shaping_device = auto looks for, as on a real node.
  await guest.must('ip route replace default via 10.0.2.2 dev "$(ip -o link show | awk -F": " \'$2 != "lo" {print $2; exit}\')"');
});

test.after.always(async () => {
  await guest?.destroy();
  await share?.remove();
});

const g = () => guest!;
const unit = async (property: string) => (await g().must(`systemctl show -P ${property} nodemgr.service`)).trim();
const status = async () => JSON.parse(await g().must(`nodemgr status --json --config ${CONFIG}`)) as {
  documentTimestamp: number | null;
  lastSync: { at: string; outcome: string } | null;
  accounts: Array<{ name: string; kind: string; state: string; uid: number | null }>;
  limitsInForce?: Record<string, Record<string, number | string | boolean>>;
};
const seconds = (text: string) => {
  // systemctl show -P prints times like "5s", "1min", "100ms"
  const m = /^(\d+(?:\.\d+)?)(ms|s|min)?$/.exec(text.trim());
  if (!m) throw new Error(`not a time span: ${text}`);
  return Number(m[1]) * ({ ms: 0.001, s: 1, min: 60 }[m[2] ?? 's'] ?? 1);
};

async function converged(): Promise<Awaited<ReturnType<typeof status>>> {
  return waitFor('the example document to be converged (every account running)', async () => {
    const s = await status();
    const states = new Map(s.accounts.map((a) => [a.name, a.state]));
    return [...SLIVERS, DELEGATE].every((n) => states.get(n) === 'running') ? s : null;
  }, { timeoutMs: 5 * 60_000, intervalMs: 2_000 });
}

const sliverPids = async (name: string) =>
  (await g().sh(`pgrep -u ${name}`)).stdout.split('\n').filter(Boolean).map(Number);

serial('systemctl start reaches active and converges the example document into accounts', async (t) => {
  await g().must('systemctl start nodemgr.service', 5 * 60_000);
  t.is(await unit('ActiveState'), 'active');
  const s = await converged();
  t.is(s.documentTimestamp, 1764000000);
  for (const name of [...SLIVERS, DELEGATE]) {
    const entry = (await g().must(`getent passwd ${name}`)).trim().split(':');
    t.is(entry[0], name, `${name} is an account of the guest`);
    t.true(Number(entry[2]) >= 70000 && Number(entry[2]) <= 79999, `${name}'s uid ${entry[2]} is in the configured range`);
  }
  // example_web's initscript leaves a `sleep infinity` running as the sliver
  await waitFor('example_web\'s initscript to leave its process', async () => (await sliverPids('example_web')).length > 0, 120_000);
});

serial('the hardening leaves the API socket, the cgroups and tc working', async (t) => {
  const record = JSON.parse(await g().must(`nodemgr call GetRecord example_web --config ${CONFIG}`)) as Record<string, unknown>;
  t.is(record.name, 'example_web', 'GetRecord answers over the Unix socket');
  const xids = await g().must(`nodemgr call GetXIDs --config ${CONFIG}`);
  t.regex(xids, /example_web/);

  // The sliver's processes are in its cgroup, inside the unit's delegated subtree.
  const unitGroup = await unit('ControlGroup');
  for (const pid of await sliverPids('example_web')) {
    const group = (await g().must(`cat /proc/${pid}/cgroup`)).trim();
    t.true(group.startsWith(`0::${unitGroup}/`) && group.endsWith('/example_web'), `pid ${pid} of example_web is in ${group}, under ${unitGroup}`);
  }
  const s = await status();
  const limits = s.limitsInForce?.['example_web'] ?? {};
  t.log(`example_web's limits in force: ${JSON.stringify(limits)}`);
  t.false(String(limits.not_enforced ?? '').includes('cpu'), `cpu is enforced: ${String(limits.not_enforced ?? '')}`);
  t.false(String(limits.not_enforced ?? '').includes('bandwidth'), `bandwidth is enforced: ${String(limits.not_enforced ?? '')}`);
  const qdisc = await g().must('tc qdisc show');
  t.regex(qdisc, /qdisc htb /, `the daemon's HTB tree is a root qdisc:\n${qdisc}`);
});

serial('systemctl reload makes the daemon sync now', async (t) => {
  const before = (await status()).lastSync?.at;
  t.truthy(before);
  const since = (await g().must('date +%s')).trim();
  await g().must('systemctl reload nodemgr.service');
  const after = await waitFor('a sync after the reload', async () => {
    const at = (await status()).lastSync?.at;
    return at && at !== before ? at : null;
  }, { timeoutMs: 120_000, intervalMs: 1_000 });
  t.true(Date.parse(after) > Date.parse(before!));
  const log = await g().must(`journalctl -u nodemgr.service --since @${since} -o cat`);
  t.regex(log, /signal received, syncing now/);
});

serial('kill -9 of the main process is followed by a restart within RestartSec, with a new MainPID', async (t) => {
  const restartSec = seconds(await unit('RestartUSec'));
  const first = Number(await unit('MainPID'));
  const restartsBefore = Number(await unit('NRestarts'));
  t.true(first > 0);
  const killedAt = Date.now();
  await g().must(`kill -9 ${first}`);
  const second = await waitFor('a new main process', async () => {
    const pid = Number(await unit('MainPID'));
    return pid > 0 && pid !== first && (await unit('ActiveState')) === 'active' ? pid : null;
  }, { timeoutMs: restartSec * 1000 + 2 * SLACK_MS, intervalMs: 500 });
  const tookMs = Date.now() - killedAt;
  t.log(`restarted in ${(tookMs / 1000).toFixed(1)} s (RestartSec ${restartSec} s), MainPID ${first} -> ${second}`);
  t.true(tookMs <= restartSec * 1000 + SLACK_MS, `restart took ${tookMs} ms`);
  t.is(Number(await unit('NRestarts')), restartsBefore + 1);
  await converged();
  t.true((await sliverPids('example_web')).length > 0, 'the sliver\'s processes lived through the restart');
});

serial('systemctl stop returns within TimeoutStopSec and leaves the slivers\' processes running', async (t) => {
  const timeout = seconds(await unit('TimeoutStopUSec'));
  const pids = await sliverPids('example_web');
  t.true(pids.length > 0);
  const started = Date.now();
  await g().must('systemctl stop nodemgr.service', (timeout + 60) * 1000);
  const tookMs = Date.now() - started;
  t.log(`systemctl stop took ${(tookMs / 1000).toFixed(1)} s (TimeoutStopSec ${timeout} s)`);
  t.true(tookMs < timeout * 1000, `stop took ${tookMs} ms`);
  t.is(await unit('ActiveState'), 'inactive');
  t.is(await unit('Result'), 'success', 'the daemon ended on SIGTERM by itself, not by a SIGKILL after the timeout');
  t.deepEqual(await sliverPids('example_web'), pids, 'the initscript\'s processes are still running');
});

serial('a start after the stop, with the slivers\' processes still in the unit\'s subtree, comes up', async (t) => {
  await g().must('systemctl start nodemgr.service', 5 * 60_000);
  t.is(await unit('ActiveState'), 'active');
  await converged();
});

serial('journalctl -u nodemgr shows the daemon\'s lines with their priorities', async (t) => {
  const lines = (await g().must('journalctl -u nodemgr.service -o json --output-fields=MESSAGE,PRIORITY,SYSLOG_IDENTIFIER,_PID'))
    .split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, string>);
  const daemon = lines.filter((l) => l.SYSLOG_IDENTIFIER === 'nodemgr');
  t.true(daemon.length > 0, 'lines under the identifier nodemgr');
  t.true(daemon.some((l) => l.PRIORITY === '6' && /syncing now/.test(l.MESSAGE ?? '')), 'info lines at priority 6');
  t.false(daemon.some((l) => /^<\d>/.test(l.MESSAGE ?? '')), 'no priority prefix left in a message');
  t.false(daemon.some((l) => /^\d{4}-\d\d-\d\dT/.test(l.MESSAGE ?? '')), 'no time of the daemon\'s own');
  const warnings = await g().must('journalctl -u nodemgr.service -p warning -o cat');
  const info = await g().must('journalctl -u nodemgr.service -p info -o cat');
  t.true(info.split('\n').length > warnings.split('\n').length, '-p warning shows fewer lines than -p info');
  t.notRegex(warnings, /syncing now/, 'an info line is not among the warnings');
});
