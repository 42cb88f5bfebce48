// The log formats as an operator's tools read them back: text, JSON lines, the journald form, and
// the file across a logrotate rename and reopen.
import test from 'ava';
import { mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { defaultConfig } from '../../src/config/config.js';
import { packageRoot } from '../../src/config/package-root.js';
import { createLogger } from '../../src/log.js';
import { jsonLine, journalLine, SYSLOG_PRIORITY, textLine, underSystemd } from '../../src/log-lines.js';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

function collector(): { stream: Writable; lines: () => string[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString('utf8'));
      callback();
    },
  });
  return { stream, lines: () => chunks.join('').split('\n').filter((l) => l !== '') };
}

test('a JSON line parses back to time, level, message and the context', (t) => {
  const line = jsonLine({ time: '2026-01-02T03:04:05.006Z', level: 'warn', message: 'fetch failed', context: { url: 'http://a b', tries: 3, ok: false, none: null, gone: undefined } });
  t.false(line.includes('\n'));
  t.deepEqual(JSON.parse(line), { time: '2026-01-02T03:04:05.006Z', level: 'warn', message: 'fetch failed', url: 'http://a b', tries: 3, ok: false, none: null });
});

test('JSON context keys never overwrite time, level or message: they are prefixed with ctx_', (t) => {
  const line = jsonLine({ time: 'T', level: 'info', message: 'm', context: { message: 'mine', level: 'x', time: 1, ctx_message: 'already' } });
  const parsed = JSON.parse(line) as Record<string, unknown>;
  t.is(parsed.time, 'T');
  t.is(parsed.level, 'info');
  t.is(parsed.message, 'm');
  t.is(parsed.ctx_level, 'x');
  t.is(parsed.ctx_time, 1);
  // Whichever comes first keeps ctx_message; the other goes one prefix further; nothing is lost.
  t.deepEqual([parsed.ctx_message, parsed.ctx_ctx_message].sort(), ['already', 'mine']);
});

test('JSON and text lines stay one line whatever the context holds', (t) => {
  const context = { doc: 'a\nb\u2028c\u0085d\re' };
  const json = jsonLine({ level: 'info', message: 'm', context });
  t.notRegex(json, /[\n\r\u2028\u0085]/);
  t.is((JSON.parse(json) as { doc: string }).doc, context.doc);
  t.notRegex(textLine({ level: 'info', message: 'm', context }), /[\n\r\u2028\u0085]/);
});

test('the journald form: the syslog priority of each level, no time, one line each', (t) => {
  t.deepEqual(SYSLOG_PRIORITY, { error: 3, warn: 4, info: 6, debug: 7 });
  const event = { time: '2026-01-02T03:04:05.006Z', message: 'sync done', context: { slivers: 2 } };
  for (const [level, priority] of [['error', 3], ['warn', 4], ['info', 6], ['debug', 7]] as const) {
    t.is(journalLine('text', { ...event, level }), `<${priority}>sync done slivers=2`);
    const json = journalLine('json', { ...event, level });
    t.true(json.startsWith(`<${priority}>{`));
    t.deepEqual(JSON.parse(json.slice(3)), { level, message: 'sync done', slivers: 2 });
  }
});

test('the daemon logger under journald writes priorities and no timestamp of its own', (t) => {
  const out = collector();
  const logger = createLogger({ level: 'debug', journal: true, stream: out.stream });
  logger.error('e', { a: 1 });
  logger.warn('w');
  logger.info('i');
  logger.debug('d');
  t.deepEqual(out.lines(), ['<3>e a=1', '<4>w', '<6>i', '<7>d']);
  const json = collector();
  const jsonLogger = createLogger({ level: 'info', journal: true, format: 'json', stream: json.stream });
  jsonLogger.info('hello', { time: 'mine' });
  const [line] = json.lines();
  t.true(line!.startsWith('<6>'));
  const parsed = JSON.parse(line!.slice(3)) as Record<string, unknown>;
  t.false('time' in parsed);
  t.deepEqual(parsed, { level: 'info', message: 'hello', ctx_time: 'mine' });
});

test('outside systemd the console lines are stamped, in text or JSON', (t) => {
  const text = collector();
  createLogger({ journal: false, stream: text.stream }).info('started', { pid: 7 });
  const [time, level, ...rest] = text.lines()[0]!.split(' ');
  t.regex(time!, ISO);
  t.is(level, 'info');
  t.deepEqual(rest, ['started', 'pid=7']);
  const json = collector();
  createLogger({ journal: false, format: 'json', stream: json.stream }).warn('late', { by: 2 });
  const parsed = JSON.parse(json.lines()[0]!) as Record<string, unknown>;
  t.regex(String(parsed.time), ISO);
  t.deepEqual({ ...parsed, time: 'T' }, { time: 'T', level: 'warn', message: 'late', by: 2 });
});

test('systemd is recognised by JOURNAL_STREAM on our stdout or stderr, or by INVOCATION_ID', (t) => {
  const ids = (fd: number) => (fd === 1 ? '8:1234' : fd === 2 ? '8:99' : null);
  t.true(underSystemd({ JOURNAL_STREAM: '8:1234' }, ids));
  t.true(underSystemd({ JOURNAL_STREAM: '8:99' }, ids));
  // Inherited from a parent whose output went to the journal, ours goes elsewhere.
  t.false(underSystemd({ JOURNAL_STREAM: '8:5555', INVOCATION_ID: 'abc' }, ids));
  t.true(underSystemd({ INVOCATION_ID: '0123456789abcdef' }, ids));
  t.false(underSystemd({}, ids));
});

test('the log file across a logrotate rename and reopen: earlier lines in the renamed file, later ones in the new, none lost or twice', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-log-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // log_dir need not exist yet: the logger makes it.
  const file = join(dir, 'log', 'nodemgr.log');
  const logger = createLogger({ console: false, file, format: 'json' });
  t.teardown(() => logger.close());
  for (let i = 0; i < 500; i++) logger.info('line', { n: i });
  await rename(file, `${file}.1`);
  // Written after the rename, before the reopen: still to the renamed file, as with logrotate.
  for (let i = 500; i < 600; i++) logger.info('line', { n: i });
  logger.reopen();
  for (let i = 600; i < 1000; i++) logger.info('line', { n: i });
  const numbers = async (path: string) =>
    (await readFile(path, 'utf8')).split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { n: number }).n);
  const before = await numbers(`${file}.1`);
  const after = await numbers(file);
  t.deepEqual(before, Array.from({ length: 600 }, (_, i) => i));
  t.deepEqual(after, Array.from({ length: 400 }, (_, i) => 600 + i));
});

test('the shipped logrotate configuration rotates the default log file daily, 14 kept, and signals only the main process', async (t) => {
  const text = await readFile(join(packageRoot(), 'etc', 'logrotate.d', 'nodemgr'), 'utf8');
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  t.is(lines[0], `${join(defaultConfig().logDir, 'nodemgr.log')} {`);
  for (const directive of ['daily', 'rotate 14', 'compress', 'delaycompress', 'missingok', 'notifempty', 'postrotate', 'endscript']) {
    t.true(lines.includes(directive), directive);
  }
  const script = lines.slice(lines.indexOf('postrotate') + 1, lines.indexOf('endscript'));
  t.is(script.length, 1);
  t.regex(script[0]!, /^systemctl kill --kill-whom=main --signal=USR1 nodemgr\.service\b/);
});
