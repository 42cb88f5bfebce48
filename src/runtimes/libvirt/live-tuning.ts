// Changes to a running guest that need no new boot: its CPU weight and cap, and its interfaces'
// bandwidth. The binding has no call for them, so virsh does it, with argument arrays.
import { runCommand } from '../../host/exec.js';
import type { GuestShape } from './shape.js';
import { describeError } from '../../util/errors.js';

/** libvirt's "no quota" for a CFS quota. */
export const NO_QUOTA = -1;

/** Gives a running guest new CPU settings (a driver's schedulerArgs). */
export async function setLiveCpu(uri: string, name: string, schedulerArgs: readonly string[]): Promise<void> {
  await runCommand('virsh', ['-q', '-c', uri, 'schedinfo', name, '--live', ...schedulerArgs.flatMap((a) => ['--set', a])]);
}

/** Gives the interfaces `taps` of a running guest the shape's rate. */
export async function setLiveBandwidth(uri: string, name: string, shape: GuestShape, taps: readonly string[]): Promise<void> {
  // 0 removes a limit.
  const average = String(shape.bandwidth?.averageKBps ?? 0);
  for (const tap of taps) {
    await runCommand('virsh', ['-q', '-c', uri, 'domiftune', name, tap, '--live', '--inbound', average, '--outbound', average]);
  }
}

/**
 * Why libvirt cannot limit a guest interface's bandwidth on this kernel, or null when it can.
 * libvirt shapes what goes to the guest with HTB and SFQ and polices what comes from it, so both
 * are tried once, in a network namespace of the probe's own (nothing of the host's is touched).
 */
export async function guestBandwidthProblem(): Promise<string | null> {
  const ns = `nmprobe${process.pid}`;
  const inNs = (...args: string[]) => runCommand('ip', ['netns', 'exec', ns, ...args], { timeoutMs: 10_000 });
  try {
    await runCommand('ip', ['netns', 'add', ns], { timeoutMs: 10_000 });
  } catch (error) {
    return `cannot probe the kernel's traffic control: ${describeError(error)}`;
  }
  try {
    await inNs('tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '1');
    await inNs('tc', 'class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:1', 'htb', 'rate', '1mbit');
    const missing: string[] = [];
    await inNs('tc', 'qdisc', 'add', 'dev', 'lo', 'parent', '1:1', 'handle', '2:', 'sfq', 'perturb', '10').catch(() => missing.push('the sfq qdisc'));
    await inNs('tc', 'qdisc', 'add', 'dev', 'lo', 'ingress');
    await inNs('tc', 'filter', 'add', 'dev', 'lo', 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0',
      'police', 'rate', '1mbit', 'burst', '10k', 'drop', 'flowid', ':1').catch(() => missing.push('the police action'));
    return missing.length === 0 ? null : `the kernel lacks ${missing.join(' and ')}, which libvirt uses to limit a guest's interface`;
  } catch (error) {
    return `the kernel's traffic control cannot shape: ${describeError(error)}`;
  } finally {
    await runCommand('ip', ['netns', 'del', ns], { timeoutMs: 10_000 }).catch(() => undefined);
  }
}
