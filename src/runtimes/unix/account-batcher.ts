// Gathers the account creations and removals that the supervisors ask for at about the same time
// (one converge pass hands out all of its creates or destroys together) into one locked write of
// the account files. Each caller still awaits its own account's outcome; a refusal of one account
// is that account's alone, and only a failure of the write itself fails the whole batch.
import type { AccountChange, AccountOutcome, BatchRequests, NewAccount } from '../../host/account-files/plan.js';
import { exclusive } from './shadow-utils.js';

export interface AccountBatcher {
  create(account: NewAccount): Promise<AccountOutcome>;
  remove(name: string): Promise<AccountOutcome>;
  /** A shell or login change of an existing account (a start's or a stop's usermod). */
  change(change: AccountChange): Promise<AccountOutcome>;
}

type Request = { readonly create: NewAccount } | { readonly remove: string } | { readonly change: AccountChange };

type Commit = (requests: BatchRequests) => Promise<ReadonlyMap<string, AccountOutcome>>;

interface Waiting {
  readonly name: string;
  readonly request: Request;
  resolve(outcome: AccountOutcome): void;
  reject(error: unknown): void;
}

/**
 * `gatherMs`: how long the first request of a batch waits for others. Requests made while a batch
 * is being written wait for it to end and then go together in the next.
 */
export function accountBatcher(commit: Commit, options: { gatherMs: number }): AccountBatcher {
  let waiting: Waiting[] = [];
  let timer: NodeJS.Timeout | null = null;
  let writing = false;

  const schedule = () => {
    if (writing || timer !== null || waiting.length === 0) return;
    timer = setTimeout(() => void flush(), options.gatherMs);
  };

  const flush = async () => {
    timer = null;
    const batch = waiting;
    waiting = [];
    writing = true;
    try {
      const requests: BatchRequests = {
        creates: batch.flatMap((w) => ('create' in w.request ? [w.request.create] : [])),
        removes: batch.flatMap((w) => ('remove' in w.request ? [w.request.remove] : [])),
        changes: batch.flatMap((w) => ('change' in w.request ? [w.request.change] : [])),
      };
      // One account-file change of this process at a time (see shadow-utils.ts).
      const outcomes = await exclusive(() => commit(requests));
      for (const w of batch) {
        const outcome = outcomes.get(w.name);
        if (outcome) w.resolve(outcome);
        else w.reject(new Error(`the account batch has no outcome for "${w.name}"`));
      }
    } catch (err) {
      for (const w of batch) w.reject(err);
    } finally {
      writing = false;
      schedule();
    }
  };

  const ask = (name: string, request: Request) =>
    new Promise<AccountOutcome>((resolve, reject) => {
      waiting.push({ name, request, resolve, reject });
      schedule();
    });

  return {
    create: (account) => ask(account.name, { create: account }),
    remove: (name) => ask(name, { remove: name }),
    change: (change) => ask(change.name, { change }),
  };
}
