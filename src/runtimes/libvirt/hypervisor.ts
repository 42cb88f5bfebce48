// The thin adapter over libvirt: one connection per URI through the N-API binding, opened on
// first use and again after a failure. Only what the runtime needs; everything returns plain data.
import type { Logger } from '../../log.js';
import { describeError } from '../../util/errors.js';

/** A domain as libvirt holds it. */
export interface DomainSummary {
  readonly name: string;
  readonly active: boolean;
  /** The live definition of a running domain, the persistent one otherwise. */
  readonly xml: string;
}

export interface Hypervisor {
  readonly uri: string;
  /** Every domain of the connection (nodemgr's and others'). */
  list(): Promise<DomainSummary[]>;
  /** The domain, or null when there is none of that name. */
  find(name: string): Promise<DomainSummary | null>;
  /** The persistent definition (what the next start boots), or null. */
  definition(name: string): Promise<string | null>;
  /** Defines the domain, or replaces the persistent definition of the one with its name and uuid. */
  define(xml: string): Promise<void>;
  start(name: string): Promise<void>;
  /** Asks a running guest to shut down (ACPI power button); one that is not running is left as it is. */
  shutdown(name: string): Promise<void>;
  /** Powers the domain off at once; a domain that is not running is left as it is. */
  powerOff(name: string): Promise<void>;
  /** Removes the definition; a domain that is not defined is no error. */
  undefine(name: string): Promise<void>;
  close(): Promise<void>;
}

const XML_INACTIVE = 2; // VIR_DOMAIN_XML_INACTIVE
const STATE_RUNNING = 1;
const STATE_PAUSED = 3;
const STATE_BLOCKED = 2;

type Binding = typeof import('@unraid/libvirt');
type NativeHypervisor = InstanceType<Binding['Hypervisor']>;
type NativeDomain = Parameters<NativeHypervisor['domainGetName']>[0];

let binding: Promise<Binding> | null = null;

/** The binding, imported once; an optional dependency, so its absence is a clear error here. */
function loadBinding(): Promise<Binding> {
  binding ??= import('@unraid/libvirt').catch((error: unknown) => {
    binding = null;
    throw new Error(
      `the libvirt binding (@unraid/libvirt) is not available: ${describeError(error).split('\n')[0]}; ` +
        'it is built by native/build.sh as root (it needs the libvirt-dev and pkg-config packages)',
    );
  });
  return binding;
}

// The binding does not pass libvirt's error numbers on (its code is -1), so "no such domain"
// (VIR_ERR_NO_DOMAIN) is recognised by libvirt's message.
function isNoDomain(error: unknown): boolean {
  return /domain not found|no domain with matching/i.test(describeError(error) ?? '');
}

export function libvirtHypervisor(uri: string, logger: Logger): Hypervisor {
  let connection: Promise<NativeHypervisor> | null = null;

  const connect = (): Promise<NativeHypervisor> => {
    connection ??= (async () => {
      const { Hypervisor } = await loadBinding();
      const h = new Hypervisor({ uri });
      await h.connectOpen();
      logger.debug('libvirt connected', { uri });
      return h;
    })().catch((error: unknown) => {
      connection = null;
      throw new Error(`cannot connect to libvirt at ${uri}: ${describeError(error)}`);
    });
    return connection;
  };

  /** Runs `task` on the connection; a failure that is not about the domain drops the connection. */
  const withConnection = async <T>(what: string, task: (h: NativeHypervisor) => Promise<T>): Promise<T> => {
    const h = await connect();
    try {
      return await task(h);
    } catch (error) {
      // A broken connection is opened again on the next call; a refused request leaves it be.
      if (!(await h.connectGetHostname().then(() => true, () => false))) connection = null;
      throw new Error(`libvirt ${what} (${uri}) failed: ${describeError(error)}`);
    }
  };

  const lookup = async (h: NativeHypervisor, name: string) => {
    try {
      return await h.domainLookupByName(name);
    } catch (error) {
      if (isNoDomain(error)) return null;
      throw error;
    }
  };

  const summary = async (h: NativeHypervisor, domain: NativeDomain): Promise<DomainSummary> => {
    const [name, info] = await Promise.all([h.domainGetName(domain), h.domainGetInfo(domain)]);
    const active = info.state === STATE_RUNNING || info.state === STATE_BLOCKED || info.state === STATE_PAUSED;
    return { name, active, xml: await h.domainGetXMLDesc(domain) };
  };

  return {
    uri,
    list: () => withConnection('list', async (h) => {
      const domains = await h.connectListAllDomains();
      // A domain undefined between the listing and the look at it (a destroy running beside the
      // listing) is simply gone: it must not make the whole connection look unreachable.
      const summaries = await Promise.all(domains.map((d) => summary(h, d).catch((error: unknown) => {
        if (isNoDomain(error)) return null;
        throw error;
      })));
      return summaries.filter((d): d is DomainSummary => d !== null);
    }),
    find: (name) => withConnection(`lookup of ${name}`, async (h) => {
      const domain = await lookup(h, name);
      return domain === null ? null : summary(h, domain);
    }),
    definition: (name) => withConnection(`definition of ${name}`, async (h) => {
      const domain = await lookup(h, name);
      return domain === null ? null : h.domainGetXMLDesc(domain, XML_INACTIVE);
    }),
    define: (xml) => withConnection('define', async (h) => {
      await h.domainDefineXML(xml);
    }),
    start: (name) => withConnection(`start of ${name}`, async (h) => {
      const domain = await lookup(h, name);
      if (domain === null) throw new Error(`no domain named ${name}`);
      await h.domainCreate(domain);
    }),
    shutdown: (name) => withConnection(`shutdown of ${name}`, async (h) => {
      const domain = await lookup(h, name);
      if (domain === null) return;
      const { state } = await h.domainGetInfo(domain);
      if (state === STATE_RUNNING || state === STATE_BLOCKED) await h.domainShutdown(domain);
    }),
    powerOff: (name) => withConnection(`power-off of ${name}`, async (h) => {
      const domain = await lookup(h, name);
      if (domain === null) return;
      const { state } = await h.domainGetInfo(domain);
      if (state === STATE_RUNNING || state === STATE_BLOCKED || state === STATE_PAUSED) await h.domainDestroy(domain);
    }),
    undefine: (name) => withConnection(`undefine of ${name}`, async (h) => {
      const domain = await lookup(h, name);
      if (domain !== null) await h.domainUndefine(domain);
    }),
    async close() {
      const open = connection;
      connection = null;
      if (open) await (await open.catch(() => null))?.connectClose().catch(() => undefined);
    },
  };
}
