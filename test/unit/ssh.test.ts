// The ssh gateway's pure parts: who may log in with which key (from the records), the login
// environment, and the host key's fingerprint as OpenSSH prints it.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NodeDatabase } from '../../src/db/types.js';
import { keyAllowed, keyBlob, loginTarget } from '../../src/ssh/authorized.js';
import { fingerprintOfLine, generateKeyPair, loadOrCreateHostKey, savedHostKeyFingerprint } from '../../src/ssh/host-key.js';
import { acceptedClientVariable, sessionArgv, sshLoginEnvironment } from '../../src/ssh/sessions.js';

const publicLine = (comment: string) => {
  const pair = generateKeyPair(comment);
  return pair.public.trim();
};
const alice = publicLine('alice@example.org');
const bob = publicLine('bob@example.org');
const ctl = publicLine('ctl@example.org');

const database = (enabled = 1) => ({
  records: {
    sliver_pl_web: { record_key: 'sliver_pl_web', type: 'sliver', name: 'pl_web', keys: [alice, 'not a key at all'], rspec: { enabled } },
    delegate_pl_ctl: { record_key: 'delegate_pl_ctl', type: 'delegate', name: 'pl_ctl', keys: [ctl] },
  },
  accounts: {},
}) as unknown as NodeDatabase;

test('a sliver logs in with its users\' keys, a delegate with its own; other names and keys are nobody\'s', (t) => {
  const web = loginTarget(database(), 'pl_web')!;
  t.is(web.kind, 'sliver');
  t.true(keyAllowed(web, keyBlob(alice)!));
  t.false(keyAllowed(web, keyBlob(bob)!));
  t.is(web.keys.length, 1, 'a line that is not a key is skipped');
  const delegate = loginTarget(database(), 'pl_ctl')!;
  t.is(delegate.kind, 'delegate');
  t.true(keyAllowed(delegate, keyBlob(ctl)!));
  t.false(keyAllowed(delegate, keyBlob(alice)!));
  t.is(loginTarget(database(), 'root'), null);
  t.is(loginTarget(database(), '__proto__'), null);
  t.false(loginTarget(database(0), 'pl_web')!.enabled, 'enabled=0: nobody logs in');
});

test('the login environment is a login\'s, with only LANG and LC_* taken from the client', (t) => {
  const account = { name: 'pl_web', uid: 70_001, gid: 70_001, home: '/home/pl_web', shell: '/bin/bash' };
  const env = sshLoginEnvironment(
    account, { clientAddress: '192.0.2.7', clientPort: 50_000, serverAddress: '0.0.0.0', serverPort: 2222 },
    new Map([['LANG', 'de_DE.UTF-8'], ['LC_TIME', 'C'], ['LD_PRELOAD', '/tmp/evil.so'], ['PATH', '/tmp']]),
    { term: 'xterm-256color', cols: 80, rows: 24 },
  );
  t.like(env, { HOME: '/home/pl_web', USER: 'pl_web', LOGNAME: 'pl_web', SHELL: '/bin/bash', LANG: 'de_DE.UTF-8', LC_TIME: 'C', TERM: 'xterm-256color' });
  t.is(env['LD_PRELOAD'], undefined);
  t.false(env['PATH']!.includes('/tmp'));
  t.is(env['SSH_CONNECTION'], '192.0.2.7 50000 0.0.0.0 2222');
  t.false(acceptedClientVariable('LC_'));
  t.deepEqual(sessionArgv(account, null), ['/bin/bash', '-l']);
  t.deepEqual(sessionArgv(account, 'id -u'), ['/bin/bash', '-c', 'id -u']);
});

test('the host key is made once and kept; its fingerprint is the one ssh-keygen prints', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-hostkey-'));
  const first = await loadOrCreateHostKey(dir);
  t.true(first.created);
  const again = await loadOrCreateHostKey(dir);
  t.false(again.created);
  t.is(again.fingerprint, first.fingerprint);
  t.is(await savedHostKeyFingerprint(dir), first.fingerprint);
  const printed = execFileSync('ssh-keygen', ['-lf', `${first.path}.pub`], { encoding: 'utf8' });
  t.is(/SHA256:\S+/.exec(printed)![0], first.fingerprint);
  t.is(fingerprintOfLine(await readFile(`${first.path}.pub`, 'utf8')), first.fingerprint);
  t.is((await stat(first.path)).mode & 0o777, 0o600, 'the private key is readable by root alone');
});

test('every generated key pair parses (ssh2\'s generator alone makes a malformed 31-byte key now and then)', (t) => {
  for (let i = 0; i < 400; i++) {
    const pair = generateKeyPair(`k${i}@test`);
    const blob = keyBlob(pair.public);
    t.truthy(blob, pair.public);
    t.is(blob!.length, 51, 'an ed25519 blob: 4+11 bytes of type, 4+32 of key');
  }
});
