// nodemgr's own limit on a guest interface, for kernels where libvirt's cannot work (libvirt needs
// the sfq queueing discipline and the police action): HTB on the host side of the interface (what
// goes to the guest), and HTB on an ifb device that the interface's ingress is redirected to (what
// the guest sends). Each guest interface has its own devices, so nothing else is touched.
import { runCommand } from '../../host/exec.js';

const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const run = (file: string, args: string[]) => runCommand(file, args, { env: TOOL_ENV, timeoutMs: 30_000 });
const quietly = (file: string, args: string[]) => run(file, args).then(() => undefined, () => undefined);

/** The ifb device that carries what the guest sends on `tap` (both 15 characters at most). */
export function ifbOf(tap: string): string {
  return `nmi${tap.slice(3)}`;
}

/** Limits both directions of `tap` to `kbit`; null removes nodemgr's limit. Idempotent. */
export async function shapeGuestInterface(tap: string, kbit: number | null): Promise<void> {
  if (kbit === null) {
    await unshapeGuestInterface(tap);
    return;
  }
  const rate = `${kbit}kbit`;
  const ifb = ifbOf(tap);
  const htb = async (dev: string) => {
    // The kernel refuses to "change" an HTB root in place: it is made once, its class changed after.
    const { stdout } = await run('tc', ['qdisc', 'show', 'dev', dev, 'root']);
    if (!/^qdisc htb 1: root/m.test(stdout)) await run('tc', ['qdisc', 'replace', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '1']);
    await run('tc', ['class', 'replace', 'dev', dev, 'parent', '1:', 'classid', '1:1', 'htb', 'rate', rate, 'ceil', rate]);
  };
  await htb(tap);
  await quietly('ip', ['link', 'add', ifb, 'type', 'ifb']); // there already after a re-apply
  await run('ip', ['link', 'set', ifb, 'up']);
  await htb(ifb);
  // The ingress filter is made again rather than added to: a second one would double the redirect.
  await quietly('tc', ['qdisc', 'del', 'dev', tap, 'ingress']);
  await run('tc', ['qdisc', 'add', 'dev', tap, 'handle', 'ffff:', 'ingress']);
  await run('tc', ['filter', 'add', 'dev', tap, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0',
    'action', 'mirred', 'egress', 'redirect', 'dev', ifb]);
}

/** Removes nodemgr's limit of `tap` and its ifb device; what is already gone is no error. */
export async function unshapeGuestInterface(tap: string): Promise<void> {
  await quietly('tc', ['qdisc', 'del', 'dev', tap, 'ingress']);
  await quietly('tc', ['qdisc', 'del', 'dev', tap, 'root']);
  await quietly('ip', ['link', 'del', ifbOf(tap)]);
}

/** The ifb devices named as nodemgr names them (whichever daemon made them). */
export async function leftIfbDevices(): Promise<string[]> {
  const { stdout } = await run('ip', ['-o', 'link', 'show', 'type', 'ifb']).catch(() => ({ stdout: '' }));
  return [...stdout.matchAll(/^\d+: (nmi[0-9a-f]+\d*)[:@]/gm)].map((m) => m[1]!);
}

/** The rate of an HTB class 1:1 as tc shows it, in kbit/s; null when there is none. */
export function htbRateKbit(tcClassShow: string): number | null {
  const m = /class htb 1:1 .*?\brate (\d+(?:\.\d+)?)([KMG]?)bit/.exec(tcClassShow);
  if (!m) return null;
  const scale = { '': 1 / 1000, K: 1, M: 1000, G: 1_000_000 }[m[2] as '' | 'K' | 'M' | 'G'];
  return Math.round(Number(m[1]) * scale);
}

/** The limits nodemgr keeps on `tap`, read back from the kernel: to and from the guest, kbit/s. */
export async function readGuestShaping(tap: string): Promise<{ toGuestKbit: number | null; fromGuestKbit: number | null }> {
  const show = (dev: string) => run('tc', ['class', 'show', 'dev', dev]).then((r) => htbRateKbit(r.stdout), () => null);
  return { toGuestKbit: await show(tap), fromGuestKbit: await show(ifbOf(tap)) };
}
