// Planning one batch of account creations and removals against the account files as read under
// their lock: which account gets which uid, what each file becomes, and in which order the files
// are put in place. Pure: the texts in, the texts out; tested without root.
//
// Crash safety comes from the order of the renames, not from the files being written at once
// (four renames are never one atomic step). The rule kept at every moment: a passwd entry has its
// shadow line and its group. So a creation puts group, gshadow and shadow in place before passwd,
// and a removal takes passwd away first and the group last. A mixed batch is two steps (removals,
// then creations), each keeping the rule. What a kill between two renames can leave is then only
// an orphan: a group of the range (with its gshadow and maybe shadow line) whose account is not in
// passwd. No account exists half-made, and the next batch sweeps such orphans (see orphanGroups).
import { invalidAccountName } from '../account-names.js';
import { parseGroup, parsePasswd, type GroupEntry, type PasswdEntry } from '../passwd.js';
import { duplicateNames, editEntries, entryName, invalidField, linesOf, replaceEntries, type AccountFileName, type AccountFilesText } from './entries.js';

export interface NewAccount {
  readonly name: string;
  readonly gecos: string;
  readonly home: string;
  readonly shell: string;
  /** The shadow password field: "*" (no usable password) or "!" (locked). */
  readonly password: string;
}

/**
 * A change of an existing account of ours, as `usermod -s SHELL -p '*'` (enable) or
 * `usermod -s SHELL -L` (lock) would make it: a start or a stop of many slivers is then one write too.
 */
export interface AccountChange {
  readonly name: string;
  /** The login shell to set; null leaves it. */
  readonly shell: string | null;
  /** 'enable': the password field "*" (no usable password: keys only); 'lock': "!" before it; null leaves it. */
  readonly login: 'enable' | 'lock' | null;
}

export interface BatchRequests {
  readonly creates: readonly NewAccount[];
  readonly removes: readonly string[];
  readonly changes?: readonly AccountChange[];
}

export interface BatchRules {
  readonly uidMin: number;
  readonly uidMax: number;
  /** True for an entry this daemon made: the only ones it may remove. */
  owns(entry: PasswdEntry): boolean;
  /** Days since the epoch: a new shadow line's date of last change, as useradd writes it. */
  readonly today: number;
}

export type AccountOutcome =
  | { readonly kind: 'created'; readonly uid: number; readonly gid: number }
  /** The name has an entry already (the caller decides whether it is the one it wanted). */
  | { readonly kind: 'exists'; readonly entry: PasswdEntry }
  | { readonly kind: 'removed'; readonly entry: PasswdEntry }
  | { readonly kind: 'changed'; readonly entry: PasswdEntry }
  | { readonly kind: 'absent' }
  /** Not done, and why; permanent when the request itself can never be done. */
  | { readonly kind: 'refused'; readonly reason: string; readonly permanent: boolean };

export interface BatchStep {
  /** The four files after this step. */
  readonly files: AccountFilesText;
  /** The files this step changes, in the order they must be put in place. */
  readonly order: readonly AccountFileName[];
}

export interface BatchPlan {
  readonly outcomes: ReadonlyMap<string, AccountOutcome>;
  /** Empty when nothing changes. */
  readonly steps: readonly BatchStep[];
}

// Removal takes away the entry that makes an account usable first; creation adds it last.
const REMOVAL_ORDER: readonly AccountFileName[] = ['passwd', 'shadow', 'gshadow', 'group'];
const CREATION_ORDER: readonly AccountFileName[] = ['group', 'gshadow', 'shadow', 'passwd'];

// shadow(5) ageing as useradd writes it with Debian's login.defs: no minimum age, no maximum, a
// week's warning.
const shadowLine = (a: NewAccount, today: number) => `${a.name}:${a.password}:${today}:0:99999:7:::`;

const inRange = (rules: BatchRules, id: number) => id >= rules.uidMin && id <= rules.uidMax;

/**
 * Groups of the range left by an interrupted batch: no account of the group's name, nobody's
 * primary group, no members, and a gshadow line (if any) as this daemon writes it. Their shadow
 * and gshadow lines go with them.
 */
export function orphanGroups(files: AccountFilesText, rules: BatchRules): Set<string> {
  const passwd = parsePasswd(files.passwd);
  const names = new Set(passwd.map((p) => p.name));
  const primary = new Set(passwd.map((p) => p.gid));
  const gshadowLines = new Map<string, string>();
  for (const line of linesOf(files.gshadow ?? '')) {
    const name = entryName(line);
    if (name !== null) gshadowLines.set(name, line);
  }
  const orphans = new Set<string>();
  for (const g of parseGroup(files.group)) {
    if (!inRange(rules, g.gid) || names.has(g.name) || primary.has(g.gid) || g.members.length > 0) continue;
    const gshadow = gshadowLines.get(g.name);
    if (gshadow !== undefined && gshadow !== `${g.name}:!::`) continue;
    orphans.add(g.name);
  }
  return orphans;
}

