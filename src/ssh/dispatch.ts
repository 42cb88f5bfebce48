// Which session a login gets, within the session limits: a delegate's one API request, a Unix
// sliver's shell or command as its account, or a libvirt guest's console; and the one log line
// that says how it ended.
import type { ServerChannel } from 'ssh2';
import type { Caller } from '../api/identity.js';
import type { Logger } from '../log.js';
import type { SessionSlots } from './admission.js';
import type { Login } from './authentication.js';
import { answerApiRequest, connectPipes, connectTerminal, endChannel, type SessionIo } from './channel-io.js';
import { UNOBSERVED, type GatewayObserver, type SessionKind } from './observer.js';
import { accountLaunch, sshLoginEnvironment, type SessionAccount, type SessionLaunch, type TerminalRequest } from './sessions.js';
import { describeError } from '../util/errors.js';

/** What the gateway asks of the rest of the daemon to serve sessions. */
export interface SessionServices {
  /** The address the gateway listens on (SSH_CONNECTION names it). */
  readonly host: string;
  /** Largest request a delegate may send, bytes (the API's own limit). */
  readonly maxRequestBytes: number;
  /** The sliver's account if it exists on the host and is the daemon's, and whether it is started. */
  readonly sliverAccount: (name: string) => Promise<{ account: SessionAccount; started: boolean } | null>;
  /** The delegate account's uid, or null when it does not exist (yet). */
  readonly delegateUid: (name: string) => Promise<number | null>;
  /** The cgroup.procs files the sliver's processes start in. */
  readonly cgroupFiles: (name: string) => readonly string[];
  /**
   * A libvirt sliver's session: what runs (as root) to reach the guest, e.g. its console, or the
   * reason a command cannot be run there; null when the sliver is not a libvirt guest.
   */
  readonly guestSession?: (name: string, command: string | null, terminal: boolean) => Promise<{ launch: SessionLaunch | { refused: string }; started: boolean } | null>;
  /** Answers one XML-RPC request as the API does. */
  readonly callApi: (caller: Caller, body: Buffer) => Promise<string>;
  readonly logger: Logger;
  /** Told of sessions and failed logins (the daemon's metrics); none by default. */
  readonly observer?: GatewayObserver;
}

/** The connection a session comes on. */
export interface Peer {
  readonly remote: string;
  readonly clientAddress: string;
  readonly clientPort: number;
}

/** A session the client has asked for, with what it asked before (terminal, variables). */
export interface SessionRequest {
  readonly channel: ServerChannel;
  /** null: the login shell (or, for a delegate, the API request). */
  readonly command: string | null;
  readonly login: Login;
  readonly peer: Peer;
  readonly terminal: TerminalRequest | null;
  readonly variables: ReadonlyMap<string, string>;
  /** Keeps the connection from counting as idle. */
  readonly touch: () => void;
  /** Receives what the client's window changes call, once there is a terminal. */
  readonly onResize: (resize: (cols: number, rows: number) => void) => void;
}

/** The gateway's part in every session: its services, the limits, and the port it listens on. */
export interface SessionContext {
  readonly services: SessionServices;
  readonly slots: SessionSlots;
  readonly serverPort: () => number;
}

export async function runSession(request: SessionRequest, context: SessionContext): Promise<void> {
  const { channel, login, peer } = request;
  const { services } = context;
  const name = login.target.name;
  const observer = services.observer ?? UNOBSERVED;
  const slot = context.slots.take(name);
  if ('refused' in slot) {
    services.logger.info('ssh session refused: too many sessions', { account: name, remote: peer.remote });
    observer.sessionRefused();
    endChannel(channel, 1, `nodemgr: too many sessions (${slot.refused}); try again later\r\n`);
    return;
  }
  // Counted open once it is known what the session is, and closed with its end (once).
  let opened: SessionKind | null = null;
  const open = (kind: SessionKind) => {
    opened = kind;
    observer.sessionOpened(kind);
  };
  const io = sessionIo(request, () => {
    slot.release();
    if (opened !== null) observer.sessionClosed(opened);
  }, services.logger);
  if (login.target.kind === 'delegate') {
    open('delegate');
    answerApiRequest(io, services.maxRequestBytes, async (body) => {
      const uid = await services.delegateUid(name);
      return services.callApi({ uid: uid ?? -1, kind: 'delegate', name }, body);
    });
    return;
  }
  try {
    const chosen = await sliverSession(request, context);
    if ('refused' in chosen) {
      io.finish(1, `nodemgr: ${chosen.refused}\r\n`);
      return;
    }
    open(chosen.kind);
    if (request.terminal) await connectTerminal(io, chosen.launch, chosen.env, request.terminal, request.onResize);
    else connectPipes(io, chosen.launch, chosen.env);
  } catch (error) {
    // Ended through the session's own end, so that its slot is given back.
    services.logger.error('ssh session failed', { account: name, remote: peer.remote, error: describeError(error) });
    io.finish(1, `nodemgr: the session could not be started: ${describeError(error)}\r\n`);
  }
}

/** The session's channel, and its end: the slot released, the end logged, the channel closed. */
function sessionIo(request: SessionRequest, release: () => void, logger: Logger): SessionIo {
  const { channel, command, login, peer, terminal } = request;
  const opened = Date.now();
  let ended = false;
  const finish = (status: number | string, message?: string) => {
    if (ended) return;
    ended = true;
    release();
    logger.info('ssh session ended', {
      account: login.target.name, kind: login.target.kind, key: login.fingerprint, remote: peer.remote,
      session: command === null ? (login.target.kind === 'delegate' ? 'api' : terminal ? 'shell' : 'shell without terminal') : 'exec',
      command: command?.slice(0, 200) ?? '', duration_ms: Date.now() - opened, exit_status: String(status),
    });
    endChannel(channel, status, message);
  };
  return { channel, touch: request.touch, finish, ended: () => ended };
}

/**
 * What a sliver's session runs and in which environment: as its Unix account when it has one,
 * else in its guest; or why it cannot run now.
 */
async function sliverSession(
  request: SessionRequest, context: SessionContext,
): Promise<{ kind: SessionKind; launch: SessionLaunch; env: Record<string, string> } | { refused: string }> {
  const { command, peer, terminal, variables } = request;
  const { services } = context;
  const name = request.login.target.name;
  const found = await services.sliverAccount(name);
  const guest = found ? null : await services.guestSession?.(name, command, terminal !== null);
  if (!found && !guest) return { refused: `sliver ${name} does not exist on this node yet` };
  if (!(found ?? guest)!.started) return { refused: `sliver ${name} is stopped; it can be logged into once it is started again` };
  if (guest && 'refused' in guest.launch) return { refused: guest.launch.refused };
  const account: SessionAccount = found?.account ?? { name, uid: 0, gid: 0, home: '/', shell: '/bin/sh' };
  const env = sshLoginEnvironment(account, {
    clientAddress: peer.clientAddress, clientPort: peer.clientPort, serverAddress: services.host, serverPort: context.serverPort(),
  }, variables, terminal);
  const launch = found ? accountLaunch(found.account, services.cgroupFiles(name), command) : (guest!.launch as SessionLaunch);
  return { kind: found ? 'sliver' : 'guest', launch, env };
}
