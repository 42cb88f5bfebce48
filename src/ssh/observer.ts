// What the gateway tells whoever watches it (the daemon's metrics): sessions as they open and end,
// sessions refused by the limits, and failed logins with their reason. The gateway works the same
// with no one watching.

/** A delegate's API request, a Unix sliver's shell or command, a libvirt sliver's console or command. */
export type SessionKind = 'delegate' | 'sliver' | 'guest';
export const SESSION_KINDS: readonly SessionKind[] = ['delegate', 'sliver', 'guest'];

/**
 * Why a login attempt was refused: a name with no account here, a disabled sliver (enabled=0), a
 * key the account does not have, a signature that does not verify, or a method other than a key
 * (password, keyboard-interactive). The client's opening "none" attempt is not one.
 */
export type LoginRefusal = 'unknown_user' | 'disabled' | 'key_not_allowed' | 'bad_signature' | 'method';
export const LOGIN_REFUSALS: readonly LoginRefusal[] = ['unknown_user', 'disabled', 'key_not_allowed', 'bad_signature', 'method'];

export interface GatewayObserver {
  sessionOpened(kind: SessionKind): void;
  sessionClosed(kind: SessionKind): void;
  /** A session the node's or the account's session limit refused. */
  sessionRefused(): void;
  loginRefused(reason: LoginRefusal): void;
}

export const UNOBSERVED: GatewayObserver = {
  sessionOpened: () => undefined,
  sessionClosed: () => undefined,
  sessionRefused: () => undefined,
  loginRefused: () => undefined,
};
