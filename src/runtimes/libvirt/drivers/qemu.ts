// QEMU virtual machines. A guest's disk is a qcow2 overlay of its own over the cached image (none
// for a kernel booted alone). A guest says it is ready with a line on its serial console, which
// virtlogd writes to a log file the host reads. Stop first asks it to shut down (ACPI). A login
// reaches its serial console, the one way into a machine whatever it runs.
import { existsSync } from 'node:fs';
import { commonDomainPlan, kernelCmdline, type GuestDomainInput } from '../domain-plan.js';
import type { QemuDomainPlan } from '../domain-xml.js';
import type { DriverContext, GuestDriver } from '../guest-driver.js';
import { consoleLogSize, makeOverlay, waitForReady } from '../guest-files.js';
import { agentDir } from '../guest-agent.js';
import { NO_QUOTA } from '../live-tuning.js';
import { createQemuAgent } from '../qemu-agent.js';

/** A virtual machine's domain: its overlay as first disk, direct kernel boot, its serial console logged, VNC. Pure. */
export function qemuDomainPlan(input: GuestDomainInput, accel: 'kvm' | 'qemu'): QemuDomainPlan {
  const { files, resolved } = input;
  return {
    ...commonDomainPlan(input),
    driver: 'qemu',
    accel,
    disks: [
      ...(resolved.disk === null ? [] : [{ path: files.overlay, format: 'qcow2' as const }]),
      ...(input.extras?.disks ?? []).map((d) => ({ path: d.path, format: 'raw' as const, readOnly: d.readOnly, serial: d.serial })),
    ],
    boot: resolved.kernel === null
      ? null
      : { kernel: resolved.kernel.path, initrd: resolved.initrd?.path ?? null, cmdline: kernelCmdline(input.name, input.leases, input.extras?.kernelArgs, input.extras?.networks?.length ?? 0) },
    consoleLog: files.consoleLog,
    vnc: true,
    ...(input.extras?.agent === true ? { agentChannel: true } : {}),
  };
}

export function createQemuDriver(context: DriverContext): GuestDriver {
  const accel = context.accel === 'auto' ? (existsSync('/dev/kvm') ? 'kvm' : 'qemu') : context.accel;
  return {
    kind: 'qemu',
    article: 'a',
    capabilities: { image: 'disk', kernelBoot: true, gracefulShutdown: true, liveCpu: true, liveBandwidth: true },
    hypervisor: context.hypervisor,
    sharedDir: null,
    domainPlan: (input) => qemuDomainPlan(input, accel),

    async prepareRoot(files, image) {
      if (image !== null) await makeOverlay(files, image);
    },
    // A machine that is off holds nothing on the host, and its bases are the image cache's.
    releaseRoot: async () => undefined,
    collectShared: async () => undefined,

    async prepareBoot(files, marker) {
      // The log is rewritten by each start, or grows: only what this boot writes counts.
      const from = await consoleLogSize(files);
      return {
        who: 'guest',
        where: 'on its serial console',
        whenStopped: `see ${files.consoleLog}`,
        wait: (options) => waitForReady(files, marker, { from, ...options }),
      };
    },

    // The cap is of the whole machine (global_*), not of each vCPU; NO_QUOTA lifts one.
    schedulerArgs: (shape) => [
      `cpu_shares=${shape.cpuShares}`, `global_period=${shape.cpuPeriodUs}`, `global_quota=${shape.cpuQuotaUs ?? NO_QUOTA}`,
    ],
    overlayPath: (_files, details) => details.disks[0]?.source ?? null,

    session(name, command, terminal) {
      if (command !== null) {
        return { refused: `${name} is a virtual machine: the gateway reaches its serial console only; log in without a command (and with a terminal) to use it` };
      }
      if (!terminal) return { refused: `${name} is a virtual machine: its serial console needs a terminal (ssh -t)` };
      // --force takes the console over from an earlier session that was left open.
      return { file: 'virsh', args: ['-q', '-c', context.hypervisor.uri, 'console', '--force', name], cwd: '/' };
    },
    // QEMU's guest agent in the image, on the channel a definition with `agent` gives the domain.
    agent: (name, files) => createQemuAgent(context.hypervisor.uri, name, agentDir(files.dir)),
  };
}
