// What `nodemgr status` shows, built from a database snapshot. Pure.
import { sliverRecords } from '../db/records.js';
import type { WriteProblem } from '../db/store.js';
import type { AccountState, NodeDatabase, SyncStatus } from '../db/types.js';
import type { Loan } from '../rspec/loans.js';
import type { Rspec } from '../rspec/resources.js';
import { desiredState } from '../reconcile/desired.js';
import type { ImageEntry } from '../images/index.js';
import { formatImageTable } from '../images/table.js';
import { cachedImagesClassad } from '../images/classad.js';
import { describeNeed, type BudgetView } from '../tasks/budget.js';
import { printable } from '../util/text.js';
import type { GuestStatus } from '../runtimes/types.js';
import type { RuntimeKind } from '../slices/types.js';

export interface AccountLine {
  readonly name: string;
  readonly kind: 'sliver' | 'delegate';
  readonly runtime: RuntimeKind;
  readonly state: AccountState;
  readonly since: string | null;
  readonly uid: number | null;
  readonly lastError: string | null;
  /** Effective rspec (loans applied); empty for delegates. */
  readonly rspec: Rspec;
  readonly loans: readonly Loan[];
  readonly rejectedLoans: ReadonlyArray<{ loan: Loan; reason: string }>;
  readonly controllers: readonly string[];
  readonly unknownResources: readonly string[];
  readonly expiry: number | null;
  /** Found on the host while no document was in force: kept as found until one arrives. */
  readonly adopted: boolean;
}

export interface NodeStatus {
  readonly documentTimestamp: number | null;
  readonly lastSync: SyncStatus | null;
  readonly accounts: readonly AccountLine[];
  /** Accounts the daemon tracks that no record asks for any more (being destroyed, or refused). */
  readonly leftovers: ReadonlyArray<{ name: string; state: AccountState; reason: string | null }>;
  /** Per sliver, the limits as the host holds them (read back from the kernel); absent: not read. */
  readonly limitsInForce?: Readonly<Record<string, Readonly<Record<string, number | string | boolean>>>>;
  /** The ssh gateway's address and its host key's fingerprint; absent when it is off. */
  readonly sshGateway?: { readonly address: string; readonly fingerprint: string | null };
  /** Per libvirt sliver, its domain as libvirt holds it; absent: not read. */
  readonly guests?: Readonly<Record<string, GuestStatus>>;
  /** The node's image cache; absent: not read. */
  readonly images?: readonly ImageEntry[];
  /** Why the image cache could not be read. */
  readonly imagesProblem?: string;
  /** The capacity budget that libvirt slivers, tasks and instances share, and who holds it. */
  readonly capacity?: BudgetView;
  /** Why the node database on disk is older than the running daemon's; absent: it is not (or no daemon runs). */
  readonly databaseProblem?: WriteProblem;
}

export function nodeStatus(db: NodeDatabase, lastSync: SyncStatus | null, defaultRuntime: RuntimeKind): NodeStatus {
  const desired = desiredState(db, defaultRuntime);
  const byName = new Map(sliverRecords(db).map((s) => [s.name, s]));
  const accounts: AccountLine[] = desired.specs.map((spec) => {
    const status = db.accounts[spec.name];
    const record = byName.get(spec.name);
    return {
      name: spec.name,
      kind: spec.kind,
      runtime: spec.runtime,
      state: status?.state ?? 'absent',
      since: status?.since ?? null,
      uid: status?.uid ?? null,
      lastError: status?.reason ?? null,
      rspec: spec.rspec,
      loans: record?.loans ?? [],
      rejectedLoans: desired.rejectedLoans
        .filter((r) => r.lender === spec.name)
        .map(({ loan, reason }) => ({ loan, reason })),
      controllers: record?.controllers ?? [],
      unknownResources: Object.keys(record?.unknown_resources ?? {}),
      expiry: record?.expiry ?? null,
      adopted: false,
    };
  });
  for (const adopted of desired.adopted.values()) {
    const status = db.accounts[adopted.name];
    accounts.push({
      name: adopted.name, kind: adopted.kind, runtime: adopted.runtime, state: status?.state ?? 'absent',
      since: status?.since ?? adopted.since, uid: adopted.uid, lastError: status?.reason ?? null, rspec: {}, loans: [],
      rejectedLoans: [], controllers: [], unknownResources: [], expiry: null, adopted: true,
    });
  }
  accounts.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const wanted = new Set(accounts.map((a) => a.name));
  const leftovers = Object.values(db.accounts)
    .filter((a) => !wanted.has(a.name))
    .map((a) => ({ name: a.name, state: a.state, reason: a.reason }));
  return { documentTimestamp: desired.document, lastSync, accounts, leftovers };
}

