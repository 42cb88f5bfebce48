// The virtual clusters made from the configuration: their own guest lifecycle (files under vc_dir,
// the address pool's leases of `vc.` guests), the private networks, the repository with its images
// in the node's image cache, and injection into the nodes' overlays.
import { availableParallelism, totalmem } from 'node:os';
import { join } from 'node:path';
import type { AddressBook } from '../addresses/address-book.js';
import { clusterUses, createClusterEngine, type ClusterEngine } from '../clusters/engine.js';
import type { ClusterBook, ClusterContext, ClusterRepository, PreparedImage } from '../clusters/cluster-context.js';
import { injectIntoOverlay } from '../clusters/inject.js';
import { configuredRepository, listRepository, loadDescription } from '../clusters/repository.js';
import { fetchImage } from '../clusters/vc-images.js';
import { describeSubnet, subnetFromNetmask } from '../clusters/subnet.js';
import type { Config } from '../config/config.js';
import { recordSection } from '../db/record-section.js';
import type { DatabaseStore } from '../db/store.js';
import type { ClusterRecord, NodeDatabase } from '../db/types.js';
import type { ImageCache } from '../images/cache.js';
import type { Logger } from '../log.js';
import { guestFiles } from '../runtimes/libvirt/guest-files.js';
import type { GuestLifecycle } from '../runtimes/libvirt/guests.js';
import { createOnDemandGuests } from './factories.js';
import { privateNetworks } from '../runtimes/libvirt/private-networks.js';
import { budgetView, type BudgetUse } from '../tasks/budget.js';

/** A guest of a virtual cluster: `vc.<cluster>.<node>` (a dot, as no account name has). */
export const isClusterGuest = (name: string) => name.startsWith('vc.');

export function clusterBook(store: DatabaseStore): ClusterBook {
  return recordSection(store, 'clusters', (cluster) => cluster.name);
}

/** The cache entries the clusters boot from (the cache keeps them). */
export function clusterImagesInUse(db: NodeDatabase): string[] {
  return Object.values(db.clusters).map((c) => c.base_image);
}

export function createClusterGuests(config: Config, images: ImageCache, addresses: AddressBook, logger: Logger): GuestLifecycle {
  return createOnDemandGuests(config, logger, {
    guestDir: join(config.vcDir, 'guests'), readyTimeoutMs: config.guestReadyTimeoutMs, images, addresses, owns: isClusterGuest, now: () => new Date(),
  });
}

function repositoryOf(config: Config, images: ImageCache, logger: Logger): ClusterRepository {
  const place = configuredRepository(config);
  const options = { workDir: join(config.vcDir, 'fetching'), maxBytes: config.imageCacheMaxBytes, logger };
  return {
    list: async () => (await listRepository(place)).map((e) => ({ name: e.name, description: e.path })),
    async prepare(image): Promise<PreparedImage> {
      const loaded = await loadDescription(place, image);
      const { frontend, compute, bootDependency, networks } = loaded.description;
      const frontendDisk = (await fetchImage(images, loaded, 'frontend', options)).name;
      const computeDisk = compute === null ? null : (await fetchImage(images, loaded, 'compute', options)).name;
      const direct = async (path: string | null, type: 'kernel' | 'initrd') =>
        path === null ? null : (await images.add({ uri: new URL(path, loaded.url).href, type, description: `virtual cluster ${image} ${type}` })).name;
      const privateNetwork = networks.find((n) => n.name === 'private');
      return {
        frontendDisk, computeDisk, kernel: await direct(frontend.kernel, 'kernel'), initrd: await direct(frontend.initrd, 'initrd'),
        frontendMemoryKiB: frontend.memoryKiB, computeMemoryKiB: compute?.memoryKiB ?? null, frontendVcpus: frontend.vcpus,
        wait: bootDependency?.wait ?? null,
        privateSubnet: privateNetwork?.subnet && privateNetwork.netmask ? describeSubnet(subnetFromNetmask(privateNetwork.subnet, privateNetwork.netmask, 'private network')) : null,
        privateMtu: privateNetwork?.mtu ?? null,
      };
    },
  };
}

export interface ClusterParts {
  readonly store: DatabaseStore;
  readonly images: ImageCache;
  readonly addresses: AddressBook;
  /** What slivers, tasks and instances hold of the capacity budget. */
  readonly otherUses: () => readonly BudgetUse[];
  readonly logger: Logger;
  readonly now: () => Date;
}

export function createClusters(config: Config, parts: ClusterParts, guests: GuestLifecycle): ClusterEngine {
  const { store, images, addresses, logger, now } = parts;
  const book = clusterBook(store);
  const ctx: ClusterContext = {
    book,
    guests: { ...guests, overlayOf: (name) => guestFiles(join(config.vcDir, 'guests'), name).overlay },
    networks: privateNetworks(config.libvirtQemuUri),
    addresses,
    repository: repositoryOf(config, images, logger),
    inject: async (overlay, files, renames) => {
      await injectIntoOverlay(overlay, files, renames);
    },
    free: () => budgetView({ vcpus: availableParallelism(), memoryBytes: totalmem() }, { cpu: config.cpuOvercommit, memory: config.memOvercommit },
      [...parts.otherUses(), ...clusterUses(book.all())]).free,
    macsInUse: () => [
      ...Object.keys(store.data.addresses),
      ...book.all().flatMap((c: ClusterRecord) => c.nodes.map((n) => n.private_mac)),
    ],
    settings: {
      maxComputeCpus: config.vcMaxComputeCpus, privateSubnet: config.vcPrivateSubnet, privateMtu: 1500, renames: config.vcRenames,
      publicGateway: config.vcPublicGateway, dnsServers: config.vcDnsServers, domain: config.vcDomain, readyTimeoutMs: config.guestReadyTimeoutMs,
    },
    logger,
    now,
  };
  return createClusterEngine(ctx);
}
