// How errors are described and classed, once for the whole daemon.

/** The message of anything thrown: an Error's message, or the value as text. */
export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * A failure that doing the same again cannot mend: the input is wrong (a qemu sliver without a disk
 * image or kernel, an impossible size, an image that is not in the cache). The supervisor parks the
 * account as failed with the reason until its spec changes, instead of retrying. Anything else
 * thrown is recoverable: retried with backoff.
 */
export class PermanentError extends Error {
  override readonly name = 'PermanentError';
}

export function isPermanent(error: unknown): boolean {
  return error instanceof PermanentError;
}