function pad(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd())
    .join('\n');
}

function formatTimestamp(seconds: number | null): string {
  return seconds === null ? 'none' : `${seconds} (${new Date(seconds * 1000).toISOString()})`;
}

/** The human-readable table; text that came from outside is shown with its control characters escaped. */
/** The budget in a line, then one line per holder. */
export function formatCapacity(view: BudgetView): string[] {
  return [
    `capacity: ${describeNeed(view.total)} in all, ${describeNeed(view.used)} used, ${describeNeed(view.free)} free`,
    ...view.uses.map((u) => `  ${u.holder.padEnd(24)} ${describeNeed(u)}`),
  ];
}

export function formatNodeStatus(status: NodeStatus): string {
  return formatStatusLines(status).split('\n').map(printable).join('\n');
}

function formatStatusLines(status: NodeStatus): string {
  const lines: string[] = [];
  const sync = status.lastSync;
  lines.push(
    status.documentTimestamp === null
      ? 'document in force: none — nothing is created or destroyed until the authority\'s document arrives'
      : `document in force: ${formatTimestamp(status.documentTimestamp)}`,
  );
  lines.push(
    sync
      ? `last sync: ${sync.at} ${sync.outcome} from ${sync.source}${sync.detail ? ` — ${sync.detail}` : ''}`
      : 'last sync: never',
  );
  if (status.databaseProblem) {
    const p = status.databaseProblem;
    lines.push(`PROBLEM: the node database cannot be written since ${p.since}: ${p.error}; the daemon keeps the newest state in memory and retries (what is shown here is the last written)`);
  }
  if (status.sshGateway) {
    const gw = status.sshGateway;
    lines.push(`ssh gateway: ${gw.address}, host key ${gw.fingerprint ?? 'not made yet (made at the first start)'}`);
  }
  lines.push('');
  if (status.accounts.length === 0) {
    lines.push('no slivers or delegates on this node');
  } else {
    const rows = [['NAME', 'KIND', 'RUNTIME', 'STATE', 'CPU_SHARE', 'CPU_PCT', 'NET_MAX', 'NET_MIN', 'DISK_MAX', 'ENABLED', 'LAST ERROR']];
    for (const a of status.accounts) {
      const r = a.rspec;
      const value = (k: string) => (a.kind === 'delegate' || a.adopted ? '-' : String(r[k] ?? '-'));
      rows.push([
        a.name, a.kind, a.kind === 'delegate' ? '-' : a.runtime, a.adopted ? `${a.state}, adopted` : a.state, value('cpu_share'), value('cpu_pct'), value('net_max_rate'), value('net_min_rate'),
        value('disk_max'), value('enabled'), a.lastError ?? '',
      ]);
    }
    lines.push(pad(rows));
    const adopted = status.accounts.filter((a) => a.adopted).length;
    if (adopted > 0) {
      lines.push('', `${adopted} adopted, awaiting a document: found on the host while no document was in force, kept as found (limits as the host holds them); the document decides what becomes of them`);
    }
  }
  const loanLines: string[] = [];
  for (const a of status.accounts) {
    for (const loan of a.loans) {
      const rejected = a.rejectedLoans.find((r) => r.loan === loan);
      loanLines.push(
        `  ${a.name} -> ${loan.recipient}: ${loan.amount} ${loan.resource}` +
          (rejected ? `  REJECTED: ${rejected.reason}` : ''),
      );
    }
  }
  if (loanLines.length > 0) lines.push('', 'loans:', ...loanLines);
  const inForce = Object.entries(status.limitsInForce ?? {});
  if (inForce.length > 0) {
    const rows = [['SLIVER', 'CPU_SHARES', 'CPU_CAP%', 'MEM_MAX', 'MEM_USED', 'PROCS', 'NET_MIN', 'NET_MAX', 'KBYTE_SENT', 'THROTTLED', 'DISK_USED', 'DISK_MAX']];
    for (const [name, l] of inForce) {
      const v = (k: string) => (l[k] === undefined ? '-' : String(l[k]));
      const procs = l['proc_max'] === undefined ? v('processes') : `${v('processes')}/${v('proc_max')}`;
      const throttled = [l['net_throttled'] ? 'net' : '', l['net_i2_throttled'] ? 'i2' : ''].filter(Boolean).join(',') || 'no';
      rows.push([
        name, v('cpu_shares'), v('cpu_cap'), v('mem_max'), v('mem_used'), procs, v('net_min_rate'), v('net_max_rate'),
        v('net_kbyte_used'), l['net_kbyte_used'] === undefined ? '-' : throttled, v('disk_used'), v('disk_max'),
      ]);
    }
    lines.push('', 'limits in force on the host (memory and disk in KiB, rates in kbit/s):', pad(rows));
    const notes = new Set<string>();
    // What is not enforced, once per reason, with the slivers it holds for.
    const unenforced = new Map<string, string[]>();
    for (const [name, l] of inForce) {
      if (l['problems'] !== undefined) notes.add(`${name}: ${String(l['problems'])}`);
      if (l['notes'] !== undefined) notes.add(String(l['notes']));
      for (const text of l['not_enforced'] === undefined ? [] : String(l['not_enforced']).split('; ')) {
        unenforced.set(text, [...(unenforced.get(text) ?? []), name]);
      }
    }
    for (const note of notes) lines.push(`  ${note}`);
    for (const [text, names] of unenforced) {
      lines.push(`  ${text} (${names.length === inForce.length ? 'every sliver' : names.join(', ')})`);
    }
  }
  const guests = Object.entries(status.guests ?? {});
  if (guests.length > 0) {
    const rows = [['SLIVER', 'DOMAIN', 'VCPUS', 'MEMORY_KIB', 'CPU_SHARES', 'VNC', 'ADDRESSES', 'BANDWIDTH']];
    for (const [name, g] of guests) {
      rows.push([name, `${g.runtime} ${g.state}`, String(g.vcpus ?? '-'), String(g.memory_kib ?? '-'), String(g.cpu_shares ?? '-'),
        g.vnc_port === null ? '-' : `127.0.0.1:${g.vnc_port}`, g.addresses || '-', g.bandwidth]);
    }
    lines.push('', 'libvirt slivers as libvirt holds them:', pad(rows));
  }
  if (status.capacity) lines.push('', ...formatCapacity(status.capacity));
  if (status.images) {
    lines.push('', status.images.length === 0 ? 'image cache: empty' : `image cache (${status.images.length}):`);
    if (status.images.length > 0) lines.push(formatImageTable(status.images), cachedImagesClassad(status.images.map((e) => e.name)));
  } else if (status.imagesProblem) {
    lines.push('', `image cache not read: ${status.imagesProblem}`);
  }
  const unknown = status.accounts.filter((a) => a.unknownResources.length > 0);
  if (unknown.length > 0) {
    lines.push('', 'resources not known to nodemgr (kept, not enforced):');
    for (const a of unknown) lines.push(`  ${a.name}: ${a.unknownResources.join(', ')}`);
  }
  if (status.leftovers.length > 0) {
    lines.push('', 'accounts no record asks for:');
    for (const l of status.leftovers) lines.push(`  ${l.name}: ${l.state}${l.reason ? ` — ${l.reason}` : ''}`);
  }
  return lines.join('\n');
}
