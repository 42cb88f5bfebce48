// What the disk adapter reads from the host, parsed: the mount table and the quota tools' output.
// Pure: text in, data out.
// ---- mounts ------------------------------------------------------------------------------------

export interface MountEntry {
  readonly mountPoint: string;
  readonly device: string;
  readonly fsType: string;
  /** Per-mount options and the file system's own (where ext4 lists usrquota), together. */
  readonly options: readonly string[];
}

/** mountinfo escapes space, tab, newline and backslash as three octal digits (\040). */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** The entries of /proc/self/mountinfo, in its order (a later mount on a path hides an earlier). */
export function parseMountinfo(text: string): MountEntry[] {
  const mounts: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    // id parent major:minor root mountpoint options [optional fields...] - fstype source superoptions
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    if (separator < 0 || fields.length < separator + 3) throw new Error(`mountinfo: malformed line: ${JSON.stringify(line)}`);
    mounts.push({
      mountPoint: unescapeMountField(fields[4]!),
      device: unescapeMountField(fields[separator + 2]!),
      fsType: fields[separator + 1]!,
      options: [...fields[5]!.split(','), ...(fields[separator + 3] ?? '').split(',')].filter((o) => o !== ''),
    });
  }
  return mounts;
}

/** The mount that holds an absolute, resolved path: the longest mount point above it. */
export function mountHolding(mounts: readonly MountEntry[], path: string): MountEntry | null {
  let best: MountEntry | null = null;
  for (const m of mounts) {
    const within = m.mountPoint === '/' || path === m.mountPoint || path.startsWith(`${m.mountPoint}/`);
    if (within && (best === null || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

/** Whether the mount asks for user quota (ext4 and others: usrquota/quota/usrjquota=; XFS: uquota...). */
export function hasUserQuotaOption(mount: MountEntry): boolean {
  return mount.options.some((o) => ['usrquota', 'quota', 'uquota', 'uqnoenforce', 'qnoenforce'].includes(o) || o.startsWith('usrjquota='));
}

// ---- tool output -------------------------------------------------------------------------------

export type QuotaState = 'off' | 'accounting' | 'enforced';

/**
 * The user quota state in `quotaon -p -u -v MNT` output, null when it prints none (the mount has no
 * quota the tools know of). "on" without a qualifier comes from kernels older than 4.1, where
 * quota that is on is enforced.
 */
export function parseQuotaonState(stdout: string): QuotaState | null {
  const m = /^user quota on .* \(.*\) is (off|on \(accounting\)|on \(enforced\)|on)$/m.exec(stdout);
  if (!m) return null;
  return m[1] === 'off' ? 'off' : m[1] === 'on (accounting)' ? 'accounting' : 'enforced';
}

export interface QuotaEntry {
  readonly usedKiB: number;
  readonly softKiB: number;
  readonly hardKiB: number;
  readonly inodeSoft: number;
  readonly inodeHard: number;
}

/** `repquota -u -v -n -p -O csv MNT`: one entry per uid, blocks in KiB, 0 meaning no limit. */
export function parseRepquotaCsv(stdout: string): Map<number, QuotaEntry> {
  const entries = new Map<number, QuotaEntry>();
  let columns: Map<string, number> | null = null;
  for (const line of stdout.split('\n')) {
    if (line.trim() === '') continue;
    const cells = line.split(',');
    if (cells[0] === 'User') {
      columns = new Map(cells.map((name, i) => [name.trim(), i]));
      for (const needed of ['BlockUsed', 'BlockSoftLimit', 'BlockHardLimit', 'FileSoftLimit', 'FileHardLimit']) {
        if (!columns.has(needed)) throw new Error(`repquota: no ${needed} column in ${JSON.stringify(line)}`);
      }
      continue;
    }
    if (columns === null) throw new Error(`repquota: a line before the header: ${JSON.stringify(line)}`);
    const id = /^#?(\d+)$/.exec(cells[0]!);
    // Only numeric ids are asked for (-n); anything else is a line the format does not have.
    if (!id) throw new Error(`repquota: not a uid: ${JSON.stringify(line)}`);
    const cell = (name: string): number => {
      const text = cells[columns!.get(name)!];
      if (text === undefined || !/^\d+$/.test(text)) throw new Error(`repquota: ${name} is not a number in ${JSON.stringify(line)}`);
      return Number(text);
    };
    entries.set(Number(id[1]), {
      usedKiB: cell('BlockUsed'),
      softKiB: cell('BlockSoftLimit'),
      hardKiB: cell('BlockHardLimit'),
      inodeSoft: cell('FileSoftLimit'),
      inodeHard: cell('FileHardLimit'),
    });
  }
  if (columns === null && stdout.trim() !== '') throw new Error('repquota: no header line');
  return entries;
}
