// The node's capacity budget: its vCPUs and memory, times their overcommit factors, shared by
// every guest (libvirt slivers, tasks, instances). Pure: what the host has and what uses it come
// in, the view and a refusal's words come out. Condor Cloud packed guests into one partitionable
// slot with four times the node's CPUs; its factor is the default of cpu_overcommit.
import { formatBytes } from '../util/text.js';

/** What a guest holds of the budget. */
export interface Need {
  readonly vcpus: number;
  readonly memoryBytes: number;
}

/** One holder of budget: "sliver alice", "task 12", "instance 3". */
export interface BudgetUse extends Need {
  readonly holder: string;
}

export interface BudgetFactors {
  readonly cpu: number;
  readonly memory: number;
}

export interface BudgetView {
  /** The host's CPUs and memory times the factors. */
  readonly total: Need;
  readonly used: Need;
  /** What is left; never below zero, even when slivers alone hold more than the total. */
  readonly free: Need;
  readonly uses: readonly BudgetUse[];
}

export function budgetView(host: Need, factors: BudgetFactors, uses: readonly BudgetUse[]): BudgetView {
  const total = {
    vcpus: Math.floor(host.vcpus * factors.cpu),
    memoryBytes: Math.floor(host.memoryBytes * factors.memory),
  };
  const used = uses.reduce((sum, u) => ({ vcpus: sum.vcpus + u.vcpus, memoryBytes: sum.memoryBytes + u.memoryBytes }), { vcpus: 0, memoryBytes: 0 });
  const free = { vcpus: Math.max(0, total.vcpus - used.vcpus), memoryBytes: Math.max(0, total.memoryBytes - used.memoryBytes) };
  return { total, used, free, uses };
}

/** "2 vCPU / 1 GiB". */
export function describeNeed(need: Need): string {
  return `${need.vcpus} vCPU / ${formatBytes(need.memoryBytes)}`;
}

/** Why `need` does not fit in what is free, with the numbers; null when it fits. */
export function shortfall(view: BudgetView, need: Need): string | null {
  if (need.vcpus <= view.free.vcpus && need.memoryBytes <= view.free.memoryBytes) return null;
  return `needs ${describeNeed(need)}, free ${describeNeed(view.free)} `
    + `(of ${describeNeed(view.total)} with cpu_overcommit and mem_overcommit)`;
}
