// How one log event becomes one line: the text format, the JSON format, and the journald form of
// either (a syslog priority prefix, no timestamp of our own). Pure functions, no I/O.
import { fstatSync } from 'node:fs';

export type LogValue = string | number | boolean | null | undefined;
export type LogContext = Record<string, LogValue>;
export type LogFormat = 'text' | 'json';

/** One event, as the formats see it. */
export interface LogEvent {
  /** ISO 8601; absent when the destination stamps lines itself (journald). */
  time?: string;
  level: string;
  message: string;
  context?: LogContext;
}

/** sd-daemon(3)'s priorities, which journald reads from the start of each line on stdout/stderr. */
export const SYSLOG_PRIORITY: Readonly<Record<string, number>> = { error: 3, warn: 4, info: 6, debug: 7 };

// DEL and the C1 controls, and the two Unicode line separators, which JSON.stringify leaves raw.
// eslint-disable-next-line no-control-regex
const RAW_AFTER_JSON = /[\u007f-\u009f\u2028\u2029]/g;
const escapeRest = (json: string) => json.replace(RAW_AFTER_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** Renders a context value so that a line stays one line and splits unambiguously on spaces. */
function renderValue(value: LogValue): string {
  if (value === null || value === undefined) return '-';
  const text = String(value);
  // Control characters (from a document or a request) are escaped, never written raw.
  // eslint-disable-next-line no-control-regex
  if (/^[^\s"=\u0000-\u001f\u007f-\u009f\u2028\u2029]+$/.test(text)) return text;
  // JSON escapes C0 controls itself; DEL, the C1 controls and the line separators, here.
  return escapeRest(JSON.stringify(text));
}

export function formatContext(context: LogContext): string {
  return Object.entries(context)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${renderValue(v)}`)
    .join(' ');
}

/** `<time> <level> <message> key=value…`; without a time, `<level> <message> key=value…`. */
export function textLine(event: LogEvent): string {
  const rest = event.context ? formatContext(event.context) : '';
  const head = event.time === undefined ? `${event.level} ${event.message}` : `${event.time} ${event.level} ${event.message}`;
  return rest ? `${head} ${rest}` : head;
}

/** The keys the JSON format owns; a context key equal to one of them is written with this prefix. */
export const RESERVED_KEYS = ['time', 'level', 'message'] as const;
export const CLASH_PREFIX = 'ctx_';

/**
 * One JSON object: `time` (when stamped), `level`, `message`, then the context's keys. A context key
 * that would overwrite one of the three (or an earlier renamed key) is prefixed with `ctx_`, as
 * often as needed: `{"message": "x", "ctx_message": "from the context"}`. Undefined values are left
 * out, as in the text format; null stays null.
 */
export function jsonLine(event: LogEvent): string {
  const out: Record<string, LogValue> = {};
  if (event.time !== undefined) out.time = event.time;
  out.level = event.level;
  out.message = event.message;
  const taken = new Set<string>(RESERVED_KEYS);
  for (const [key, value] of Object.entries(event.context ?? {})) {
    if (value === undefined) continue;
    let name = key;
    while (taken.has(name)) name = CLASH_PREFIX + name;
    taken.add(name);
    out[name] = value;
  }
  return escapeRest(JSON.stringify(out));
}

export function formatLine(format: LogFormat, event: LogEvent): string {
  return format === 'json' ? jsonLine(event) : textLine(event);
}

/**
 * The journald form: `<priority>` then the line without a time (journald stamps each line). In the
 * text format the level word is left out too, as the priority carries it (`journalctl -p`); the
 * JSON object keeps its `level`, so that the object reads the same everywhere.
 */
export function journalLine(format: LogFormat, event: LogEvent): string {
  const priority = SYSLOG_PRIORITY[event.level] ?? 6;
  const { time: _time, ...unstamped } = event;
  if (format === 'json') return `<${priority}>${jsonLine(unstamped)}`;
  const rest = event.context ? formatContext(event.context) : '';
  return `<${priority}>${event.message}${rest ? ' ' + rest : ''}`;
}

/**
 * Whether this process runs as a systemd service: `JOURNAL_STREAM` (set when stdout or stderr is
 * connected to the journal; when it names a device and inode, they must be stdout's or stderr's,
 * else a parent's stream was inherited and the output has been redirected since) or `INVOCATION_ID`
 * (set for every unit's processes).
 */
export function underSystemd(env: NodeJS.ProcessEnv = process.env, fdIdentity: (fd: number) => string | null = identityOf): boolean {
  const stream = env.JOURNAL_STREAM;
  if (stream) {
    if (!/^\d+:\d+$/.test(stream)) return true;
    return stream === fdIdentity(1) || stream === fdIdentity(2);
  }
  return Boolean(env.INVOCATION_ID);
}

function identityOf(fd: number): string | null {
  try {
    const st = fstatSync(fd);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}
