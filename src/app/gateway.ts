// The ssh gateway's wiring, when configured: slivers' shells (an account's login, or a guest's
// console or namespaces) and delegates' API requests.
import { answerCall, type ApiServerOptions } from '../api/server.js';
import type { Config } from '../config/config.js';
import type { DatabaseStore } from '../db/store.js';
import type { Enforcer } from '../limits/enforcer.js';
import type { Logger } from '../log.js';
import type { LibvirtRuntime } from '../runtimes/libvirt/runtime.js';
import type { AccountRuntime } from '../runtimes/types.js';
import type { UnixRuntime } from '../runtimes/unix/runtime.js';
import { startSshGateway, type Gateway } from '../ssh/gateway.js';
import { loadOrCreateHostKey } from '../ssh/host-key.js';
import type { GatewayObserver } from '../ssh/observer.js';

export interface GatewayParts {
  readonly store: DatabaseStore;
  readonly runtime: AccountRuntime;
  readonly unix: UnixRuntime;
  readonly guests: LibvirtRuntime;
  readonly enforcer: Enforcer;
  readonly call: ApiServerOptions['call'];
  readonly logger: Logger;
  readonly observer: GatewayObserver;
}

/** The gateway, or null when ssh_port is 0. */
export async function startGateway(config: Config, parts: GatewayParts): Promise<Gateway | null> {
  if (config.sshPort === 0) return null;
  const { store, runtime, unix, guests, enforcer, call, logger, observer } = parts;
  const hostKey = await loadOrCreateHostKey(config.stateDir);
  if (hostKey.created) logger.info('ssh host key made', { file: hostKey.path, fingerprint: hostKey.fingerprint });
  return startSshGateway({
    host: config.sshAddress,
    port: config.sshPort,
    hostKey: hostKey.privateKey,
    maxSessions: config.sshMaxSessions,
    maxSessionsPerAccount: config.sshMaxSessionsPerAccount,
    idleTimeoutMs: config.sshIdleTimeoutMs,
    maxAuthAttempts: config.sshMaxAuthAttempts,
    loginGraceMs: config.sshLoginGraceMs,
    maxStartups: config.sshMaxStartups,
    maxRequestBytes: config.apiMaxRequestBytes,
    database: () => store.data,
    sliverAccount: (name) => unix.loginAccount(name),
    delegateUid: async (name) =>
      (await runtime.observe({ readOnly: true })).owned.find((a) => a.name === name && a.kind === 'delegate')?.uid ?? null,
    cgroupFiles: (name) => enforcer.launchFiles(name),
    guestSession: (name, command, terminal) => guests.sessionFor(name, command, terminal).catch(() => null),
    callApi: (caller, body) => answerCall(body, caller, call, logger),
    logger,
    observer,
  });
}
