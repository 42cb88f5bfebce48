// Who may call what, through the method table: certificate callers (TLS) reach the user-level
// methods only when allowed_users lists them, and never a slice method; local users but nobody
// reach the user level; ownership of on-demand work is the owner's and root's.
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isKnown, isUser, mayManage } from '../../src/api/authorization.js';
import { ApiFault } from '../../src/api/faults.js';
import { describeCaller, ownerOf, UNIDENTIFIED, type Caller } from '../../src/api/identity.js';
import { createApiMethods } from '../../src/api/methods.js';
import { recordWriter } from '../../src/db/record-writer.js';
import { openDatabase } from '../../src/db/store.js';
import { openImageCache } from '../../src/images/cache.js';
import { memoryLogger } from '../../src/log.js';
import { delegateRecord, recordsOf, sliverRecord } from './support/records.js';

const ROOT: Caller = { uid: 0, kind: 'root', name: null };
const SLIVER: Caller = { uid: 70001, kind: 'sliver', name: 'pl_web' };
const DELEGATE: Caller = { uid: 70002, kind: 'delegate', name: 'pl_ctl' };
const LOCAL_USER: Caller = { uid: 1000, kind: 'nobody', name: null };
const NOBODY: Caller = { uid: 65534, kind: 'nobody', name: null };
const certificate = (subject: string): Caller => ({ uid: -1, kind: 'certificate', name: null, subject });
const LISTED_SUBJECT = '/OU=Persons/CN=test user 1';
const LISTED = certificate(LISTED_SUBJECT);
const UNLISTED = certificate('/OU=Persons/CN=test user 2');

/** Every method that acts on slices or the node's records, and root's changes of the image cache. */
const SLICE_METHODS = [
  'GetXIDs', 'GetSSHKeys', 'Create', 'Destroy', 'Start', 'Stop', 'ReCreate', 'GetEffectiveRSpec', 'GetRSpec', 'GetLoans',
  'SetLoans', 'GetRecord', 'GetSliverStatus', 'Ticket', 'AdminTicket', 'DumpDatabase', 'DeliverSlices', 'CreateSliver',
  'DeleteSliver', 'AddImage', 'RemoveImage',
];

async function node(
  t: ExecutionContext, allowed: readonly string[] | null = [LISTED_SUBJECT],
  { logger = memoryLogger(), now = () => new Date() }: { logger?: ReturnType<typeof memoryLogger>; now?: () => Date } = {},
) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-access-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { store } = await openDatabase({ path: join(dir, 'db.json'), lockPath: join(dir, 'db.lock'), logger });
  t.teardown(() => store.close());
  store.update((db) => ({
    ...db,
    ...recordsOf([sliverRecord('pl_web', { controllers: ['pl_ctl'] }), delegateRecord('pl_ctl')]),
    accounts: {
      pl_web: { name: 'pl_web', kind: 'sliver', state: 'running', reason: null, since: '2026-01-01T00:00:00.000Z', appliedHash: null, uid: 70001, attempts: 0 },
    },
  }));
  const images = await openImageCache({ dir: join(dir, 'images'), maxBytes: 1 << 20, inUse: () => new Set(), logger });
  t.teardown(() => images.close());
  const refuse = async (): Promise<never> => {
    throw new Error('a refused caller reached a method');
  };
  return createApiMethods({
    store, records: recordWriter(store, logger), logger, now, authorityDelegate: null, defaultRuntime: 'unix',
    converge: refuse, submit: refuse, observe: refuse, verifyTicket: () => refuse() as never, verifyPush: refuse, acceptDocument: refuse, images,
    ...(allowed === null ? {} : { allowedUsers: { path: '/etc/nodemgr/allowed-users', allows: async (subject: string) => allowed.includes(subject) } }),
  });
}

type Methods = Awaited<ReturnType<typeof node>>;

/** The fault a call ends with, or null when it answers. */
async function faultOf(methods: Methods, caller: Caller, method: string, args: unknown[] = []): Promise<{ code: number; message: string } | null> {
  try {
    await methods.call(caller, method, args);
    return null;
  } catch (error) {
    if (error instanceof ApiFault) return { code: error.code, message: error.message };
    throw error;
  }
}

/** Arguments of the right types for the longest signature of `method`, naming sliver `sliver`. */
async function argumentsFor(methods: Methods, method: string, sliver: string): Promise<unknown[]> {
  const signatures = (await methods.call(ROOT, 'system.methodSignature', [method])) as string[][];
  const types = signatures[signatures.length - 1]!.slice(1);
  const sample: Record<string, unknown> = { string: sliver, base64: Buffer.from(sliver), int: 1, array: [], struct: {}, boolean: true };
  return types.map((type) => sample[type]);
}

test('a subject that allowed_users does not list gets 108 naming it, whatever it calls', async (t) => {
  const methods = await node(t);
  for (const method of ['Help', 'system.listMethods', 'GetImages', 'GetRSpec', 'NoSuchMethod']) {
    t.deepEqual(await faultOf(methods, UNLISTED, method, method === 'GetRSpec' ? ['pl_web'] : []), {
      code: 108,
      message: "certificate /OU=Persons/CN=test user 2: Permission denied: the subject is not listed in the node's allowed users.",
    }, method);
  }
  t.is(await faultOf(methods, LISTED, 'Help'), null);
  t.is(await faultOf(methods, LISTED, 'system.listMethods'), null);
  t.deepEqual(await methods.call(LISTED, 'GetImages', []), []);
});

