// The benches' middle figure: of several runs, the one in the middle (the upper one of an even
// count), so that a figure is always one that was measured.

/** The item in the middle when ordered by `value`; undefined when there are none. */
export function medianBy<T>(items: readonly T[], value: (item: T) => number): T | undefined {
  return [...items].sort((x, y) => value(x) - value(y))[Math.floor(items.length / 2)];
}

/** The middle value; NaN when there are none. */
export function median(values: readonly number[]): number {
  return medianBy(values, (v) => v) ?? NaN;
}

/**
 * The measured value at quantile `q` (0 the least, 1 the most; 0.5 the same as median): the
 * nearest one, never one between two; NaN when there are none.
 */
export function quantile(values: readonly number[], q: number): number {
  return [...values].sort((x, y) => x - y)[Math.round(q * (values.length - 1))] ?? NaN;
}
