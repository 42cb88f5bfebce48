// Loading the configuration: reading the file, its `key = value` lines with `#` comments, the
// defaults for every key not set, and one ConfigError naming the file, the line, the key and the
// reason for anything that cannot be used.
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { describeError } from '../util/errors.js';
import { brokenRule, type Origin } from './rules.js';
import { KEYS, keyNamed, type Config } from './schema.js';
import { got, ValueError } from './values.js';

/** A configuration that cannot be used; the message names the file, the line, the key and the reason. */
export class ConfigError extends Error {
  readonly file: string | null;
  readonly line: number | null;
  readonly key: string | null;
  readonly reason: string;

  constructor(reason: string, where: { file?: string | null; line?: number | null; key?: string | null } = {}) {
    const file = where.file ?? null;
    const line = where.line ?? null;
    const key = where.key ?? null;
    const place = [file, line === null ? null : `line ${line}`].filter((p) => p !== null).join(' ');
    const head = [place === '' ? null : place, key].filter((p) => p !== null).join(': ');
    super(head === '' ? reason : `${head}: ${reason}`);
    this.name = 'ConfigError';
    this.file = file;
    this.line = line;
    this.key = key;
    this.reason = reason;
  }
}

/** What the file set: key -> the value's text and its line. */
type Settings = ReadonlyMap<string, { text: string; line: number }>;

/** Close key names for "did you mean": edit distance of at most a third of the name, or containment. */
function suggestion(unknown: string): string | null {
  const name = unknown.toLowerCase().replace(/-/g, '_');
  let best: { key: string; distance: number } | null = null;
  for (const { key: candidate } of KEYS) {
    const distance = candidate === name ? 0 : editDistance(name, candidate);
    const close = distance <= Math.max(2, Math.floor(candidate.length / 3))
      || (name.length >= 4 && (candidate.includes(name) || name.includes(candidate)));
    if (close && (best === null || distance < best.distance)) best = { key: candidate, distance };
  }
  return best?.key ?? null;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** Builds the configuration: values from `set`, the defaults for the rest, then the cross-key rules. */
function build(set: Settings, file: string | null, baseDir: string): Config {
  const config = { configFile: file === null ? null : resolve(file) } as Config;
  for (const d of KEYS) {
    const given = set.get(d.key);
    if (given === undefined) {
      d.setDefault(config);
      continue;
    }
    try {
      d.setFromText(config, given.text, baseDir);
    } catch (error) {
      if (!(error instanceof ValueError)) throw error;
      throw new ConfigError(error.message, { file, line: given.line, key: d.key });
    }
  }
  const from: Origin = (k, value) => {
    const given = set.get(k);
    return `${k} = ${value} (${given === undefined ? 'default' : `line ${given.line}`})`;
  };
  const broken = brokenRule(config, from);
  if (broken !== null) {
    const { rule, reason } = broken;
    const lines = rule.keys.flatMap((k) => {
      const given = set.get(k);
      return given === undefined ? [] : [{ key: k, line: given.line }];
    });
    const last = lines.sort((x, y) => y.line - x.line)[0];
    throw new ConfigError(reason, { file, line: last?.line ?? null, key: last?.key ?? rule.keys[0] ?? null });
  }
  return config;
}

/** The configuration when no file is given: every key at its default. */
export function defaultConfig(): Config {
  return build(new Map(), null, '/');
}

/**
 * Parses the text of a configuration file. `file` names it in messages, and relative paths in
 * values are resolved against its directory; nothing is read from disk.
 */
export function parseConfig(text: string, file: string): Config {
  const set = new Map<string, { text: string; line: number }>();
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = index + 1;
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const eq = trimmed.indexOf('=');
    const name = (eq < 0 ? trimmed : trimmed.slice(0, eq)).trim();
    if (eq < 0 || !/^[A-Za-z0-9_.-]+$/.test(name)) {
      throw new ConfigError(`expected "key = value", got ${got(trimmed)}`, { file, line });
    }
    // A comment after a value starts with "#" after white space, so a "#" inside a URL stays.
    const value = trimmed.slice(eq + 1).replace(/(^|\s)#.*$/, '').trim();
    if (keyNamed(name) === undefined) {
      const close = suggestion(name);
      throw new ConfigError(`unknown key${close === null ? '' : ` (did you mean ${close}?)`}`, { file, line, key: name });
    }
    const first = set.get(name);
    if (first !== undefined) {
      throw new ConfigError(`set again; it was first set on line ${first.line} and a key may be set only once`, { file, line, key: name });
    }
    if (/^(["']).*\1$/.test(value)) {
      throw new ConfigError(`values are written without quotes, got ${got(value)}`, { file, line, key: name });
    }
    set.set(name, { text: value, line });
  });
  return build(set, file, dirname(resolve(file)));
}

/**
 * Reads the configuration from `file`; with null, from the file that $NODEMGR_CONFIG names, or
 * the defaults alone when it is unset or empty. A file that is named but cannot be read is an error.
 */
export async function loadConfig(file: string | null): Promise<Config> {
  if (file === '') throw new ConfigError('the configuration file name is empty');
  const fromEnv = file === null;
  const name = file ?? process.env['NODEMGR_CONFIG'] ?? '';
  if (name === '') return defaultConfig();
  let text: string;
  try {
    text = await readFile(name, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file'
      : code === 'EISDIR' ? 'is a directory, not a configuration file'
        : code === 'EACCES' ? 'permission denied'
          : `cannot be read (${describeError(error)})`;
    throw new ConfigError(`${why}${fromEnv ? ' (named by NODEMGR_CONFIG)' : ''}`, { file: name });
  }
  return parseConfig(text, name);
}
