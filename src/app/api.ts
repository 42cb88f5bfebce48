// The API's wiring: the methods over the node's parts, the transports (127.0.0.1, the Unix socket
// and, when configured, TLS) with who the caller is, and the delegates' login shell that forwards to it.
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { allowedUsersFile, type AllowedUsers } from '../api/allowed-users.js';
import { createAnswerCache, type AnswerCache } from '../api/answer-cache.js';
import type { Supervisors } from '../accounts/supervisor.js';
import { callerOf, tlsCaller, type Caller } from '../api/identity.js';
import { tcpClientUidLookup } from '../api/tcp-client-uid.js';
import { createApiMethods, type ApiMethods } from '../api/methods.js';
import { startApiServer, type ApiServer, type ApiServerOptions, type TlsListenerOptions, type Transport } from '../api/server.js';
import { loadCertificate, verifyDetachedSignature, verifyTicket } from '../api/signatures.js';
import { loadTlsCredentials } from '../api/tls-credentials.js';
import type { Config } from '../config/config.js';
import type { RecordWriter } from '../db/record-writer.js';
import type { DatabaseStore } from '../db/store.js';
import type { ImageCache } from '../images/cache.js';
import type { TaskEngine } from '../tasks/engine.js';
import type { ClusterEngine } from '../clusters/engine.js';
import type { Logger } from '../log.js';
import { measuredCall } from '../metrics/instrument.js';
import type { NodeMetrics } from '../metrics/registry.js';
import { forwardApiCallsPath, peerCredentials, tcpSocketOwner } from '../native/peercred.js';
import type { LibvirtRuntime } from '../runtimes/libvirt/runtime.js';
import type { AccountRuntime } from '../runtimes/types.js';
import { installDelegateShell } from '../runtimes/unix/delegate-shell.js';
import type { Converger } from '../sync/converge.js';
import type { DocumentSync } from '../sync/document.js';
import { describeError } from '../util/errors.js';
import { sharedRead } from '../util/shared-read.js';

export interface ApiParts {
  readonly store: DatabaseStore;
  readonly records: RecordWriter;
  readonly runtime: AccountRuntime;
  readonly supervisors: Supervisors;
  readonly converger: Converger;
  readonly documents: DocumentSync;
  readonly logger: Logger;
  readonly now: () => Date;
  readonly limitsInForce: (name: string, uid: number) => Promise<Record<string, number | string | boolean>>;
  readonly guests: LibvirtRuntime;
  readonly images: ImageCache;
  /** The TLS listener, from prepareTlsListener; null for none. */
  readonly tls: TlsListener | null;
  readonly tasks: TaskEngine;
  readonly clusters: ClusterEngine;
  /** Where the calls are counted and timed. */
  readonly metrics: NodeMetrics;
}

export interface TlsListener {
  readonly listener: TlsListenerOptions;
  readonly allowedUsers: AllowedUsers;
}

/** A failure here is logged, not fatal: delegates cannot log in, but slivers are still managed. */
export async function prepareDelegateShell(config: Config, logger: Logger): Promise<void> {
  try {
    const shell = await installDelegateShell({ target: config.delegateShell, built: forwardApiCallsPath() });
    if (shell.installed || shell.listed) {
      logger.info('delegate shell ready', { shell: config.delegateShell, copied: shell.installed, added_to_etc_shells: shell.listed });
    }
    if (shell.unreachableBy.length > 0) {
      logger.warn('delegates cannot reach their shell', { shell: config.delegateShell, closed_directories: shell.unreachableBy.join(',') });
    }
  } catch (error) {
    logger.error('delegate shell not ready; delegates cannot log in', { shell: config.delegateShell, error: describeError(error) });
  }
}

/**
 * The TLS listener as configured, its files read and checked, and the allowed-users file its
 * callers are checked against; null while api_tls_port is 0. Called before anything else starts:
 * a bad file stops the daemon at once, naming the key and the file.
 */
export async function prepareTlsListener(config: Config, logger: Logger): Promise<TlsListener | null> {
  if (config.apiTlsPort === 0) return null;
  const [cert, key, ca] = [config.apiTlsCertFile, config.apiTlsKeyFile, config.apiTlsCaFile];
  // The configuration's rules make these set whenever the port is.
  if (cert === null || key === null || ca === null) throw new Error('api_tls_port is set without api_tls_cert, api_tls_key and api_tls_ca');
  const credentials = await loadTlsCredentials({ cert, key, ca });
  logger.info('api tls certificate', {
    subject: credentials.subject, valid_to: credentials.validTo.toISOString(), client_ca: credentials.caSubjects.join(' | '),
  });
  const allowedUsers = allowedUsersFile(config.allowedUsersFile, logger);
  // Read now, so that the log says at start how many subjects may call (or that the file is missing).
  await allowedUsers.subjects();
  return { listener: { host: config.apiTlsAddress, port: config.apiTlsPort, ...credentials }, allowedUsers };
}

