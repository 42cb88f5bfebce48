// What differs between kinds of guest, behind one interface: how a guest's root is made over its
// image, how its domain is written, how it is booted and heard to be ready, and how one logs into
// it. Each driver also declares what its guests can do. Nomad's task drivers declare their
// Capabilities() in the same way. The lifecycle (guests.ts) asks these capabilities and never tests
// a kind's name, so a new kind is a new driver file (drivers/) and its line in drivers/index.ts.
import type { Logger } from '../../log.js';
import type { SessionLaunch } from '../../host/launch.js';
import type { GuestDomainInput } from './domain-plan.js';
import type { DomainDetails, DomainPlan } from './domain-xml.js';
import type { GuestAgent } from './guest-agent.js';
import type { GuestBoot, GuestKind, ResolvedImage } from './guest-definition.js';
import type { GuestFiles } from './guest-files.js';
import type { Hypervisor } from './hypervisor.js';
import type { GuestShape } from './shape.js';

export interface GuestCapabilities {
  /**
   * What the guest's image is: a disk image, under a copy-on-write overlay of the guest's own
   * (cache type image), or a tar archive of a root file system (cache type data).
   */
  readonly image: 'disk' | 'root-archive';
  /** Boots a kernel (and initrd) directly, so that a kernel can stand in for the image. */
  readonly kernelBoot: boolean;
  /** Honours a request to shut down (an ACPI power button), so Stop asks before it powers off. */
  readonly gracefulShutdown: boolean;
  /** Takes a new CPU weight and cap while it runs (virsh schedinfo --live). */
  readonly liveCpu: boolean;
  /** Takes a new interface rate while it runs (virsh domiftune --live). */
  readonly liveBandwidth: boolean;
}

/** How a booting guest is heard to be ready, and how messages name what was awaited. */
export interface ReadyWatch {
  /** True once the guest wrote the marker; false when `timeoutMs` passed or `gone()` said it stopped. */
  wait(options: { timeoutMs: number; gone: () => Promise<boolean> }): Promise<boolean>;
  /** Who reports: "guest", "container". */
  readonly who: string;
  /** Where the marker is looked for: "on its serial console". */
  readonly where: string;
  /** What to say of a guest that stopped before it was ready. */
  readonly whenStopped: string;
}

export interface GuestDriver {
  readonly kind: GuestKind;
  /** "a" or "an", as messages name one guest of the kind ("an lxc sliver"). */
  readonly article: 'a' | 'an';
  readonly capabilities: GuestCapabilities;
  readonly hypervisor: Hypervisor;
  /** A directory under guest_dir that the kind keeps for what its guests share (never a guest's name), or null. */
  readonly sharedDir: string | null;
  /** The domain's definition for libvirt. Pure. */
  domainPlan(input: GuestDomainInput): DomainPlan;
  /**
   * Gives the guest a fresh root over its image (`disk` of the resolved boot), at its creation and
   * for every new boot: what an earlier root held is gone.
   */
  prepareRoot(files: GuestFiles, image: ResolvedImage | null): Promise<void>;
  /** Lets go of what the root of a guest that is off still holds on the host (before a boot, its removal). */
  releaseRoot(files: GuestFiles): Promise<void>;
  /** Removes what the kind shares between its guests and none of them uses any more. */
  collectShared(): Promise<void>;
  /** Readies a defined, stopped guest to be started; the watch hears its word that it is ready. */
  prepareBoot(files: GuestFiles, marker: string): Promise<ReadyWatch>;
  /** The CPU settings `virsh schedinfo --live` takes for the shape (with capabilities.liveCpu). */
  schedulerArgs(shape: GuestShape): string[];
  /** The guest's copy-on-write root as the host sees it, for its status. */
  overlayPath(files: GuestFiles, details: DomainDetails): string | null;
  /** What an ssh login into the guest runs on the host, or why it cannot log in so. */
  session(name: string, command: string | null, terminal: boolean): SessionLaunch | { refused: string };
  /** The guest's in-guest agent (guest-agent.ts); it answers while the guest runs (a machine's: once its qemu-ga does). */
  agent(name: string, files: GuestFiles): GuestAgent;
}

/** How a definition's problems name the guest: "guest", or "sliver" with the slice attribute that names its image. */
export interface GuestWords {
  readonly guest: string;
  readonly imageField: string | null;
}

const IMAGE_WORDS: Readonly<Record<GuestCapabilities['image'], string>> = {
  disk: 'a disk image',
  'root-archive': 'a root file system image',
};

/** Why a guest of the driver's kind cannot boot what `boot` gives, or null. Pure. */
export function bootProblem(boot: GuestBoot, driver: Pick<GuestDriver, 'kind' | 'article' | 'capabilities'>, words: GuestWords): string | null {
  const { image: takes, kernelBoot } = driver.capabilities;
  if (boot.image === null && !(kernelBoot && boot.kernel !== null)) {
    const field = words.imageField === null ? '' : ` (${words.imageField})`;
    return `${driver.article} ${driver.kind} ${words.guest} needs ${IMAGE_WORDS[takes]}${field}${kernelBoot ? ' or a kernel to boot' : ''}`;
  }
  if (boot.initrd !== null && boot.kernel === null) return 'an initrd is given without a kernel';
  return null;
}

/** The cache type of a guest's image. */
export function imageType(capabilities: GuestCapabilities): 'image' | 'data' {
  return capabilities.image === 'disk' ? 'image' : 'data';
}

/** What a driver is made with. */
export interface DriverContext {
  /** The connection to the kind's libvirt driver. */
  readonly hypervisor: Hypervisor;
  readonly guestDir: string;
  /** How QEMU runs virtual machines; auto: KVM where the host has /dev/kvm. */
  readonly accel: 'auto' | 'kvm' | 'qemu';
  readonly logger: Logger;
}
