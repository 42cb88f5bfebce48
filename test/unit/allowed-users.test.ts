// The allowed-users file (XenBEE's format): one certificate subject per line, "#" comment lines,
// blank lines; read again when it changes; a missing file allows nobody and is logged once.
import test from 'ava';
import { appendFile, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allowedUsersFile, parseAllowedUsers } from '../../src/api/allowed-users.js';
import { memoryLogger } from '../../src/log.js';

const XENBEE_SAMPLE = [
  '# allowed users of this node: one certificate subject per line',
  '/C=DE/ST=Rheinland-Pfalz/L=Kaiserslautern/O=Example/OU=Persons/CN=test user 1/emailAddress=t1@example.org',
  '',
  '   # an indented comment',
  '/OU=Persons/CN=test user 2   ',
  '\t/OU=Persons/CN=Team #3\r',
  'CN=test user 4,OU=Persons',
  '/OU=Persons/CN=test user 2',
  '',
].join('\n');

test('subjects are whole lines; comments, blank lines and white space around a line are not', (t) => {
  const { subjects, ignored } = parseAllowedUsers(XENBEE_SAMPLE);
  t.deepEqual([...subjects], [
    '/C=DE/ST=Rheinland-Pfalz/L=Kaiserslautern/O=Example/OU=Persons/CN=test user 1/emailAddress=t1@example.org',
    '/OU=Persons/CN=test user 2',
    '/OU=Persons/CN=Team #3',
  ]);
  t.deepEqual(ignored, [{ line: 7, reason: 'not a subject in OpenSSL\'s one-line form (/O=.../CN=...): "CN=test user 4,OU=Persons"' }]);
});

test('an empty file, or one of comments only, allows nobody', (t) => {
  t.is(parseAllowedUsers('').subjects.size, 0);
  t.is(parseAllowedUsers('\uFEFF# nobody yet\n\n#/OU=Persons/CN=commented out\n').subjects.size, 0);
});

async function scratch(t: import('ava').ExecutionContext) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-allowed-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const logger = memoryLogger();
  const path = join(dir, 'allowed-users');
  return { dir, path, logger, allowed: allowedUsersFile(path, logger) };
}

test('a missing file allows nobody, said once; once written it is read, and read again after each change', async (t) => {
  const { path, logger, allowed } = await scratch(t);
  const one = '/OU=Persons/CN=test user 1';
  const two = '/OU=Persons/CN=test user 2';
  t.false(await allowed.allows(one));
  t.false(await allowed.allows(two));
  t.deepEqual(logger.lines, [`warn allowed users file not read: no certificate caller is allowed file=${path} reason="no such file"`]);

  await writeFile(path, `# test users\n${one}\n`);
  t.true(await allowed.allows(one));
  t.false(await allowed.allows(two));
  // An append in the same instant as the write: the size tells.
  await appendFile(path, `${two}\n`);
  t.true(await allowed.allows(two));
  t.is(logger.lines.filter((l) => l.startsWith('info allowed users loaded')).length, 2, 'read once per version, not once per call');

  // An editor's save: a new file renamed over the old one, of the very same size.
  await writeFile(`${path}.new`, `# test users\n${one.replace('1', '3')}\n${two}\n`);
  await rename(`${path}.new`, path);
  t.false(await allowed.allows(one));
  t.true(await allowed.allows('/OU=Persons/CN=test user 3'));

  await rm(path);
  t.false(await allowed.allows(two));
  t.false(await allowed.allows(two));
  t.is(logger.lines.filter((l) => l.includes('no certificate caller is allowed')).length, 2, 'said again once it went missing again, once');
});

test('calls that arrive together share one read, and a line that cannot match is logged with its number', async (t) => {
  const { path, logger, allowed } = await scratch(t);
  await writeFile(path, XENBEE_SAMPLE);
  const answers = await Promise.all(Array.from({ length: 20 }, () => allowed.allows('/OU=Persons/CN=test user 2')));
  t.true(answers.every(Boolean));
  t.deepEqual(logger.lines, [
    `info allowed users loaded file=${path} subjects=3`,
    `warn allowed users line ignored file=${path} line=7 reason="not a subject in OpenSSL's one-line form (/O=.../CN=...): \\"CN=test user 4,OU=Persons\\""`,
  ]);
});

test('a path that is a directory allows nobody and says why', async (t) => {
  const { dir, logger } = await scratch(t);
  const allowed = allowedUsersFile(dir, logger);
  t.is((await allowed.subjects()).size, 0);
  t.regex(logger.lines.join('\n'), /no certificate caller is allowed file=\S+ reason="not a regular file"/);
});
