// LXC containers. A guest's root is an overlayfs mount of its own over its image, a root file
// system archive unpacked once per archive (lxc-root.ts). Its init says it is ready by writing a
// file into that root: an LXC console drops what was printed before someone attached. It is
// powered off at once, as its init may ignore a request to shut down. A login runs a shell in its
// namespaces.
import { PermanentError } from '../../../util/errors.js';
import { commonDomainPlan, type GuestDomainInput } from '../domain-plan.js';
import type { LxcDomainPlan } from '../domain-xml.js';
import type { DriverContext, GuestDriver } from '../guest-driver.js';
import { agentDir } from '../guest-agent.js';
import { createLxcAgent } from '../lxc-agent.js';
import { createLxcRoots, LXC_READY_FILE, LXC_ROOTS_DIR, lxcRootPaths } from '../lxc-root.js';

/** The container's first process, inside its root. */
const LXC_INIT = '/sbin/init';

/** A container's domain: its mounted root and its init. Pure. */
export function lxcDomainPlan(input: GuestDomainInput): LxcDomainPlan {
  return { ...commonDomainPlan(input), driver: 'lxc', init: LXC_INIT, rootDir: lxcRootPaths(input.files).merged };
}

export function createLxcDriver(context: DriverContext): GuestDriver {
  const roots = createLxcRoots(context.guestDir, context.logger);
  return {
    kind: 'lxc',
    article: 'an',
    capabilities: { image: 'root-archive', kernelBoot: false, gracefulShutdown: false, liveCpu: true, liveBandwidth: true },
    hypervisor: context.hypervisor,
    sharedDir: LXC_ROOTS_DIR,
    domainPlan: lxcDomainPlan,

    async prepareRoot(files, image) {
      // The lifecycle refuses such a definition before; this is the last guard before a mount.
      if (image === null) throw new PermanentError('an lxc guest needs a root file system image');
      await roots.prepare(files, image.path);
    },
    // Mounted while the container may run; unmounted once it is off, so that nothing is left
    // mounted under a directory that is removed.
    releaseRoot: (files) => roots.unmount(files),
    collectShared: () => roots.collect(),

    async prepareBoot(files, marker) {
      await roots.mount(files);
      await roots.clearReady(files);
      return {
        who: 'container',
        where: `in ${LXC_READY_FILE}`,
        whenStopped: `its init ${LXC_INIT} exited`,
        wait: (options) => roots.waitForReady(files, marker, options),
      };
    },

    // A container has no vCPUs: vcpu_* are its one group's period and quota. Only a cap that is
    // asked for is set live; the definition, which the next boot takes, has no cap without one.
    schedulerArgs: (shape) => [
      `cpu_shares=${shape.cpuShares}`,
      ...(shape.cpuQuotaUs === null ? [] : [`vcpu_period=${shape.cpuPeriodUs}`, `vcpu_quota=${shape.cpuQuotaUs}`]),
    ],
    overlayPath: (files) => lxcRootPaths(files).merged,

    session(name, command) {
      const shell = command === null ? ['/bin/sh', '-l'] : ['/bin/sh', '-c', command];
      return { file: 'virsh', args: ['-q', '-c', context.hypervisor.uri, 'lxc-enter-namespace', name, '--noseclabel', ...shell], cwd: '/' };
    },
    // nodemgr itself, entering the container's namespaces; every container has it.
    agent: (name, files) => createLxcAgent(name, { root: lxcRootPaths(files).merged, recordsDir: agentDir(files.dir) }),
  };
}
