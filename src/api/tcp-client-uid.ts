// The uid behind a loopback TCP connection: the owner of the client's own socket, the connection's
// other end on this host. The kernel is asked for that one socket by its address and port
// (sock_diag, through the native addon), a hash lookup however many sockets the host has; where
// it cannot be asked, the socket is looked for in /proc/net/tcp and tcp6, whose uid column is the
// same owner.
//
// Only a socket a process still holds names its user. A client that closed its end before it was
// looked up leaves a TIME_WAIT entry (or an orphan on its way out) that the kernel lists with
// uid 0 whoever opened it: taking that for root would let any local user call as root by
// closing right after its request. Such a caller is nobody.
import { readFile } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { sharedRead } from '../util/shared-read.js';

/** "0100007F:032C" (as /proc/net/tcp writes 127.0.0.1:812) -> "127.0.0.1:812". */
export function decodeProcAddress(hex: string): string | null {
  const [addr, port] = hex.split(':');
  if (addr === undefined || port === undefined || !/^[0-9A-F]+$/i.test(addr) || !/^[0-9A-F]{4}$/i.test(port)) return null;
  const portNumber = parseInt(port, 16);
  if (addr.length === 8) {
    // One 32-bit word in host (little-endian) order.
    const bytes = [6, 4, 2, 0].map((i) => parseInt(addr.slice(i, i + 2), 16));
    return `${bytes.join('.')}:${portNumber}`;
  }
  if (addr.length === 32) {
    // Four 32-bit words, each in host order.
    const bytes: number[] = [];
    for (let w = 0; w < 4; w++) {
      const word = addr.slice(w * 8, w * 8 + 8);
      for (const i of [6, 4, 2, 0]) bytes.push(parseInt(word.slice(i, i + 2), 16));
    }
    const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
    if (mapped) return `${bytes.slice(12).join('.')}:${portNumber}`;
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
    return `${normalizeIPv6(groups.join(':'))}:${portNumber}`;
  }
  return null;
}

/** The canonical text of an address as node:net reports it ("::ffff:127.0.0.1" -> "127.0.0.1"). */
function normalizeAddress(address: string): string {
  const lower = address.toLowerCase();
  if (lower.startsWith('::ffff:') && isIPv4(lower.slice(7))) return lower.slice(7);
  return isIPv4(lower) ? lower : normalizeIPv6(lower);
}

function normalizeIPv6(address: string): string {
  // Expand "::" then print each group without leading zeros and the longest zero run as "::".
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail === undefined ? [] : Array(8 - headGroups.length - tailGroups.length).fill('0');
  const groups = [...headGroups, ...fill, ...tailGroups].map((g) => parseInt(g || '0', 16));
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength && j - i > 1) { bestStart = i; bestLength = j - i; }
    i = j;
  }
  const text = groups.map((g) => g.toString(16));
  if (bestStart < 0) return text.join(':');
  return `${text.slice(0, bestStart).join(':')}::${text.slice(bestStart + bestLength).join(':')}`;
}

export interface TcpConnection {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
}

/** One TCP socket as the kernel describes it (native/peercred.c, tcpSocketOwner). */
export interface SocketOwner {
  readonly uid: number;
  /** 0 when no process holds the socket any more. */
  readonly inode: number;
  /** The kernel's TCP_* state number. */
  readonly state: number;
}

/**
 * Asks the kernel for the socket whose own end is address:port and whose peer is
 * peerAddress:peerPort; null when it knows none. Throws when the kernel cannot be asked.
 */
export type SocketOwnerLookup = (address: string, port: number, peerAddress: string, peerPort: number) => SocketOwner | null;

/** The kernel's TCP_LISTEN: a lookup by four parts falls back to a listener on the port. */
const TCP_LISTEN = 10;

/** The uid of a socket that a process holds, connected; null for anything else. Pure. */
export function heldSocketUid(socket: SocketOwner | null): number | null {
  if (socket === null || socket.inode === 0 || socket.state === TCP_LISTEN) return null;
  return socket.uid;
}