/** Hands out ids free as both uid and gid: after the highest in use in the range, then the lowest free. */
function idAllocator(rules: BatchRules, passwd: readonly PasswdEntry[], groups: readonly GroupEntry[]) {
  const used = new Set<number>([...passwd.map((p) => p.uid), ...groups.map((g) => g.gid)]);
  let highest = rules.uidMin - 1;
  for (const id of used) if (inRange(rules, id) && id > highest) highest = id;
  let next = highest + 1;
  let wrapped = false;
  return (): number | null => {
    for (;;) {
      if (next > rules.uidMax) {
        if (wrapped) return null;
        wrapped = true;
        next = rules.uidMin;
      }
      const id = next++;
      if (!used.has(id)) {
        used.add(id);
        return id;
      }
    }
  };
}

function refusalOfNew(a: NewAccount): string | null {
  const badName = invalidAccountName(a.name);
  if (badName !== null) return badName;
  for (const [field, value] of [['GECOS', a.gecos], ['home', a.home], ['shell', a.shell], ['password', a.password]] as const) {
    const bad = invalidField(value);
    if (bad !== null) return `its ${field} ${JSON.stringify(value)} ${bad}`;
  }
  if (!a.home.startsWith('/') || !a.shell.startsWith('/')) return 'its home and shell must be absolute paths';
  return null;
}

export function planBatch(files: AccountFilesText, requests: BatchRequests, rules: BatchRules): BatchPlan {
  const outcomes = new Map<string, AccountOutcome>();
  const refuse = (name: string, reason: string, permanent = false) => outcomes.set(name, { kind: 'refused', reason, permanent });
  const passwd = parsePasswd(files.passwd);
  const groups = parseGroup(files.group);
  const byName = new Map(passwd.map((p) => [p.name, p]));
  const groupByName = new Map(groups.map((g) => [g.name, g]));
  const shadowNames = new Set(linesOf(files.shadow ?? '').map(entryName).filter((n): n is string => n !== null));
  const duplicated = new Set([...duplicateNames(files.passwd), ...duplicateNames(files.group)]);
  const orphans = orphanGroups(files, rules);

  // Removals first: their names are then known not to be created in the same batch.
  const removed = new Set<string>(orphans);
  const removedEntries: PasswdEntry[] = [];
  for (const name of requests.removes) {
    const bad = invalidAccountName(name);
    if (bad !== null) refuse(name, bad, true);
    else if (outcomes.has(name)) continue; // asked twice: one outcome answers both
    else if (duplicated.has(name)) refuse(name, 'the account files hold more than one entry of that name');
    else {
      const entry = byName.get(name);
      if (!entry) outcomes.set(name, { kind: 'absent' });
      else if (!rules.owns(entry)) refuse(name, 'it exists and is not managed by nodemgr');
      else {
        removed.add(name);
        removedEntries.push(entry);
        outcomes.set(name, { kind: 'removed', entry });
      }
    }
  }
  // The private group goes with its account when it is the one made with it: same name and gid,
  // in the range, no members, and no remaining account's primary group.
  const remainingPrimary = new Set(passwd.filter((p) => !removed.has(p.name)).map((p) => p.gid));
  const groupsRemoved = new Set<string>(orphans);
  for (const entry of removedEntries) {
    const g = groupByName.get(entry.name);
    if (g && g.gid === entry.gid && inRange(rules, g.gid) && g.members.length === 0 && !remainingPrimary.has(g.gid)) groupsRemoved.add(g.name);
  }

  const allocate = idAllocator(rules, passwd, groups);
  const created: NewAccount[] = [];
  const createdIds = new Map<string, number>();
  for (const a of requests.creates) {
    const bad = refusalOfNew(a);
    if (bad !== null) refuse(a.name, `refusing account ${JSON.stringify(a.name)}: ${bad}`, true);
    else if (outcomes.has(a.name)) {
      // Removed in this batch, or asked twice: a name's outcome is decided once per batch.
      if (outcomes.get(a.name)!.kind !== 'created') refuse(a.name, 'it is both created and removed in one batch');
    }
    else if (duplicated.has(a.name)) refuse(a.name, 'the account files hold more than one entry of that name');
    else if (byName.has(a.name)) outcomes.set(a.name, { kind: 'exists', entry: byName.get(a.name)! });
    else if (groupByName.has(a.name) && !orphans.has(a.name)) refuse(a.name, `a group named "${a.name}" exists and is not an account's of nodemgr`);
    else if (shadowNames.has(a.name) && !orphans.has(a.name)) refuse(a.name, `${a.name} has a shadow entry without an account; refusing to take it over`);
    else {
      const id = allocate();
      if (id === null) refuse(a.name, `no uid free as both uid and gid in ${rules.uidMin}-${rules.uidMax}`);
      else {
        created.push(a);
        createdIds.set(a.name, id);
        outcomes.set(a.name, { kind: 'created', uid: id, gid: id });
      }
    }
  }

  const changed = planChanges(requests.changes ?? [], { byName, duplicated, outcomes, refuse, rules });

  // A lock takes a login away, so it goes with the removals (passwd's shell first, then the
  // shadow line); an enable gives one, so it goes with the creations (passwd's shell last).
  const locks = new Map([...changed].filter(([, c]) => c.login === 'lock'));
  const others = new Map([...changed].filter(([, c]) => c.login !== 'lock'));
  const afterRemoval: AccountFilesText = applyChanges({
    passwd: editEntries(files.passwd, removed, []),
    shadow: files.shadow === null ? null : editEntries(files.shadow, removed, []),
    group: editEntries(files.group, groupsRemoved, []),
    gshadow: files.gshadow === null ? null : editEntries(files.gshadow, groupsRemoved, []),
  }, locks, rules.today);
  const none = new Set<string>();
  const afterCreation: AccountFilesText = {
    passwd: editEntries(afterRemoval.passwd, none, created.map((a) => `${a.name}:x:${createdIds.get(a.name)}:${createdIds.get(a.name)}:${a.gecos}:${a.home}:${a.shell}`)),
    shadow: afterRemoval.shadow === null ? null : editEntries(afterRemoval.shadow, none, created.map((a) => shadowLine(a, rules.today))),
    group: editEntries(afterRemoval.group, none, created.map((a) => `${a.name}:x:${createdIds.get(a.name)}:`)),
    gshadow: afterRemoval.gshadow === null ? null : editEntries(afterRemoval.gshadow, none, created.map((a) => `${a.name}:!::`)),
  };
  const afterChanges = applyChanges(afterCreation, others, rules.today);
  const steps: BatchStep[] = [];
  for (const [before, after, order] of [[files, afterRemoval, REMOVAL_ORDER], [afterRemoval, afterChanges, CREATION_ORDER]] as const) {
    const changed = order.filter((f) => before[f] !== after[f]);
    if (changed.length > 0) steps.push({ files: after, order: changed });
  }
  return { outcomes, steps };
}

