// Pure parsing of the account databases (passwd(5), shadow(5), group(5)). No I/O: the runtime
// reads the files and hands the text here, so the parsing is tested without root.

export interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly gecos: string;
  readonly home: string;
  readonly shell: string;
}

export interface ShadowEntry {
  readonly name: string;
  /** The password field as stored ("!..." locked, "*" no password, else a hash). */
  readonly hash: string;
  /** The password is locked (`usermod -L`, or a new account that never had one). */
  readonly locked: boolean;
}

export interface GroupEntry {
  readonly name: string;
  readonly gid: number;
  readonly members: readonly string[];
}

/** Lines that carry an entry: comments, blank lines and NIS "+"/"-" inclusion lines are not entries. */
function entryLines(text: string): string[][] {
  const rows: string[][] = [];
  for (const raw of text.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue;
    rows.push(line.split(':'));
  }
  return rows;
}

function id(field: string | undefined): number | null {
  if (field === undefined || !/^\d+$/.test(field)) return null;
  const value = Number(field);
  return Number.isSafeInteger(value) ? value : null;
}

/** Entries of /etc/passwd; a malformed line is skipped (it names no account anyone can use). */
export function parsePasswd(text: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const fields of entryLines(text)) {
    if (fields.length !== 7) continue;
    const [name, , uidField, gidField, gecos, home, shell] = fields as [string, string, string, string, string, string, string];
    const uid = id(uidField);
    const gid = id(gidField);
    if (name === '' || uid === null || gid === null) continue;
    entries.push({ name, uid, gid, gecos, home, shell });
  }
  return entries;
}

/** A password field that shadow-utils and OpenSSH treat as locked. */
export function isLockedHash(hash: string): boolean {
  return hash.startsWith('!');
}

export function parseShadow(text: string): ShadowEntry[] {
  const entries: ShadowEntry[] = [];
  for (const fields of entryLines(text)) {
    if (fields.length < 2) continue;
    const name = fields[0]!;
    const hash = fields[1]!;
    if (name === '') continue;
    entries.push({ name, hash, locked: isLockedHash(hash) });
  }
  return entries;
}

export function parseGroup(text: string): GroupEntry[] {
  const entries: GroupEntry[] = [];
  for (const fields of entryLines(text)) {
    if (fields.length !== 4) continue;
    const [name, , gidField, members] = fields as [string, string, string, string];
    const gid = id(gidField);
    if (name === '' || gid === null) continue;
    entries.push({ name, gid, members: members === '' ? [] : members.split(',') });
  }
  return entries;
}
