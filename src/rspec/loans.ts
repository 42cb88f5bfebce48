// Loan arithmetic: the effective rspec of every sliver from the rspecs and the loans between them.
// Pure: plain data in, plain data out.
import { resourceInfo, withDefaults, type Rspec } from './resources.js';

/** `amount` of `resource` moved from the sliver that holds the loan to `recipient`. */
export interface Loan {
  readonly recipient: string;
  readonly resource: string;
  readonly amount: number;
}

export interface RejectedLoan {
  readonly lender: string;
  readonly loan: Loan;
  readonly reason: string;
}

export interface LenderInput {
  readonly name: string;
  /** The sliver's own rspec (canonical names; defaults are filled in here). */
  readonly rspec: Rspec;
  readonly loans: readonly Loan[];
}

export interface EffectiveRspecs {
  /** Sliver name -> its rspec minus the loans it gives plus the loans it receives. */
  readonly effective: ReadonlyMap<string, Rspec>;
  /** Loans that were not applied, each with the reason; everything else was applied. */
  readonly rejected: readonly RejectedLoan[];
}

/** Returns null when a loan is well formed on its own (not yet checked against the lender's means). */
export function invalidLoan(lender: string, loan: Loan, slivers: ReadonlySet<string>): string | null {
  const info = resourceInfo(loan.resource);
  if (!info) return `resource "${loan.resource}" is not known`;
  if (!info.loanable) return `resource "${loan.resource}" cannot be loaned`;
  if (!Number.isSafeInteger(loan.amount) || loan.amount < 0) {
    return `amount ${loan.amount} is not a non-negative integer`;
  }
  if (loan.recipient === lender) return 'a sliver cannot lend to itself';
  if (!slivers.has(loan.recipient)) return `recipient "${loan.recipient}" is not a sliver on this node`;
  return null;
}

/**
 * Applies every sliver's loans in order. A lender may lend only from its own allocation (what it
 * receives cannot be re-loaned) and must keep at least the resource's minimum; a loan that does
 * not fit is rejected with its reason and the remaining loans still apply.
 */
export function effectiveRspecs(slivers: readonly LenderInput[]): EffectiveRspecs {
  const names = new Set(slivers.map((s) => s.name));
  const own = new Map(slivers.map((s) => [s.name, withDefaults(s.rspec)]));
  const effective = new Map<string, Rspec>();
  for (const [name, rspec] of own) effective.set(name, { ...rspec });
  const rejected: RejectedLoan[] = [];

  for (const lender of slivers) {
    const ownRspec = own.get(lender.name)!;
    const lent: Record<string, number> = {};
    for (const loan of lender.loans) {
      const invalid = invalidLoan(lender.name, loan, names);
      if (invalid) {
        rejected.push({ lender: lender.name, loan, reason: invalid });
        continue;
      }
      const info = resourceInfo(loan.resource)!;
      const already = lent[loan.resource] ?? 0;
      const holds = ownRspec[loan.resource] ?? 0;
      const left = holds - already - loan.amount;
      if (left < info.minimum) {
        rejected.push({
          lender: lender.name,
          loan,
          reason:
            `lending ${loan.amount} ${loan.resource} would leave ${lender.name} ${left} ` +
            `(it has ${holds} of its own, ${already} already lent, and must keep ${info.minimum})`,
        });
        continue;
      }
      lent[loan.resource] = already + loan.amount;
      const lenderEffective = effective.get(lender.name)!;
      lenderEffective[loan.resource] = (lenderEffective[loan.resource] ?? 0) - loan.amount;
      const recipientEffective = effective.get(loan.recipient)!;
      recipientEffective[loan.resource] = (recipientEffective[loan.resource] ?? 0) + loan.amount;
    }
  }
  return { effective, rejected };
}
