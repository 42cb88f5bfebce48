// Waiting for a condition instead of sleeping for a while: a test goes on as soon as what it
// waits for is observable, and a slow host makes it slower, not wrong.

export interface WaitOptions {
  /** How long to poll before giving up (default 60 s). */
  readonly timeoutMs?: number;
  /** Between two checks (default 100 ms). */
  readonly intervalMs?: number;
}

/**
 * Polls `check` until it returns a truthy value (which is returned) or the time runs out (then
 * throws with `what` and the last error `check` threw). A check that throws is tried again.
 * `what` may be a function: it is asked only on a timeout, so it can describe the state then.
 */
export async function waitFor<T>(
  what: string | (() => string | Promise<string>),
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  options: number | WaitOptions = {},
): Promise<T> {
  const { timeoutMs = 60_000, intervalMs = 100 } = typeof options === 'number' ? { timeoutMs: options } : options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const described = typeof what === 'string' ? what : await what();
      throw new Error(`timed out waiting for ${described}${lastError ? `: ${String(lastError)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
