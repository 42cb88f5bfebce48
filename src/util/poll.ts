// Waiting for something the daemon can only look at, not be told of: a guest's console or ready
// file. One loop, so every wait gives up the same way.

export interface PollOptions {
  readonly timeoutMs: number;
  /** Between looks; default 250 ms. */
  readonly pollMs?: number;
  /**
   * Whether what is awaited can no longer come (a guest that stopped); asked every `goneEvery`
   * looks, since it is dearer than a look.
   */
  readonly gone?: () => Promise<boolean>;
  readonly goneEvery?: number;
}

/** Looks until `seen` says yes (true), the time is up or `gone` says so (false). */
export async function pollUntil(seen: () => Promise<boolean>, opts: PollOptions): Promise<boolean> {
  const deadline = Date.now() + opts.timeoutMs;
  const pollMs = opts.pollMs ?? 250;
  const goneEvery = opts.goneEvery ?? 8;
  let looks = 0;
  for (;;) {
    if (await seen()) return true;
    if (Date.now() >= deadline) return false;
    if (opts.gone && ++looks % goneEvery === 0 && (await opts.gone())) return false;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
