// One read shared by every caller that asks in the same turn of the event loop. The read starts
// after that turn, so whatever existed when a caller asked is in its answer (a process that was
// running, a connection that was accepted); a caller that asks once the read has started waits
// for the next one. Many callers at once (a batch of destroys, a burst of new connections) then
// cost one read where one each would read the same table over and over.

/** `read`, shared as above. */
export function sharedRead<T>(read: () => Promise<T>): () => Promise<T> {
  // The read that has not started yet: whoever asks now joins it.
  let next: Promise<T> | null = null;
  return () => {
    next ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      next = null; // started: later callers need a later read
      return read();
    });
    return next;
  };
}
