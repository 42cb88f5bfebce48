// One log line per event: time, level, message, then key=value context (or one JSON object). Under
// systemd, lines go to stdout with a syslog priority prefix and no timestamp of our own.
import type { Writable } from 'node:stream';
import winston from 'winston';
import { ReopenableFileTransport } from './log-file.js';
import { formatContext, formatLine, journalLine, underSystemd, type LogContext, type LogEvent, type LogFormat } from './log-lines.js';

export { formatContext, type LogContext, type LogFormat } from './log-lines.js';

export interface Logger {
  debug(message: string, context?: LogContext): void;
  info(message: string, context?: LogContext): void;
  warn(message: string, context?: LogContext): void;
  error(message: string, context?: LogContext): void;
}

/** The daemon's logger: a Logger whose file can be reopened after a rotation, and closed. */
export interface DaemonLogger extends Logger {
  /** Reopens the log file by its name (after logrotate renamed it); nothing without a file. */
  reopen(): void;
  close(): void;
}

export interface LoggerOptions {
  level?: string;
  /** Also append to this file. */
  file?: string | null;
  /** Write to the console (the default); tests and the CLI may turn it off. */
  console?: boolean;
  /** text (the default) or json, for the file and the console alike. */
  format?: LogFormat;
  /** The journald form on the console: true, false, or (the default) whether we run under systemd. */
  journal?: boolean;
  /** Where the console lines go; default stdout under journald, else stderr. For tests. */
  stream?: Writable;
}

function eventOf(info: winston.Logform.TransformableInfo): LogEvent {
  const { level, message, timestamp, context } = info as { level: string; message: string; timestamp?: string; context?: LogContext };
  return { time: timestamp, level, message: String(message), context };
}

export function createLogger(options: LoggerOptions = {}): DaemonLogger {
  const format = options.format ?? 'text';
  const journal = options.journal ?? underSystemd();
  const transports: winston.transport[] = [];
  if (options.console !== false) {
    const stream = options.stream ?? (journal ? process.stdout : process.stderr);
    const lineFormat = journal
      ? winston.format.printf((info) => journalLine(format, eventOf(info)))
      : winston.format.printf((info) => formatLine(format, eventOf(info)));
    transports.push(new winston.transports.Stream({ stream, format: lineFormat, eol: '\n' }));
  }
  // Under systemd the file is written too: it is the complete record, with our own timestamps,
  // rotated by the shipped logrotate configuration, where the journal may be volatile (no
  // /var/log/journal) and drops lines beyond its rate limit (RateLimitBurst) during a busy sync.
  // The journal copy is what `systemctl status` and `journalctl -u nodemgr -p warn` show.
  const file = options.file ? new ReopenableFileTransport(options.file, winston.format.printf((info) => formatLine(format, eventOf(info)))) : null;
  if (file) transports.push(file);
  const w = winston.createLogger({
    level: options.level ?? 'info',
    format: winston.format.timestamp(),
    transports,
    silent: transports.length === 0,
  });
  // The level is fixed when the logger is made: a line below it (a debug line on every API call)
  // costs one call of a function that does nothing.
  const at = (level: string) => {
    if (!w.isLevelEnabled(level)) return () => undefined;
    return (message: string, context?: LogContext) => void w.log(level, message, context ? { context } : {});
  };
  return {
    debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'),
    reopen: () => file?.reopen(),
    close: () => file?.close(),
  };
}

/** A logger that keeps lines in memory, for tests that assert what an operator would read. */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const at = (level: string) => (message: string, context?: LogContext) => {
    lines.push(`${level} ${message}${context ? ' ' + formatContext(context) : ''}`);
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
