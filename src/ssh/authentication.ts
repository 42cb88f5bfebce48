// Who logs in: public keys only, checked against the keys in the node database. An unknown user,
// a wrong key, a password and keyboard-interactive all get the same answer ("publickey" may
// continue), so the gateway does not tell which accounts exist.
import ssh2, { type AuthContext, type Connection } from 'ssh2';
import type { NodeDatabase } from '../db/types.js';
import type { Logger } from '../log.js';
import { keyAllowed, loginTarget, type LoginTarget } from './authorized.js';
import { fingerprintOf } from './host-key.js';
import type { LoginRefusal } from './observer.js';

const { utils } = ssh2;

/** A connection's login: the account and the key it logged in with. */
export interface Login {
  readonly target: LoginTarget;
  readonly fingerprint: string;
}

export interface AuthenticationOptions {
  readonly database: () => NodeDatabase;
  readonly maxAuthAttempts: number;
  readonly logger: Logger;
  /** The peer, for the log. */
  readonly remote: string;
  /** Ends the connection after too many failed attempts. */
  readonly cut: () => void;
  /** Called once a key's signature has been verified. */
  readonly loggedIn: (login: Login) => void;
  /** Called for every refused attempt that counts against the connection's attempts. */
  readonly refused: (reason: LoginRefusal) => void;
}

/** Answers the authentication requests of one connection. */
export function answerAuthentication(client: Connection, options: AuthenticationOptions): void {
  const { logger, remote } = options;
  let failures = 0;
  // As OpenSSH's MaxAuthTries: refused attempts are counted (the client's opening "none" and a
  // key's query are not), and the connection is cut once there are too many.
  const refuse = (ctx: AuthContext, reason: LoginRefusal, why: string | null) => {
    if (ctx.method !== 'none') {
      failures++;
      options.refused(reason);
    }
    if (why) logger.info('ssh login refused', { remote, user: ctx.username.slice(0, 64), why });
    if (failures >= options.maxAuthAttempts) {
      logger.info('ssh connection closed: too many failed logins', { remote, user: ctx.username.slice(0, 64) });
      ctx.reject([]);
      options.cut();
      return;
    }
    ctx.reject(['publickey']);
  };
  client.on('authentication', (ctx: AuthContext) => {
    if (ctx.method !== 'publickey') {
      refuse(ctx, 'method', null);
      return;
    }
    // Told apart for the metrics alone: the client hears the same refusal for each.
    const target = loginTarget(options.database(), ctx.username);
    const refusal: LoginRefusal | null = !target ? 'unknown_user' : !target.enabled ? 'disabled' : !keyAllowed(target, ctx.key.data) ? 'key_not_allowed' : null;
    if (!target || refusal !== null) {
      refuse(ctx, refusal ?? 'unknown_user', ctx.signature ? `key ${fingerprintOf(ctx.key.data)} not allowed` : null);
      return;
    }
    // Without a signature the client only asks whether this key would do.
    if (!ctx.signature || !ctx.blob) {
      ctx.accept();
      return;
    }
    const key = utils.parseKey(ctx.key.data);
    const parsed = key instanceof Error ? null : Array.isArray(key) ? key[0] : key;
    // ssh2's verify answers an Error, which is truthy, where the crypto call throws (an ed25519
    // key with a digest, when the client names rsa-sha2-256 for it): only `true` is a signature
    // that verifies, and only with an algorithm that the key's type signs with.
    if (!parsed || !signsWith(parsed.type, ctx.key.algo) || parsed.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) {
      refuse(ctx, 'bad_signature', 'bad signature');
      return;
    }
    options.loggedIn({ target, fingerprint: fingerprintOf(ctx.key.data) });
    ctx.accept();
  });
}

/**
 * Whether a key of `keyType` (as its blob names it) signs with the public key algorithm a client
 * named: its own name, or for RSA keys also the SHA-2 variants (RFC 8332). Pure.
 */
export function signsWith(keyType: string, algorithm: string): boolean {
  if (keyType === 'ssh-rsa') return algorithm === 'ssh-rsa' || algorithm === 'rsa-sha2-256' || algorithm === 'rsa-sha2-512';
  return algorithm === keyType;
}
