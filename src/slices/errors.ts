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

/**
 * A document of another format (a job description, a cluster description) refused at an element:
 * where (line, column, element) and why. Each format's error extends it with its own name.
 */
export class ElementError extends Error {
  constructor(
    message: string,
    /** 1-based line, or null when the fault is not at a place (e.g. the size). */
    readonly line: number | null,
    /** 1-based column in UTF-16 code units, or null. */
    readonly column: number | null,
    /** The element as written in the document, or "document". */
    readonly element: string,
    /** The reason alone, without source and place. */
    readonly reason: string,
  ) {
    super(message);
  }
}

/** A refusal at an element of a parsed tree, placed by the parser's top (elementErrorAt). */
export class Refusal<E> extends Error {
  constructor(readonly element: E, readonly why: string) {
    super(why);
  }
}

/** An ElementError of class `kind` at `index` of `text`: "<source> line L column C: <element>: <why>". */
export function elementErrorAt<T extends ElementError>(
  kind: new (message: string, line: number | null, column: number | null, element: string, reason: string) => T,
  source: string, text: string, index: number, element: string, why: string,
): T {
  const { line, column } = locate(text, index);
  return new kind(`${source} line ${line} column ${column}: ${element}: ${why}`, line, column, element, why);
}
