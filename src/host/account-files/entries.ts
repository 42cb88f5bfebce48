// The four account files (passwd, shadow, group, gshadow) as text that is edited, not rebuilt:
// lines this daemon does not change (comments, NIS "+"/"-" lines, entries of other accounts, even
// malformed ones) are kept byte for byte and in place, as shadow-utils keeps them. Pure: no I/O.

/** The four files' texts; null for a file the host does not have (no shadow or gshadow file). */
export interface AccountFilesText {
  readonly passwd: string;
  readonly shadow: string | null;
  readonly group: string;
  readonly gshadow: string | null;
}

export type AccountFileName = keyof AccountFilesText;

export const ACCOUNT_FILE_NAMES: readonly AccountFileName[] = ['passwd', 'shadow', 'group', 'gshadow'];

/** The name an entry line is keyed by, or null for a line that is not an entry. */
export function entryName(line: string): string | null {
  if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) return null;
  const colon = line.indexOf(':');
  return colon > 0 ? line.slice(0, colon) : null;
}

/** The file's lines without the final newline's empty tail. */
export function linesOf(text: string): string[] {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

/** Lines back into a file's text, every line (the last too) ended by a newline. */
export function textOf(lines: readonly string[]): string {
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** Names that have more than one entry line in the file (a file no tool should write to as is). */
export function duplicateNames(text: string): string[] {
  const seen = new Set<string>();
  const duplicates = new Set<string>();
  for (const line of linesOf(text)) {
    const name = entryName(line);
    if (name === null) continue;
    if (seen.has(name)) duplicates.add(name);
    seen.add(name);
  }
  return [...duplicates];
}

/** The text with the entries of `removed` dropped and `added` lines appended after the rest. */
export function editEntries(text: string, removed: ReadonlySet<string>, added: readonly string[]): string {
  const kept = removed.size === 0 ? linesOf(text) : linesOf(text).filter((line) => {
    const name = entryName(line);
    return name === null || !removed.has(name);
  });
  return textOf([...kept, ...added]);
}

/** The text with each entry line that `edit` answers for replaced in place (null: kept as it is). */
export function replaceEntries(text: string, edit: (name: string, line: string) => string | null): string {
  return textOf(linesOf(text).map((line) => {
    const name = entryName(line);
    return name === null ? line : (edit(name, line) ?? line);
  }));
}

/** A field value that cannot break the file's format: no ":" (the separator) and no line break. */
export function invalidField(value: string): string | null {
  if (/[:\n\r]/.test(value)) return 'contains ":" or a line break';
  return null;
}
