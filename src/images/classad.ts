// The cache's contents as one HTCondor ClassAd attribute, for a scheduler that prefers nodes that
// already hold a job's image (a RANK on it saves the download). The attribute and its form are
// Condor Cloud's: a startd cron script prints `CACHED_IMAGES = "name1,name2"`, and a job's RANK
// matches its image's name in that list (e.g. with stringListMember).

/** The attribute Condor Cloud's RANK expressions read. */
export const CACHED_IMAGES_ATTRIBUTE = 'CACHED_IMAGES';

// A comma would split one name into two list members, and a line break would end the attribute
// line early; neither can be written so that the scheduler reads the name back.
// eslint-disable-next-line no-control-regex
const UNLISTABLE = /[,\u0000-\u001f\u007f]/;

/** `text` as a ClassAd string literal: in double quotes, with backslash and double quote escaped. */
export function classadString(text: string): string {
  return `"${text.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/**
 * The line `CACHED_IMAGES = "a,b"` (without a line break) for the names of the cached entries,
 * sorted by code unit and without duplicates, so that the same cache always gives the same line;
 * `CACHED_IMAGES = ""` for an empty cache. Throws RangeError naming a name that a comma-separated
 * list cannot hold (a comma, a control character, or the empty name); the cache's own name rule
 * allows none of these.
 */
export function cachedImagesClassad(names: readonly string[]): string {
  for (const name of names) {
    if (name === '' || UNLISTABLE.test(name)) {
      throw new RangeError(`image name ${JSON.stringify(name)} cannot be a member of ${CACHED_IMAGES_ATTRIBUTE} (empty, or a comma or control character in it)`);
    }
  }
  const sorted = [...new Set(names)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return `${CACHED_IMAGES_ATTRIBUTE} = ${classadString(sorted.join(','))}`;
}
