// A seeded pseudo-random generator (xorshift32) for the fuzzers: the same seed gives the same
// inputs, so a failure found once can be replayed.

/** Numbers in [0, 1) from `seed`. */
export function seededRandom(seed: number): () => number {
  let state = (seed ^ 0x9e3779b9) >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}
