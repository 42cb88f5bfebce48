// The account files' batch planning, without root: the four files as text in, as text out. What is
// checked is what an operator relies on: other lines kept byte for byte, uids from the range and
// free as gids too, only nodemgr's own entries removed, refusals per account, and that a kill
// between any two renames leaves files where no account is half made.
import test from 'ava';
import { duplicateNames, editEntries, entryName } from '../../src/host/account-files/entries.js';
import { orphanGroups, planBatch, type AccountOutcome, type BatchPlan, type BatchRules, type NewAccount } from '../../src/host/account-files/plan.js';
import type { AccountFilesText } from '../../src/host/account-files/entries.js';
import { parseGroup, parsePasswd, parseShadow } from '../../src/host/passwd.js';

const MARK = 'nodemgr sliver';
const rules: BatchRules = { uidMin: 70000, uidMax: 70009, owns: (e) => e.gecos === MARK && e.uid >= 70000 && e.uid <= 70009, today: 20000 };

const base: AccountFilesText = {
  passwd: [
    '# a comment kept as it is',
    'root:x:0:0:root:/root:/bin/bash',
    'alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash',
    '+@netgroup::::::',
    'old_one:x:70003:70003:nodemgr sliver:/home/old_one:/bin/bash',
    'people:x:70005:70005:a person in the range:/home/people:/bin/bash',
  ].join('\n') + '\n',
  shadow: 'root:*:19000:0:99999:7:::\nalice:$y$j9T$hash:19000:0:99999:7:::\nold_one:*:19500:0:99999:7:::\npeople:!:19000:0:99999:7:::\n',
  group: 'root:x:0:\nalice:x:1000:\nold_one:x:70003:\npeople:x:70005:\nstaff_in_range:x:70006:alice\n',
  gshadow: 'root:*::\nalice:!::\nold_one:!::\npeople:!::\nstaff_in_range:!::alice\n',
};

const account = (name: string, extra: Partial<NewAccount> = {}): NewAccount => ({
  name, gecos: MARK, home: `/home/${name}`, shell: '/bin/bash', password: '*', ...extra,
});

const outcome = (plan: BatchPlan, name: string): AccountOutcome | undefined => plan.outcomes.get(name);
const final = (plan: BatchPlan): AccountFilesText => plan.steps.at(-1)?.files ?? base;
const names = (text: string | null) => (text ?? '').split('\n').map(entryName).filter((n) => n !== null);

test('entries: lines kept, entries removed and added, duplicates found', (t) => {
  t.is(entryName('# x:y'), null);
  t.is(entryName('+@netgroup::::::'), null);
  t.is(entryName('alice:x:1'), 'alice');
  t.is(editEntries('a:1\n#c\nb:2\n', new Set(['a']), ['d:4']), '#c\nb:2\nd:4\n');
  t.is(editEntries('a:1', new Set(), ['b:2']), 'a:1\nb:2\n', 'a file without a final newline gets one');
  t.deepEqual(duplicateNames('a:1\nb:2\na:3\n'), ['a']);
});

test('creations: ids after the highest of the range, free as uid and gid, every file in shadow-utils form', (t) => {
  const plan = planBatch(base, { creates: [account('new_a'), account('new_b', { password: '!', shell: '/usr/sbin/nologin' })], removes: [] }, rules);
  // 70006 is a group's gid: not free as a gid, so skipped.
  t.deepEqual(outcome(plan, 'new_a'), { kind: 'created', uid: 70007, gid: 70007 });
  t.deepEqual(outcome(plan, 'new_b'), { kind: 'created', uid: 70008, gid: 70008 });
  const files = final(plan);
  t.true(files.passwd.startsWith(base.passwd), 'every line before is kept as it was, in place');
  t.true(files.passwd.endsWith('new_a:x:70007:70007:nodemgr sliver:/home/new_a:/bin/bash\nnew_b:x:70008:70008:nodemgr sliver:/home/new_b:/usr/sbin/nologin\n'));
  t.true(files.shadow!.endsWith('new_a:*:20000:0:99999:7:::\nnew_b:!:20000:0:99999:7:::\n'));
  t.true(files.group.endsWith('new_a:x:70007:\nnew_b:x:70008:\n'));
  t.true(files.gshadow!.endsWith('new_a:!::\nnew_b:!::\n'));
  t.true(parseShadow(files.shadow!).find((s) => s.name === 'new_b')!.locked);
  // One step: the account's entry comes last, after its group and shadow line.
  t.is(plan.steps.length, 1);
  t.deepEqual(plan.steps[0]!.order, ['group', 'gshadow', 'shadow', 'passwd']);
});

