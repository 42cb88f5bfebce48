// Changes to a running guest that need no new boot: its CPU weight and cap, and its interfaces'
// bandwidth. The binding has no call for them, so virsh does it, with argument arrays.
import { runCommand } from '../unix/command.js';
import type { GuestShape } from './shape.js';

/** libvirt's "no quota" for a CFS quota. */
const NO_QUOTA = -1;

export function schedulerArgs(shape: GuestShape, driver: 'qemu' | 'lxc'): string[] {
  const args = [`cpu_shares=${shape.cpuShares}`];
  // qemu caps the whole guest with global_*; an lxc container is one group, with plain period/quota.
  const [period, quota] = driver === 'qemu' ? ['global_period', 'global_quota'] : ['vcpu_period', 'vcpu_quota'];
  if (driver === 'qemu' || shape.cpuQuotaUs !== null) {
    args.push(`${period}=${shape.cpuPeriodUs}`, `${quota}=${shape.cpuQuotaUs ?? NO_QUOTA}`);
  }
  return args;
}

export async function applyLiveTuning(uri: string, name: string, driver: 'qemu' | 'lxc', shape: GuestShape, taps: readonly string[]): Promise<void> {
  await runCommand('virsh', ['-q', '-c', uri, 'schedinfo', name, '--live', ...schedulerArgs(shape, driver).flatMap((a) => ['--set', a])]);
  // 0 removes a limit.
  const average = String(shape.bandwidth?.averageKBps ?? 0);
  for (const tap of taps) {
    await runCommand('virsh', ['-q', '-c', uri, 'domiftune', name, tap, '--live', '--inbound', average, '--outbound', average]);
  }
}
