// The one error a malformed authority document raises. Entries that are merely invalid (a bad
// slice, a bad key) do not raise it: they are skipped and reported, and the rest applies.

export class DocumentError extends Error {
  /** 1-based line of the offending input, or null when the fault is not at a place (e.g. size). */
  readonly line: number | null;
  /** 1-based column (in UTF-16 code units) of the offending input, or null. */
  readonly column: number | null;

  constructor(message: string, line: number | null = null, column: number | null = null) {
    super(message);
    this.name = 'DocumentError';
    this.line = line;
    this.column = column;
  }
}

/** Line and column (both 1-based) of `index` in `text`; CRLF and a lone CR end a line like LF. */
export function locate(text: string, index: number): { line: number; column: number } {
  const end = Math.min(Math.max(index, 0), text.length);
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 10 || (c === 13 && text.charCodeAt(i + 1) !== 10)) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: end - lineStart + 1 };
}

export function documentErrorAt(source: string, text: string, index: number, why: string): DocumentError {
  const { line, column } = locate(text, index);
  return new DocumentError(`${source} line ${line} column ${column}: ${why}`, line, column);
}
