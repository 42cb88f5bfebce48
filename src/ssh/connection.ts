// One ssh connection: its idle timeout, its login, and the sessions it asks for. Port forwarding
// and the like are not offered.
import type { ClientInfo, Connection, ServerChannel, Session } from 'ssh2';
import type { NodeDatabase } from '../db/types.js';
import { describeError } from '../util/errors.js';
import type { ConnectionFront } from './admission.js';
import { answerAuthentication, type Login } from './authentication.js';
import { endChannel } from './channel-io.js';
import { runSession, type Peer, type SessionContext } from './dispatch.js';
import { UNOBSERVED } from './observer.js';
import type { TerminalRequest } from './sessions.js';

const MAX_CLIENT_VARIABLES = 64;

export interface ConnectionContext extends SessionContext {
  readonly front: ConnectionFront;
  readonly database: () => NodeDatabase;
  readonly maxAuthAttempts: number;
  /** A connection with no data either way for this long is closed. */
  readonly idleTimeoutMs: number;
}

export function serveConnection(client: Connection, info: ClientInfo, context: ConnectionContext): void {
  const { logger } = context.services;
  const remote = `${info.ip}:${info.port}`;
  const cut = () => context.front.cut(client, remote);
  let login: Login | null = null;
  const idle = setTimeout(() => {
    logger.info('ssh connection closed: idle', { remote, account: login?.target.name ?? '', idle_s: context.idleTimeoutMs / 1000 });
    cut();
  }, context.idleTimeoutMs);
  const touch = () => idle.refresh();

  answerAuthentication(client, {
    database: context.database, maxAuthAttempts: context.maxAuthAttempts, logger, remote, cut,
    loggedIn: (l) => (login = l),
    refused: (reason) => (context.services.observer ?? UNOBSERVED).loginRefused(reason),
  });
  client.on('ready', () => {
    context.front.loggedIn(remote);
    logger.info('ssh login', { remote, account: login!.target.name, kind: login!.target.kind, key: login!.fingerprint });
  });
  client.on('session', (accept) => {
    if (!login) return;
    touch();
    answerSessionRequests(accept(), login, { remote, clientAddress: info.ip, clientPort: info.port }, touch, context);
  });
  client.on('tcpip', (_accept, reject) => reject());
  client.on('request', (_accept, reject) => reject?.());
  client.on('error', (error) => logger.debug('ssh connection error', { remote, error: error.message }));
  client.on('close', () => clearTimeout(idle));
}

/** Gathers what a session asks for before its shell or command, then runs the one it asks for. */
function answerSessionRequests(session: Session, login: Login, peer: Peer, touch: () => void, context: SessionContext): void {
  let terminal: TerminalRequest | null = null;
  const variables = new Map<string, string>();
  let resize: ((cols: number, rows: number) => void) | null = null;
  let started = false;

  session.on('pty', (accept, _reject, info) => {
    terminal = { term: info.term, cols: info.cols, rows: info.rows };
    accept?.();
  });
  session.on('env', (accept, reject, info) => {
    if (variables.size >= MAX_CLIENT_VARIABLES) return reject?.();
    variables.set(info.key, info.val);
    accept?.();
  });
  session.on('window-change', (accept, _reject, info) => {
    resize?.(info.cols, info.rows);
    accept?.();
  });
  session.on('subsystem', (_accept, reject) => reject?.());
  const begin = (channel: ServerChannel, command: string | null) => {
    if (started) return;
    started = true;
    const request = { channel, command, login, peer, terminal, variables, touch, onResize: (r: typeof resize) => (resize = r) };
    void runSession(request, context).catch((error: unknown) => {
      context.services.logger.error('ssh session failed', { account: login.target.name, remote: peer.remote, error: describeError(error) });
      endChannel(channel, 1, `nodemgr: the session could not be started: ${describeError(error)}\r\n`);
    });
  };
  session.on('shell', (accept) => begin(accept(), null));
  session.on('exec', (accept, _reject, info) => begin(accept(), info.command));
}
