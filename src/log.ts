// One log line per event: time, level, message, then key=value context.
import winston from 'winston';

export type LogContext = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  debug(message: string, context?: LogContext): void;
  info(message: string, context?: LogContext): void;
  warn(message: string, context?: LogContext): void;
  error(message: string, context?: LogContext): void;
}

/** Renders a context value so that a line stays one line and splits unambiguously on spaces. */
function renderValue(value: string | number | boolean | null | undefined): string {
  if (value === null || value === undefined) return '-';
  const text = String(value);
  // Control characters (from a document or a request) are escaped, never written raw.
  // eslint-disable-next-line no-control-regex
  if (/^[^\s"=\u0000-\u001f\u007f-\u009f]+$/.test(text)) return text;
  // JSON escapes C0 controls itself; DEL and the C1 controls too, here.
  return JSON.stringify(text).replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function formatContext(context: LogContext): string {
  return Object.entries(context)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${renderValue(v)}`)
    .join(' ');
}

const lineFormat = winston.format.printf((info) => {
  const { level, message, timestamp, context } = info as {
    level: string;
    message: string;
    timestamp: string;
    context?: LogContext;
  };
  const rest = context ? formatContext(context) : '';
  return `${timestamp} ${level} ${message}${rest ? ' ' + rest : ''}`;
});

export interface LoggerOptions {
  level?: string;
  /** Also append to this file. */
  file?: string | null;
  /** Write to stderr (the default); tests and the CLI may turn it off. */
  console?: boolean;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const transports: winston.transport[] = [];
  if (options.console !== false) {
    transports.push(new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] }));
  }
  if (options.file) transports.push(new winston.transports.File({ filename: options.file }));
  const w = winston.createLogger({
    level: options.level ?? 'info',
    format: winston.format.combine(winston.format.timestamp(), lineFormat),
    transports,
    silent: transports.length === 0,
  });
  const at = (level: string) => (message: string, context?: LogContext) => {
    // Checked first: a debug line on every API call must cost nothing when debug is off.
    if (!w.isLevelEnabled(level)) return;
    w.log(level, message, context ? { context } : {});
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** A logger that keeps lines in memory, for tests that assert what an operator would read. */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const at = (level: string) => (message: string, context?: LogContext) => {
    lines.push(`${level} ${message}${context ? ' ' + formatContext(context) : ''}`);
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