/** The kernel's tables of TCP sockets (/proc/net/tcp and tcp6), as text; a missing one is empty. */
function readTcpTables(procNet: string): Promise<string[]> {
  return Promise.all(['tcp', 'tcp6'].map((table) => readFile(`${procNet}/${table}`, 'latin1').catch(() => '')));
}

/**
 * The uid owning the client end of a loopback TCP connection in the socket tables, as this server
 * sees it (the client is the connection's remote end, the server its local end); null when no
 * such socket is listed, or the client closed its end. Pure.
 */
export function clientUidIn(tables: readonly string[], connection: TcpConnection): number | null {
  const client = `${normalizeAddress(connection.remoteAddress)}:${connection.remotePort}`;
  const server = `${normalizeAddress(connection.localAddress)}:${connection.localPort}`;
  // A busy host lists tens of thousands of sockets (TIME_WAIT included): only the lines that hold
  // the client's port are split and decoded, which makes a lookup a scan rather than a parse.
  const portField = `:${connection.remotePort.toString(16).toUpperCase().padStart(4, '0')} `;
  for (const text of tables) {
    for (let at = text.indexOf(portField); at >= 0; ) {
      const start = text.lastIndexOf('\n', at) + 1;
      const end = text.indexOf('\n', at);
      const fields = text.slice(start, end < 0 ? undefined : end).trim().split(/\s+/);
      if (fields.length >= 10 && decodeProcAddress(fields[1]!) === client && decodeProcAddress(fields[2]!) === server) {
        const uid = Number(fields[7]);
        // The kernel's rule, as for its own answer: a closed end (inode 0) names nobody.
        const held = heldSocketUid({ uid, inode: Number(fields[9]), state: parseInt(fields[3]!, 16) });
        if (held !== null && Number.isInteger(uid) && uid >= 0) return held;
      }
      at = end < 0 ? -1 : text.indexOf(portField, end);
    }
  }
  return null;
}

export interface TcpClientUidOptions {
  /** The kernel's answer for one socket (native/peercred.ts); without it the tables are read. */
  readonly lookupSocket?: SocketOwnerLookup;
  /** Where the socket tables are; /proc/net. */
  readonly procNet?: string;
  /** Told, once, that the kernel could not be asked and the tables are read instead. */
  readonly onLookupError?: (error: unknown) => void;
}

/**
 * The uid owning the client end of a loopback TCP connection (null: nobody), for a server. Where
 * the socket tables must be read, the connections accepted together (32 clients connecting at
 * once, a burst of one-call HTTP/1.0 clients) share one read of them: on a busy host they are
 * megabytes of text the kernel writes out anew at every read.
 */
export function tcpClientUidLookup(options: TcpClientUidOptions = {}): (connection: TcpConnection) => Promise<number | null> {
  const { lookupSocket, procNet = '/proc/net', onLookupError } = options;
  const tables = sharedRead(() => readTcpTables(procNet));
  let told = false;
  return async (connection) => {
    if (lookupSocket) {
      try {
        const uid = askKernel(lookupSocket, connection);
        if (uid !== undefined) return uid;
      } catch (error) {
        if (!told) onLookupError?.(error);
        told = true;
      }
    }
    return clientUidIn(await tables(), connection);
  };
}

/**
 * The client's uid as the kernel answers for its socket; undefined when the kernel knows neither
 * end of the connection, i.e. its sock_diag does not answer for TCP here (tcp_diag not loaded).
 */
function askKernel(lookup: SocketOwnerLookup, connection: TcpConnection): number | null | undefined {
  const client = normalizeAddress(connection.remoteAddress);
  const server = normalizeAddress(connection.localAddress);
  const found = lookup(client, connection.remotePort, server, connection.localPort);
  if (found !== null) return heldSocketUid(found);
  // The client's socket is gone, or the kernel cannot tell: our own end of it says which.
  return lookup(server, connection.localPort, client, connection.remotePort) !== null ? null : undefined;
}
