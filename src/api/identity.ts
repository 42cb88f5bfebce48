// Who is calling: the Unix user behind the connection, and what that user is to this node; or, over
// TLS, the subject of the client certificate the handshake verified.
// On the Unix socket the kernel says (SO_PEERCRED); on loopback TCP the client's own socket is
// found in /proc/net/tcp (or tcp6), whose uid column is the user that opened it.
import { readFile } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { AccountKind } from '../db/types.js';
import { sharedRead } from '../util/shared-read.js';
import { certificateSubject } from './certificate-subject.js';

export type CallerKind = 'root' | AccountKind | 'nobody' | 'certificate';

/** A Unix user of this host: root, one of the node's accounts, or anyone else ("nobody" to the node). */
export interface LocalCaller {
  /** -1 when the user behind a connection could not be found. */
  readonly uid: number;
  readonly kind: 'root' | AccountKind | 'nobody';
  /** The account name of a sliver or delegate; null for root and nobody. */
  readonly name: string | null;
}

/** A remote caller over TLS: known by its certificate's subject alone, it has no uid on this host. */
export interface CertificateCaller {
  readonly uid: -1;
  readonly kind: 'certificate';
  readonly name: null;
  /** In OpenSSL's one-line form (certificate-subject.ts), as allowed_users lists it. */
  readonly subject: string;
}

export type Caller = LocalCaller | CertificateCaller;

/** A connection whose user is not known (a TCP peer that closed before it was looked up). */
export const UNIDENTIFIED: LocalCaller = { uid: -1, kind: 'nobody', name: null };

export function describeCaller(caller: Caller): string {
  if (caller.kind === 'certificate') return `certificate ${caller.subject}`;
  return caller.name !== null ? `${caller.kind} ${caller.name} (uid ${caller.uid})` : `${caller.kind} (uid ${caller.uid})`;
}

/**
 * Who owns what a caller starts (tasks, instances): "root", "uid:<n>" for any other local user,
 * "subject:<subject>" for a certificate. A local user and a certificate never share an owner.
 */
export function ownerOf(caller: Caller): string {
  if (caller.kind === 'certificate') return `subject:${caller.subject}`;
  return caller.kind === 'root' ? 'root' : `uid:${caller.uid}`;
}

/** Classifies a uid: root, one of the node's accounts, or nobody the node knows. */
export function callerOf(uid: number, accountOfUid: (uid: number) => { name: string; kind: AccountKind } | null): LocalCaller {
  if (uid === 0) return { uid, kind: 'root', name: null };
  const account = accountOfUid(uid);
  return account ? { uid, kind: account.kind, name: account.name } : { uid, kind: 'nobody', name: null };
}

/**
 * The caller of a TLS connection: its client certificate's subject. The listener refuses a
 * handshake without a certificate its CA signed, so an unverified peer cannot get here; should
 * one, it is nobody.
 */
export function tlsCaller(socket: TLSSocket): Caller {
  const certificate = socket.authorized ? socket.getPeerX509Certificate() : undefined;
  if (!certificate) return UNIDENTIFIED;
  return { uid: -1, kind: 'certificate', name: null, subject: certificateSubject(certificate.raw) };
}

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

/** The kernel's tables of TCP sockets (/proc/net/tcp and tcp6), as text; a missing one is empty. */
function readTcpTables(procNet: string): Promise<string[]> {
  return Promise.all(['tcp', 'tcp6'].map((table) => readFile(`${procNet}/${table}`, 'latin1').catch(() => '')));
}

/**
 * The uid owning the client end of a loopback TCP connection in the socket tables, as this server
 * sees it (the client is the connection's remote end, the server its local end); null when no
 * such socket is listed. Pure.
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
      if (fields.length >= 8 && decodeProcAddress(fields[1]!) === client && decodeProcAddress(fields[2]!) === server) {
        const uid = Number(fields[7]);
        if (Number.isInteger(uid) && uid >= 0) return uid;
      }
      at = end < 0 ? -1 : text.indexOf(portField, end);
    }
  }
  return null;
}

/** The uid owning the client end of a loopback TCP connection, from a read of its own. */
export async function tcpClientUid(connection: TcpConnection, procNet = '/proc/net'): Promise<number | null> {
  return clientUidIn(await readTcpTables(procNet), connection);
}

/**
 * tcpClientUid for a server: the connections accepted together (32 clients connecting at once,
 * or a burst of one-call HTTP/1.0 clients) are identified from one read of the socket tables,
 * which on a busy host are megabytes of text the kernel writes out anew at every read.
 */
export function sharedTcpClientUid(procNet = '/proc/net'): (connection: TcpConnection) => Promise<number | null> {
  const tables = sharedRead(() => readTcpTables(procNet));
  return async (connection) => clientUidIn(await tables(), connection);
}