test('ids wrap to the lowest free one when the top of the range is taken', (t) => {
  const files = { ...base, passwd: base.passwd + 'top:x:70009:70009:nodemgr sliver:/home/top:/bin/bash\n', group: base.group + 'top:x:70009:\n' };
  const plan = planBatch(files, { creates: [account('w1'), account('w2')], removes: [] }, rules);
  t.deepEqual(outcome(plan, 'w1'), { kind: 'created', uid: 70000, gid: 70000 });
  t.deepEqual(outcome(plan, 'w2'), { kind: 'created', uid: 70001, gid: 70001 });
});

test('a full range refuses the accounts that do not fit, and only those', (t) => {
  const creates = Array.from({ length: 9 }, (_, i) => account(`f${i}`));
  const plan = planBatch(base, { creates, removes: [] }, rules);
  const created = creates.filter((a) => outcome(plan, a.name)?.kind === 'created');
  // 10 ids, of which 70003, 70005, 70006 are taken.
  t.is(created.length, 7);
  t.like(outcome(plan, 'f8'), { kind: 'refused', permanent: false });
  t.regex((outcome(plan, 'f8') as { reason: string }).reason, /no uid free .* 70000-70009/);
});

test('removals take only nodemgr accounts, with their shadow line and private group; passwd goes first', (t) => {
  const plan = planBatch(base, { creates: [], removes: ['old_one', 'people', 'alice', 'never_was'] }, rules);
  t.like(outcome(plan, 'old_one'), { kind: 'removed' });
  t.like(outcome(plan, 'people'), { kind: 'refused', permanent: false });
  t.like(outcome(plan, 'alice'), { kind: 'refused' });
  t.deepEqual(outcome(plan, 'never_was'), { kind: 'absent' });
  const files = final(plan);
  t.false(names(files.passwd).includes('old_one'));
  t.false(names(files.shadow).includes('old_one'));
  t.false(names(files.group).includes('old_one'));
  t.false(names(files.gshadow).includes('old_one'));
  t.is(files.passwd, base.passwd.replace('old_one:x:70003:70003:nodemgr sliver:/home/old_one:/bin/bash\n', ''));
  t.deepEqual(plan.steps.map((s) => s.order), [['passwd', 'shadow', 'gshadow', 'group']]);
});

test('a private group with members or shared as a primary group stays', (t) => {
  const files = {
    ...base,
    passwd: base.passwd + 'twin:x:70007:70003:someone sharing the group:/home/twin:/bin/sh\n',
  };
  const plan = planBatch(files, { creates: [], removes: ['old_one'] }, rules);
  t.like(outcome(plan, 'old_one'), { kind: 'removed' });
  t.true(names(final(plan).group).includes('old_one'), 'still the primary group of twin');
});

test('refusals are per account: invalid names for good, foreign names and groups, duplicated entries; a name asked twice is made once', (t) => {
  const files = { ...base, passwd: base.passwd + 'dup:x:1001:1001::/home/dup:/bin/sh\ndup:x:1002:1002::/home/dup:/bin/sh\n' };
  const plan = planBatch(files, {
    creates: [account('Bad:Name'), account('root'), account('alice'), account('staff_in_range'), account('ok'), account('ok'), account('dup'),
      account('colon', { home: '/home/a:b' })],
    removes: [],
  }, rules);
  t.like(outcome(plan, 'Bad:Name'), { kind: 'refused', permanent: true });
  t.like(outcome(plan, 'root'), { kind: 'refused', permanent: true });
  t.like(outcome(plan, 'colon'), { kind: 'refused', permanent: true });
  t.like(outcome(plan, 'alice'), { kind: 'exists' }, 'the caller sees whose it is');
  t.like(outcome(plan, 'staff_in_range'), { kind: 'refused', permanent: false });
  t.like(outcome(plan, 'ok'), { kind: 'created' });
  t.deepEqual(names(final(plan).passwd).filter((n) => n === 'ok'), ['ok']);
  t.like(outcome(plan, 'dup'), { kind: 'refused', reason: 'the account files hold more than one entry of that name' });
});

test('a name both removed and created in one batch is refused, not made anew', (t) => {
  const plan = planBatch(base, { creates: [account('old_one')], removes: ['old_one'] }, rules);
  t.like(outcome(plan, 'old_one'), { kind: 'refused', reason: 'it is both created and removed in one batch' });
  t.false(names(final(plan).passwd).includes('old_one'), 'the removal stands');
});

test('nothing to write when every account was refused', (t) => {
  t.is(planBatch(base, { creates: [account('alice'), account('x:y')], removes: ['people'] }, rules).steps.length, 0);
});

test('orphan groups of the range are found, and nothing else', (t) => {
  const files = {
    ...base,
    shadow: base.shadow + 'gone:!:19000:0:99999:7:::\n',
    group: base.group + 'gone:x:70004:\nforeign_out:x:5000:\nwith_member:x:70007:alice\nodd_gshadow:x:70008:\n',
    gshadow: base.gshadow + 'gone:!::\nforeign_out:!::\nwith_member:!::alice\nodd_gshadow:$hash::\n',
  };
  t.deepEqual([...orphanGroups(files, rules)], ['gone']);
  const plan = planBatch(files, { creates: [], removes: [] }, rules);
  const after = final(plan);
  for (const file of [after.shadow, after.group, after.gshadow]) t.false(names(file).includes('gone'));
  t.true(names(after.group).includes('foreign_out'));
  t.true(names(after.group).includes('odd_gshadow'));
});