/** The API on 127.0.0.1, the Unix socket and TLS, acting through the same converger and supervisors. */
export async function startApi(config: Config, parts: ApiParts): Promise<{ server: ApiServer; call: ApiServerOptions['call'] }> {
  const { store, records, runtime, supervisors, converger, documents, logger, now, limitsInForce, guests, images, tls, tasks, clusters, metrics } = parts;
  // The certificate is read once: a daemon that starts with a bad one says so at once.
  const certificatePem = config.authorityCertFile === null ? null : await readFile(config.authorityCertFile, 'utf8');
  if (certificatePem !== null) loadCertificate(certificatePem);
  const needCertificate = (): string => {
    if (certificatePem === null) throw new Error('no authority certificate is configured (authority_cert), so nothing signed is accepted');
    return certificatePem;
  };
  const methods = createApiMethods({
    store,
    records,
    logger,
    now,
    authorityDelegate: config.authorityDelegate,
    converge: (trigger) => converger.converge(trigger),
    submit: (ops) => supervisors.submit(ops),
    observe: () => runtime.observe({ readOnly: true }),
    verifyTicket: (ticket) =>
      verifyTicket(ticket, {
        certificatePem: needCertificate(), nodeId: config.nodeId, maxBytes: config.apiMaxRequestBytes,
        nowSeconds: Math.floor(now().getTime() / 1000),
      }),
    verifyPush: (document, signature) => verifyDetachedSignature(document, signature, needCertificate()),
    acceptDocument: (document, source) => documents.accept(document, source),
    limitsInForce,
    defaultRuntime: config.defaultRuntime,
    // An image added through the API may be what a parked sliver lacked: it is tried again.
    images: {
      ...images,
      async add(request) {
        const entry = await images.add(request);
        supervisors.unpark();
        void converger.converge('image added').catch(() => undefined);
        return entry;
      },
    },
    tasks,
    clusters,
    async guestStatus(name) {
      const status = await guests.status(name);
      if (!status) return null;
      // XML-RPC has no null: what libvirt does not say is left out.
      return Object.fromEntries(Object.entries(status).filter(([, v]) => v !== null)) as Record<string, number | string>;
    },
    ...(tls ? { allowedUsers: tls.allowedUsers } : {}),
  });
  const { call, answers } = measuredAnswers(methods, store, metrics);
  const identify = callerIdentifier(runtime, logger);
  const server = await startApiServer({
    port: config.apiPort === 0 ? null : config.apiPort,
    host: '127.0.0.1',
    socketPath: config.apiSocket,
    maxRequestBytes: config.apiMaxRequestBytes,
    ...(tls ? { tls: tls.listener } : {}),
    identify,
    call,
    answers,
    logger,
  });
  return { server, call };
}

/**
 * Who is behind a connection: a certificate's subject over TLS, else the uid of the peer (the
 * socket's credentials, or the owner of the client's TCP socket) and what the node knows of it.
 * Connections that come together are identified from one read of the accounts
 * (util/shared-read.ts).
 */
export function callerIdentifier(runtime: Pick<AccountRuntime, 'observe'>, logger?: Logger): ApiServerOptions['identify'] {
  const tcpClientUid = tcpClientUidLookup({
    lookupSocket: tcpSocketOwner,
    onLookupError: (error) =>
      logger?.warn('api callers over TCP are looked for in /proc/net/tcp: the kernel could not be asked for their sockets', { error: describeError(error) }),
  });
  const observeAccounts = sharedRead(() => runtime.observe({ readOnly: true }));
  return async (socket: Socket, transport: Transport): Promise<Caller> => {
    // The handshake verified the certificate; who the caller is, is its subject.
    if (transport === 'tls') return tlsCaller(socket as TLSSocket);
    const uid = transport === 'unix'
      ? peerCredentials(socket).uid
      : await tcpClientUid({
        remoteAddress: socket.remoteAddress ?? '', remotePort: socket.remotePort ?? 0,
        localAddress: socket.localAddress ?? '', localPort: socket.localPort ?? 0,
      });
    // A TCP peer whose socket is not listed (it closed already) is nobody.
    if (uid === null) return { uid: -1, kind: 'nobody', name: null };
    const host = await observeAccounts();
    return callerOf(uid, (u) => host.owned.find((a) => a.uid === u) ?? null);
  };
}

/**
 * The methods as the listeners call them: every call counted and timed in the metrics, and a
 * repeated read of an unchanged database answered from the answer cache (counted the same).
 */
export function measuredAnswers(methods: ApiMethods, store: DatabaseStore, metrics: NodeMetrics): { call: ApiServerOptions['call']; answers: AnswerCache } {
  return {
    call: measuredCall((caller, method, params) => methods.call(caller, method, params), methods.names, metrics),
    answers: createAnswerCache({
      generation: () => store.data,
      readsOnlyDatabase: (method) => methods.readsOnlyDatabase(method),
      tallyOf: (method) => metrics.cachedAnswers(method),
    }),
  };
}
