// The small validators of JSON read from disk: each checks one value at a field path and returns it
// typed, or throws DatabaseFormatError naming the path and what was expected.

export class DatabaseFormatError extends Error {
  constructor(
    /** Path of the offending field, e.g. `records.sliver_x.keys[2]`; empty for the whole value. */
    readonly field: string,
    readonly reason: string,
  ) {
    super(field ? `${field}: ${reason}` : reason);
    this.name = 'DatabaseFormatError';
  }
}

export type Fields<T> = Record<keyof T, true>;
export type Obj = Record<string, unknown>;

// ---- paths and messages

export function field(path: string, key: string): string {
  if (!/^[\w-]+$/.test(key)) return `${path}[${JSON.stringify(key)}]`;
  return path ? `${path}.${key}` : key;
}

export function shown(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  return String(value);
}

export function fail(path: string, expected: string, value: unknown): never {
  throw new DatabaseFormatError(path, `expected ${expected}, got ${shown(value)}`);
}

// ---- small validators: each checks one value at `path` and returns it typed

export function object(value: unknown, path: string, fields: Record<string, true>): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'an object', value);
  for (const key of Object.keys(value)) {
    if (!Object.hasOwn(fields, key)) throw new DatabaseFormatError(field(path, key), 'unexpected field');
  }
  return value as Obj;
}

export function dictionary<T>(value: unknown, path: string, each: (item: unknown, path: string, key: string) => T): Record<string, T> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'an object', value);
  // fromEntries defines own properties, so a key such as "__proto__" stays a plain key.
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, each(item, field(path, key), key)]));
}

export function array<T>(value: unknown, path: string, each: (item: unknown, path: string) => T): T[] {
  if (!Array.isArray(value)) fail(path, 'an array', value);
  return value.map((item, i) => each(item, `${path}[${i}]`));
}

export function integer(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) fail(path, 'integer', value);
  if (value < 0) fail(path, 'integer >= 0', value);
  return value;
}

export function string(value: unknown, path: string): string {
  if (typeof value !== 'string') fail(path, 'string', value);
  return value;
}

export function name(value: unknown, path: string): string {
  if (typeof value !== 'string' || value === '') fail(path, 'non-empty string', value);
  return value;
}

export function isoTime(value: unknown, path: string): string {
  if (typeof value !== 'string' || Number.isNaN(Date.parse(value))) fail(path, 'ISO time', value);
  return value;
}

export function nullable<T>(check: (value: unknown, path: string) => T): (value: unknown, path: string) => T | null {
  return (value, path) => (value === null ? null : check(value, path));
}

export function member<T extends string>(value: unknown, path: string, allowed: Record<T, true>): T {
  if (typeof value !== 'string' || !Object.hasOwn(allowed, value)) {
    fail(path, `one of ${Object.keys(allowed).join(', ')}`, value);
  }
  return value as T;
}

export function exactly<T extends string | number>(value: unknown, path: string, expected: T, why = ''): T {
  if (value !== expected) fail(path, `${JSON.stringify(expected)}${why}`, value);
  return expected;
}

export function isNull(value: unknown, path: string): null {
  if (value !== null) fail(path, 'null', value);
  return null;
}


export function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') fail(path, 'true or false', value);
  return value;
}

export const optionalInteger = nullable(integer);
export const optionalString = nullable(string);
