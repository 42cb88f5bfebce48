// Events that a peer can repeat at will (a client in a loop refused again and again) are logged
// the first time and then at most once per window for each key, with how many went unlogged in
// between: the operator still learns who and how often, and the log does not fill up.

export type Admission = { readonly log: true; readonly repeats: number } | { readonly log: false };

export interface LogLimiter {
  /** Whether an event of `key` is logged now; when it is, how many of that key were not since the last. */
  admit(key: string): Admission;
}

export function logLimiter(options: { windowMs: number; now: () => number; maxKeys?: number }): LogLimiter {
  const maxKeys = options.maxKeys ?? 1024;
  const seen = new Map<string, { loggedAt: number; repeats: number }>();
  return {
    admit(key) {
      const at = options.now();
      const entry = seen.get(key);
      if (entry && at - entry.loggedAt < options.windowMs) {
        entry.repeats++;
        return { log: false };
      }
      const repeats = entry?.repeats ?? 0;
      // Most recently logged last: when the table is full the key logged longest ago goes first,
      // so many distinct keys cost memory up to the bound and, at worst, a line each.
      seen.delete(key);
      if (seen.size >= maxKeys) seen.delete(seen.keys().next().value!);
      seen.set(key, { loggedAt: at, repeats: 0 });
      return { log: true, repeats };
    },
  };
}
