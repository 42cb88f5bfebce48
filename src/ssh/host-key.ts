// The gateway's host key: made on first start, kept in the state directory, so that clients see
// the same key across restarts. Its fingerprint is what `nodemgr status` shows and what users
// compare with the one their client prints.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { writeFileDurably } from '../db/durable-file.js';

const { utils } = ssh2;

export interface HostKey {
  /** The private key in OpenSSH format, for the server. */
  readonly privateKey: string;
  /** The public key line (type, base64). */
  readonly publicKey: string;
  /** "SHA256:..." as OpenSSH prints it. */
  readonly fingerprint: string;
  readonly path: string;
}

export function hostKeyPath(stateDir: string): string {
  return join(stateDir, 'ssh_host_ed25519_key');
}

/** "SHA256:<base64 without padding>" of a public key blob, as `ssh-keygen -l` prints it. */
export function fingerprintOf(publicKeyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(publicKeyBlob).digest('base64').replace(/=+$/, '')}`;
}

/** The fingerprint of a public key line ("ssh-ed25519 AAAA... comment"); throws when it is not one. */
export function fingerprintOfLine(line: string): string {
  const parsed = utils.parseKey(line.trim());
  if (parsed instanceof Error) throw new Error(`not a public key: ${parsed.message}`);
  const key = Array.isArray(parsed) ? parsed[0]! : parsed;
  return fingerprintOf(key.getPublicSSH());
}

function describe(privateKey: string, path: string): HostKey {
  const parsed = utils.parseKey(privateKey);
  if (parsed instanceof Error) throw new Error(`${path} is not a private key ssh2 can use: ${parsed.message}`);
  const key = Array.isArray(parsed) ? parsed[0]! : parsed;
  if (!key.isPrivateKey()) throw new Error(`${path} holds a public key, not the host's private key`);
  const blob = key.getPublicSSH();
  return { privateKey, publicKey: `${key.type} ${blob.toString('base64')}`, fingerprint: fingerprintOf(blob), path };
}

/**
 * A new ed25519 key pair in OpenSSH format. ssh2's generator drops a leading zero byte of the
 * public key now and then (about one key in 250 comes out 31 bytes long and parses as malformed),
 * so a pair is only taken once both halves parse and agree.
 */
export function generateKeyPair(comment: string): { private: string; public: string } {
  for (let attempt = 0; attempt < 20; attempt++) {
    const pair = utils.generateKeyPairSync('ed25519', { comment });
    const priv = utils.parseKey(pair.private);
    const pub = utils.parseKey(pair.public);
    if (priv instanceof Error || pub instanceof Error) continue;
    const privKey = Array.isArray(priv) ? priv[0]! : priv;
    const pubKey = Array.isArray(pub) ? pub[0]! : pub;
    if (privKey.getPublicSSH().equals(pubKey.getPublicSSH())) return pair;
  }
  throw new Error('no usable ed25519 key pair in 20 attempts');
}

/** Reads the host key, or makes one (ed25519) when there is none yet. */
export async function loadOrCreateHostKey(stateDir: string): Promise<HostKey & { created: boolean }> {
  const path = hostKeyPath(stateDir);
  let text: string | null = null;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  if (text !== null) return { ...describe(text, path), created: false };
  const pair = generateKeyPair('nodemgr ssh gateway');
  const made = describe(pair.private, path);
  await writeFileDurably(path, pair.private, 0o600);
  await writeFileDurably(`${path}.pub`, `${made.publicKey} nodemgr\n`, 0o644);
  return { ...made, created: true };
}

/** The fingerprint of the saved host key, for status; null when there is none yet. */
export async function savedHostKeyFingerprint(stateDir: string): Promise<string | null> {
  const line = await readFile(`${hostKeyPath(stateDir)}.pub`, 'utf8').catch(() => null);
  if (line === null) return null;
  try {
    return fingerprintOfLine(line);
  } catch {
    return null;
  }
}
