// Where a guest disk keeps its file system: the whole disk (a bare file system image) or a
// partition of an MBR or GPT partition table. blkid and sfdisk (util-linux, fdisk) read the raw
// export; nothing here writes.
import { CommandError, runCommand } from '../host/exec.js';

export interface FileSystemPlace {
  /** The file system's type as blkid names it (ext2, ext3, ext4). */
  readonly type: string;
  /** Its first byte in the disk. */
  readonly offset: number;
  /** Its partition's number (1 is the first), or null for a file system on the whole disk. */
  readonly partition: number | null;
}

/** File systems that e2fsprogs can write without mounting them. */
const WRITABLE_TYPES = new Set(['ext2', 'ext3', 'ext4']);

// Partition types of a Linux file system: MBR type 83, GPT "Linux filesystem data".
const LINUX_MBR_TYPE = '83';
const LINUX_GPT_TYPE = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

interface Partition {
  number: number;
  start: number;
  size: number;
  type: string;
}

/**
 * The file systems that injection can use, in the order to try them: the whole disk's, or else
 * those of the Linux partitions in table order. `why` says what was found instead when none is.
 */
export async function findFileSystems(disk: string, timeoutMs: number): Promise<{ places: FileSystemPlace[]; why: string }> {
  const whole = await probe(disk, [], timeoutMs);
  if (whole.TYPE !== undefined) {
    if (WRITABLE_TYPES.has(whole.TYPE)) return { places: [{ type: whole.TYPE, offset: 0, partition: null }], why: '' };
    return { places: [], why: `the whole disk holds a ${whole.TYPE} file system, and only ext2/3/4 can be written` };
  }
  if (whole.PTTYPE === undefined) return { places: [], why: 'neither a file system nor a partition table is on the disk' };
  const partitions = await partitionTable(disk, timeoutMs);
  const places: FileSystemPlace[] = [];
  const seen: string[] = [];
  for (const p of partitions.filter((x) => x.type.toUpperCase() === LINUX_MBR_TYPE || x.type.toUpperCase() === LINUX_GPT_TYPE)) {
    const found = await probe(disk, ['-O', String(p.start), '-S', String(p.size)], timeoutMs);
    seen.push(`partition ${p.number}: ${found.TYPE ?? 'no file system'}`);
    if (found.TYPE !== undefined && WRITABLE_TYPES.has(found.TYPE)) places.push({ type: found.TYPE, offset: p.start, partition: p.number });
  }
  if (places.length > 0) return { places, why: '' };
  const what = seen.length > 0 ? seen.join(', ') : `no Linux partition among ${partitions.length}`;
  return { places: [], why: `${whole.PTTYPE} partition table with ${what}` };
}

/** blkid's low-level probe of the disk (or of a range of it): its KEY=value lines. */
async function probe(disk: string, range: string[], timeoutMs: number): Promise<Record<string, string>> {
  try {
    const { stdout } = await runCommand('blkid', ['-p', '-o', 'export', ...range, disk], { timeoutMs });
    return Object.fromEntries(
      stdout
        .split('\n')
        .map((line) => /^([A-Z_]+)=(.*)$/.exec(line))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => [m[1]!, m[2]!]),
    );
  } catch (error) {
    // exit code 2: nothing recognised
    if (error instanceof CommandError && error.exitCode === 2) return {};
    throw error;
  }
}

/** The partitions (start and size in bytes) of the disk's table, as sfdisk reads it. */
async function partitionTable(disk: string, timeoutMs: number): Promise<Partition[]> {
  const { stdout } = await runCommand('sfdisk', ['--json', disk], { timeoutMs });
  const table = (JSON.parse(stdout) as { partitiontable?: { sectorsize?: number; partitions?: unknown[] } }).partitiontable;
  const sector = table?.sectorsize ?? 512;
  return (table?.partitions ?? []).map((entry, index) => {
    const p = entry as { node?: string; start?: number; size?: number; type?: string };
    // the number is the node name's (disk.img2): an MBR table may leave slots empty
    const number = Number(/(\d+)$/.exec(p.node ?? '')?.[1] ?? index + 1);
    return { number, start: (p.start ?? 0) * sector, size: (p.size ?? 0) * sector, type: String(p.type ?? '') };
  });
}
