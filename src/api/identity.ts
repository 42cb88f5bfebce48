// Who is calling: the Unix user behind the connection, and what that user is to this node; or, over
// TLS, the subject of the client certificate the handshake verified.
// On the Unix socket the kernel says (SO_PEERCRED); on loopback TCP the kernel says who owns the
// client's own socket (tcp-client-uid.ts).
import type { TLSSocket } from 'node:tls';
import type { AccountKind } from '../db/types.js';
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
