// Public key lines for documents in tests: well-formed (type name, then 32 bytes of key material in
// SSH wire format), so that a parser's key check accepts them, yet made up without ssh-keygen.

function sshString(bytes: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** A well-formed ed25519 public key line; `n` makes the key material distinct. */
export function ed25519KeyLine(n: number, comment = `user${n}@example.org`): string {
  const blob = Buffer.concat([sshString(Buffer.from('ssh-ed25519')), sshString(Buffer.alloc(32, n))]);
  return `ssh-ed25519 ${blob.toString('base64')} ${comment}`;
}
