// Who may log in with which key: the keys the node database holds for an account name (a
// sliver's users' keys, a delegate's keys). Nothing is read from the accounts' authorized_keys
// files, so a key that leaves the document stops working at the next sync, and a sliver cannot
// add keys for itself.
import ssh2, { type ParsedKey } from 'ssh2';

// ssh2 is CommonJS: its exports are properties of the default export under Node's ESM loader.
const { utils } = ssh2;
import { sliverKey } from '../db/records.js';
import type { NodeDatabase } from '../db/types.js';

export interface LoginTarget {
  readonly kind: 'sliver' | 'delegate';
  readonly name: string;
  /** Public key blobs (the SSH wire form) of the keys that may log in. */
  readonly keys: readonly Buffer[];
  /** False when the rspec says enabled=0: nobody may log in. */
  readonly enabled: boolean;
}

const parsedLines = new Map<string, Buffer | null>();

/** The public key blob of an authorized_keys line, or null when it is not a key ssh2 knows. */
export function keyBlob(line: string): Buffer | null {
  let blob = parsedLines.get(line);
  if (blob === undefined) {
    const parsed = utils.parseKey(line.trim());
    const key: ParsedKey | undefined = parsed instanceof Error ? undefined : Array.isArray(parsed) ? parsed[0] : parsed;
    blob = key ? key.getPublicSSH() : null;
    // Lines come from documents, so the cache is bounded: past a size it starts again.
    if (parsedLines.size > 100_000) parsedLines.clear();
    parsedLines.set(line, blob);
  }
  return blob;
}

function blobs(lines: readonly string[]): Buffer[] {
  return lines.flatMap((line) => {
    const blob = keyBlob(line);
    return blob ? [blob] : [];
  });
}

/** The account a user name may log in as, from the records; null for any other name. */
export function loginTarget(db: NodeDatabase, user: string): LoginTarget | null {
  const sliver = Object.hasOwn(db.records, sliverKey(user)) ? db.records[sliverKey(user)] : undefined;
  if (sliver?.type === 'sliver') {
    return { kind: 'sliver', name: user, keys: blobs(sliver.keys), enabled: (sliver.rspec['enabled'] ?? 1) !== 0 };
  }
  const delegateKey = `delegate_${user}`;
  const delegate = Object.hasOwn(db.records, delegateKey) ? db.records[delegateKey] : undefined;
  if (delegate?.type === 'delegate') return { kind: 'delegate', name: user, keys: blobs(delegate.keys), enabled: true };
  return null;
}

export function keyAllowed(target: LoginTarget, blob: Buffer): boolean {
  return target.keys.some((k) => k.equals(blob));
}