test('a kill between any two renames leaves no account half made, and the next batch tidies it', (t) => {
  const plan = planBatch(base, { creates: [account('c1'), account('c2')], removes: ['old_one'] }, rules);
  t.deepEqual(plan.steps.map((s) => s.order), [['passwd', 'shadow', 'gshadow', 'group'], ['group', 'gshadow', 'shadow', 'passwd']]);
  const renames = plan.steps.flatMap((s) => s.order.map((file) => ({ file, text: s.files[file] })));
  for (let done = 0; done <= renames.length; done++) {
    const state: Record<string, string | null> = { ...base };
    for (const r of renames.slice(0, done)) state[r.file] = r.text;
    const files = state as unknown as AccountFilesText;
    const shadow = new Set(parseShadow(files.shadow!).map((s) => s.name));
    const gids = new Set(parseGroup(files.group).map((g) => g.gid));
    for (const p of parsePasswd(files.passwd)) {
      t.true(shadow.has(p.name), `after ${done} renames: ${p.name} has its shadow line`);
      t.true(gids.has(p.gid), `after ${done} renames: ${p.name} has its group`);
    }
    // The next batch (with nothing asked) leaves each account whole or gone.
    const tidy = planBatch(files, { creates: [], removes: [] }, rules);
    const after = tidy.steps.at(-1)?.files ?? files;
    for (const n of ['c1', 'c2', 'old_one']) {
      const present = [after.passwd, after.shadow, after.group, after.gshadow].map((f) => names(f).includes(n));
      t.true(present.every((p) => p) || present.every((p) => !p), `after ${done} renames and a tidy: ${n} is whole or gone (${present})`);
    }
  }
});

test('files without shadow or gshadow are left without them', (t) => {
  const plan = planBatch({ ...base, shadow: null, gshadow: null }, { creates: [account('ns')], removes: [] }, rules);
  t.like(outcome(plan, 'ns'), { kind: 'created' });
  t.is(final(plan).shadow, null);
  t.is(final(plan).gshadow, null);
  t.deepEqual(plan.steps[0]!.order, ['group', 'passwd']);
});

test('changes: a start sets the shell and "*" (dated), a stop a shell and "!" before the hash; in place, ours only', (t) => {
  const withHash = { ...base, shadow: base.shadow!.replace('old_one:*:19500', 'old_one:$y$hash:19500') };
  const stop = planBatch(withHash, { creates: [], removes: [], changes: [{ name: 'old_one', shell: '/usr/sbin/nologin', login: 'lock' }] }, rules);
  t.is(outcome(stop, 'old_one')?.kind, 'changed');
  const stopped = final(stop);
  t.is(stopped.passwd, base.passwd.replace('/home/old_one:/bin/bash', '/home/old_one:/usr/sbin/nologin'), 'the one field changed, the line in place');
  t.true(stopped.shadow!.includes('old_one:!$y$hash:19500:'), 'locked, not dated');
  t.is(stopped.group, base.group);
  t.deepEqual(stop.steps.at(-1)!.order, ['passwd', 'shadow'], 'a lock takes the shell away first');

  const start = planBatch(stopped, { creates: [], removes: [], changes: [{ name: 'old_one', shell: '/bin/bash', login: 'enable' }] }, rules);
  const started = final(start);
  t.is(started.passwd, base.passwd);
  t.true(started.shadow!.includes('old_one:*:20000:0:99999:7:::'), 'enabled with no usable password, dated today as usermod -p does');
  t.deepEqual(start.steps.at(-1)!.order, ['shadow', 'passwd']);

  const refused = planBatch(base, {
    creates: [], removes: [], changes: [
      { name: 'alice', shell: '/bin/sh', login: null }, { name: 'nobody_here', shell: null, login: 'lock' },
      { name: 'old_one', shell: 'bin/sh', login: null },
    ],
  }, rules);
  t.like(outcome(refused, 'alice'), { kind: 'refused', reason: 'it exists and is not managed by nodemgr' });
  t.like(outcome(refused, 'nobody_here'), { kind: 'refused', permanent: false });
  t.like(outcome(refused, 'old_one'), { kind: 'refused', permanent: true });
  t.deepEqual(refused.steps, [], 'nothing written');
  const unchanged = planBatch(base, { creates: [], removes: [], changes: [{ name: 'old_one', shell: '/bin/bash', login: 'enable' }] }, rules);
  t.deepEqual(unchanged.steps, [], 'a change to what is already there writes nothing');
});