interface ChangeContext {
  readonly byName: ReadonlyMap<string, PasswdEntry>;
  readonly duplicated: ReadonlySet<string>;
  readonly outcomes: Map<string, AccountOutcome>;
  readonly refuse: (name: string, reason: string, permanent?: boolean) => void;
  readonly rules: BatchRules;
}

/** The changes that can be made, by name; the others get their refusal. */
function planChanges(changes: readonly AccountChange[], ctx: ChangeContext): Map<string, AccountChange> {
  const planned = new Map<string, AccountChange>();
  for (const change of changes) {
    const { name } = change;
    const bad = invalidAccountName(name) ?? (change.shell === null ? null : shellProblem(change.shell));
    if (bad !== null) ctx.refuse(name, bad, true);
    else if (ctx.outcomes.has(name)) {
      if (ctx.outcomes.get(name)!.kind !== 'changed') ctx.refuse(name, 'it is changed and also created or removed in one batch');
    } else if (ctx.duplicated.has(name)) ctx.refuse(name, 'the account files hold more than one entry of that name');
    else {
      const entry = ctx.byName.get(name);
      if (!entry) ctx.refuse(name, `no account named "${name}" to change`);
      else if (!ctx.rules.owns(entry)) ctx.refuse(name, 'it exists and is not managed by nodemgr');
      else {
        planned.set(name, change);
        ctx.outcomes.set(name, { kind: 'changed', entry });
      }
    }
  }
  return planned;
}

function shellProblem(shell: string): string | null {
  const bad = invalidField(shell);
  if (bad !== null) return `its shell ${JSON.stringify(shell)} ${bad}`;
  return shell.startsWith('/') ? null : 'its shell must be an absolute path';
}

/** The passwd shells and shadow password fields the changes set; every other byte as it was. */
function applyChanges(files: AccountFilesText, changes: ReadonlyMap<string, AccountChange>, today: number): AccountFilesText {
  if (changes.size === 0) return files;
  const passwd = replaceEntries(files.passwd, (name, line) => {
    const shell = changes.get(name)?.shell ?? null;
    if (shell === null) return null;
    const fields = line.split(':');
    if (fields.length !== 7 || fields[6] === shell) return null;
    fields[6] = shell;
    return fields.join(':');
  });
  const shadow = files.shadow === null ? null : replaceEntries(files.shadow, (name, line) => {
    const login = changes.get(name)?.login ?? null;
    if (login === null) return null;
    const fields = line.split(':');
    if (fields.length < 3) return null;
    const password = fields[1]!;
    if (login === 'enable' && password !== '*') {
      // usermod -p also dates the change.
      fields[1] = '*';
      fields[2] = String(today);
    } else if (login === 'lock' && !password.startsWith('!')) {
      fields[1] = `!${password}`;
    } else return null;
    return fields.join(':');
  });
  return { ...files, passwd, shadow };
}
