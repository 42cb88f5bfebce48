// When the next coalesced write of the database is due. Each write validates and encodes the whole
// file: with 10,000 slivers that is 12 MB and a few hundred milliseconds, and while thousands of
// accounts report their progress the writes ran back to back and took a fifth of the daemon's CPU.
// So a write also waits, after the last one ended, a few times as long as that one took: a small
// database is written as before (its writes take milliseconds), a large one at most a fifth of the
// time. A flush (an API change being acknowledged, the daemon stopping) does not wait for either.

/** A write waits this many times the last write's duration after it ended. */
export const WRITE_SPACING = 4;

export interface LastWrite {
  /** When it ended (ms since the epoch); 0 before the first. */
  readonly endedAt: number;
  readonly durationMs: number;
}

/** Milliseconds from `now` until the next write is due (0 or less: now). */
export function nextWriteDelay(now: number, firstUnwrittenAt: number, coalesceMs: number, last: LastWrite): number {
  return Math.max(firstUnwrittenAt + coalesceMs, last.endedAt + WRITE_SPACING * last.durationMs) - now;
}
