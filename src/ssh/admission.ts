// The gateway's admission limits, as OpenSSH's sshd has them: how long a connection may take to
// log in (LoginGraceTime), how many connections may be logging in at once (MaxStartups' hard
// limit) and how many sessions the node and each account may have open (MaxSessions, per
// account). The idle timeout and the failed-login count are per connection
// (connection.ts, authentication.ts).
import { createServer, type Server, type Socket } from 'node:net';
import type { Connection } from 'ssh2';
import type { Logger } from '../log.js';

/** A session's place under the limits; released once when the session ends. */
export interface SessionSlot {
  release(): void;
}

export interface SessionSlots {
  /** A slot for a session of `account`, or the limit that refuses one, as a message says it. */
  take(account: string): SessionSlot | { refused: string };
  /** Sessions open now, in total. */
  total(): number;
}

export function sessionSlots(maxSessions: number, maxSessionsPerAccount: number): SessionSlots {
  const perAccount = new Map<string, number>();
  let total = 0;
  const release = (account: string) => {
    total--;
    const left = (perAccount.get(account) ?? 1) - 1;
    if (left === 0) perAccount.delete(account);
    else perAccount.set(account, left);
  };
  return {
    take(account) {
      const count = perAccount.get(account) ?? 0;
      if (total >= maxSessions) return { refused: `the node's limit of ${maxSessions}` };
      if (count >= maxSessionsPerAccount) return { refused: `the limit of ${maxSessionsPerAccount} for ${account}` };
      total++;
      perAccount.set(account, count + 1);
      return { release: () => release(account) };
    },
    total: () => total,
  };
}

/**
 * The TCP side of the gateway, with the login grace. It is the daemon's own: ssh2 hears of a
 * connection only once the peer speaks ssh, so the grace starts here, where a peer that never
 * says anything is also seen.
 */
export interface ConnectionFront {
  readonly tcp: Server;
  /** The peer at `remote` has logged in: it is no longer timed. */
  loggedIn(remote: string): void;
  /** Ends a connection: ssh2 says goodbye, and the socket goes too if the peer does not answer. */
  cut(client: Connection, remote: string): void;
  /** Drops every connection at once (the gateway closes). */
  destroyAll(): void;
}

export interface FrontLimits {
  /** A connection not logged in after this long is closed. */
  readonly loginGraceMs: number;
  /** Connections not yet logged in at once; one more is closed as it comes. */
  readonly maxStartups: number;
}

/** A refusal for ssh_max_startups is logged at most this often (a flood would fill the log). */
const STARTUPS_LOG_INTERVAL_MS = 10_000;

/**
 * Accepts TCP connections and hands each to `handOver` (ssh2), timed by the login grace; past
 * `maxStartups` connections not logged in, a new one is closed at once: without the cap anyone who
 * can reach the port holds a descriptor (and ssh2's state) per connection for the whole grace, until
 * the daemon's descriptors run out for the API and the slivers too.
 */
export function connectionFront(limits: FrontLimits, logger: Logger, handOver: (socket: Socket) => void): ConnectionFront {
  const { loginGraceMs, maxStartups } = limits;
  const sockets = new Map<string, { socket: Socket; grace: NodeJS.Timeout }>();
  const waiting = new Set<string>();
  let refusedSinceLog = 0;
  let lastLog = -Infinity;
  const tcp = createServer((socket) => {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    if (waiting.size >= maxStartups) {
      socket.destroy();
      refusedSinceLog++;
      if (Date.now() - lastLog >= STARTUPS_LOG_INTERVAL_MS) {
        logger.warn('ssh connections closed: too many not logged in yet', { refused: refusedSinceLog, ssh_max_startups: maxStartups, last_remote: remote });
        refusedSinceLog = 0;
        lastLog = Date.now();
      }
      return;
    }
    waiting.add(remote);
    // Each step of the handshake and each keystroke is a small write that must not wait for the
    // peer's delayed ACK (Nagle's algorithm made every login ~40 ms slower per round trip).
    socket.setNoDelay(true);
    const grace = setTimeout(() => {
      logger.info('ssh connection closed: not logged in in time', { remote, grace_s: loginGraceMs / 1000 });
      socket.destroy();
    }, loginGraceMs);
    sockets.set(remote, { socket, grace });
    socket.once('close', () => {
      clearTimeout(grace);
      sockets.delete(remote);
      waiting.delete(remote);
    });
    handOver(socket);
  });
  return {
    tcp,
    loggedIn(remote) {
      clearTimeout(sockets.get(remote)?.grace);
      waiting.delete(remote);
    },
    cut(client, remote) {
      client.end();
      const socket = sockets.get(remote)?.socket;
      setTimeout(() => socket?.destroy(), 1_000).unref();
    },
    destroyAll() {
      for (const { socket } of sockets.values()) socket.destroy();
    },
  };
}