test('a refused subject is logged by name, then once per ten minutes with the count of refusals in between', async (t) => {
  const logger = memoryLogger();
  let clock = Date.parse('2026-01-01T00:00:00Z');
  const methods = await node(t, [LISTED_SUBJECT], { logger, now: () => new Date(clock) });
  const refusals = () => logger.lines.filter((line) => line.startsWith('warn api certificate refused'));
  for (let i = 0; i < 50; i++) t.is((await faultOf(methods, UNLISTED, 'GetImages'))?.code, 108);
  t.deepEqual(refusals(), [
    'warn api certificate refused: subject not in allowed users subject="/OU=Persons/CN=test user 2" method=GetImages refused_since_last=0 file=/etc/nodemgr/allowed-users',
  ]);
  // Another subject is named at once, whatever the first one does.
  await faultOf(methods, certificate('/OU=Persons/CN=test user 3'), 'Help');
  t.is(refusals().length, 2);
  t.regex(refusals()[1]!, /subject="\/OU=Persons\/CN=test user 3" method=Help refused_since_last=0/);
  clock += 10 * 60_000;
  await faultOf(methods, UNLISTED, 'Help');
  t.is(refusals().length, 3);
  t.regex(refusals()[2]!, /test user 2" method=Help refused_since_last=49 /);
  // The transport's line for each fault stays at debug for these: the fault is marked as logged.
  const fault = await methods.call(UNLISTED, 'Help', []).catch((error: unknown) => error);
  t.true(fault instanceof ApiFault && fault.logged);
  t.false(logger.lines.some((line) => line.startsWith('warn') && line.includes('test user 1')));
});

test('without an allowed-users list no certificate caller gets in', async (t) => {
  const methods = await node(t, null);
  t.is((await faultOf(methods, LISTED, 'Help'))?.code, 108);
});

test('every slice method refuses a listed certificate caller with 108, before looking the sliver up', async (t) => {
  const methods = await node(t);
  for (const method of SLICE_METHODS) {
    t.true(methods.names.includes(method), method);
    for (const sliver of ['pl_web', 'no_such_sliver']) {
      const fault = await faultOf(methods, LISTED, method, await argumentsFor(methods, method, sliver));
      t.deepEqual(fault, { code: 108, message: `certificate /OU=Persons/CN=test user 1: Permission denied for ${method}.` }, `${method}(${sliver})`);
    }
  }
  // The same calls as root get past the access check (whatever they then answer).
  t.not((await faultOf(methods, ROOT, 'GetRSpec', ['pl_web'])), { code: 108 });
});

test('the user level: root, slivers, delegates, local users and listed subjects; not nobody', async (t) => {
  const methods = await node(t);
  for (const caller of [ROOT, SLIVER, DELEGATE, LOCAL_USER, LISTED]) t.is(await faultOf(methods, caller, 'GetImages'), null, describeCaller(caller));
  for (const caller of [NOBODY, UNIDENTIFIED, UNLISTED]) t.is((await faultOf(methods, caller, 'GetImages'))?.code, 108, describeCaller(caller));
  // The known level stays what it was: a local user who is no account of the node is refused.
  t.is((await faultOf(methods, LOCAL_USER, 'GetXIDs'))?.code, 108);
  t.deepEqual(await methods.call(SLIVER, 'GetXIDs', []), { pl_web: 70001 });
  t.deepEqual(await methods.call(DELEGATE, 'GetXIDs', []), { pl_web: 70001 });
});

test('isUser and isKnown: a certificate caller is a user but never known; nobody is neither', (t) => {
  const users = [ROOT, SLIVER, DELEGATE, LOCAL_USER, LISTED, UNLISTED];
  for (const caller of users) t.true(isUser(caller), describeCaller(caller));
  for (const caller of [NOBODY, UNIDENTIFIED]) t.false(isUser(caller), describeCaller(caller));
  t.deepEqual([ROOT, SLIVER, DELEGATE, LOCAL_USER, NOBODY, LISTED].map(isKnown), [true, true, true, false, false, false]);
});

test('an owner is root, a uid or a certificate subject; only the owner or root manages', (t) => {
  t.is(ownerOf(ROOT), 'root');
  t.is(ownerOf(SLIVER), 'uid:70001');
  t.is(ownerOf(LOCAL_USER), 'uid:1000');
  t.is(ownerOf(LISTED), 'subject:/OU=Persons/CN=test user 1');
  t.true(mayManage(LISTED, ownerOf(LISTED)));
  t.false(mayManage(UNLISTED, ownerOf(LISTED)));
  t.false(mayManage(LOCAL_USER, ownerOf(SLIVER)));
  t.true(mayManage(ROOT, ownerOf(LISTED)));
  t.true(mayManage(ROOT, ownerOf(LOCAL_USER)));
  // A subject that happens to read like a uid is still not that user.
  t.false(mayManage(certificate('uid:1000'), ownerOf(LOCAL_USER)));
});

test('a certificate caller is described by its subject', (t) => {
  t.is(describeCaller(LISTED), 'certificate /OU=Persons/CN=test user 1');
  t.is(describeCaller(SLIVER), 'sliver pl_web (uid 70001)');
});
