// Time to apply the limits of N slivers (1,000 by default) from nothing, and then to re-apply them
// after one loan, with the daemon's own enforcer: real cgroups under a throwaway parent and a real
// HTB tree with its nftables classifier on a veth in a throwaway network namespace. Needs root.
//
//   node --import tsx bench/limits.ts [slivers] [rounds]
import { join } from 'node:path';
import { createEnforcer, type LimitInput } from '../src/limits/enforcer.js';
import { createTrafficShaper } from '../src/limits/tc.js';
import { createLogger } from '../src/log.js';
import { effectiveRspecs, type Loan } from '../src/rspec/loans.js';
import { withDefaults } from '../src/rspec/resources.js';
import { BENCH_DEVICE, limitsBenchHost } from './lib/limits-host.js';
import { median } from './lib/median.js';

const count = Number(process.argv[2] ?? 1000);
const rounds = Number(process.argv[3] ?? 3);
if (process.getuid?.() !== 0) {
  console.log('bench/limits.ts needs root (it makes cgroups and a network namespace); skipped');
  process.exit(0);
}

const UID_MIN = 70_000;

const slivers = Array.from({ length: count }, (_, i) => ({
  name: `bench${String(i).padStart(5, '0')}`,
  uid: UID_MIN + i,
  rspec: withDefaults({
    cpu_share: 1 + (i % 7), cpu_pct: i % 50 === 0 ? 5 : 0, mem_max: 1_048_576, proc_max: 512,
    net_max_rate: 10_000 + (i % 10) * 1_000, net_min_rate: i % 4 === 0 ? 100 : 0,
  }),
  loans: [] as Loan[],
}));

function input(withLoan: boolean): LimitInput {
  const lender = slivers[0]!;
  const loans = withLoan ? [{ recipient: slivers[1]!.name, resource: 'cpu_share', amount: 1 }, { recipient: slivers[1]!.name, resource: 'net_max_rate', amount: 5_000 }] : [];
  const { effective } = effectiveRspecs(slivers.map((s) => ({ name: s.name, rspec: s.rspec, loans: s === lender ? loans : s.loans })));
  return {
    slivers: slivers.map((s) => ({ name: s.name, uid: s.uid, rspec: effective.get(s.name)! })),
    present: new Set(slivers.map((s) => s.name)),
    others: new Set(),
    bwcapKbit: 100_000_000,
  };
}

async function round(): Promise<{ scratch: number; loan: number; tcLines: string }> {
  const host = await limitsBenchHost('nmbench');
  const { ns, dir, cgroups } = host;
  await cgroups.ensureParent();
  const shaper = createTrafficShaper({
    netns: ns,
    layout: {
      device: BENCH_DEVICE, major: '4e4d', uidMin: UID_MIN, uidMax: UID_MIN + 9_999, linkRateKbit: 10_000_000,
      nodeCapKbit: 10_000_000, exemptCapKbit: 10_000_000, exemptPrefixes: ['10.0.0.0/8'],
    },
  });
  let withLoan = false;
  const enforcer = await createEnforcer({
    cgroups, shaper, disk: null, cpuCount: 2, byteCapFile: join(dir, 'byte-caps.json'), byteCapPeriodSeconds: 86_400,
    input: async () => input(withLoan), logger: createLogger({ console: false }), now: () => new Date(),
  });
  try {
    let started = process.hrtime.bigint();
    await enforcer.refresh();
    const scratch = Number(process.hrtime.bigint() - started) / 1e6;
    if (enforcer.problems().size > 0) throw new Error(`limits not applied: ${JSON.stringify([...enforcer.problems()].slice(0, 3).map(([k, v]) => [k, [...v]]))}`);
    withLoan = true;
    started = process.hrtime.bigint();
    await enforcer.refresh();
    const loan = Number(process.hrtime.bigint() - started) / 1e6;
    const classes = await shaper.read();
    return { scratch, loan, tcLines: `${classes.size} classes` };
  } finally {
    await host.remove();
  }
}

const results = [];
for (let i = 0; i < rounds; i++) results.push(await round().catch((error: unknown) => {
  console.error((error as Error).message);
  process.exit(1);
}));
console.log(`limits for ${count} slivers (cgroups: cpu, memory, pids; HTB: 2 classes each + classifier), ${rounds} rounds, median:`);
console.log(`  from scratch:      ${median(results.map((r) => r.scratch)).toFixed(0)} ms   (rounds: ${results.map((r) => r.scratch.toFixed(0)).join(', ')}; ${results[0]!.tcLines})`);
console.log(`  one changed loan:  ${median(results.map((r) => r.loan)).toFixed(1)} ms   (rounds: ${results.map((r) => r.loan.toFixed(1)).join(', ')})`);
