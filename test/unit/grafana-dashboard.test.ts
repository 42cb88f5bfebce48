// The Grafana dashboard shipped in etc/grafana: valid JSON whose every query names only metrics the
// daemon exports (histograms by their _bucket series), so a renamed metric cannot leave a panel empty.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/config/config.js';
import { emptyDatabase } from '../../src/db/types.js';
import { createMetrics } from '../../src/metrics/registry.js';

interface Dashboard { panels: Array<{ title: string; targets: Array<{ expr: string }> }> }

test('every metric a panel queries is one the daemon exports', async (t) => {
  const dashboard = JSON.parse(readFileSync(join(packageRoot(), 'etc', 'grafana', 'nodemgr-dashboard.json'), 'utf8')) as Dashboard;
  const metrics = createMetrics({ version: '1', db: () => emptyDatabase(), images: () => [], defaultRuntime: 'unix', now: () => new Date() });
  const exported = new Set<string>();
  for (const line of (await metrics.text()).split('\n')) {
    const m = /^# TYPE (\S+) (\w+)$/.exec(line);
    if (!m) continue;
    exported.add(m[1]!);
    if (m[2] === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exported.add(`${m[1]}${suffix}`);
  }
  t.true(dashboard.panels.length >= 10);
  const used = new Set<string>();
  for (const panel of dashboard.panels) {
    t.true(panel.targets.length > 0, panel.title);
    for (const target of panel.targets) for (const name of target.expr.match(/\bnodemgr_[a-z_]+/g) ?? []) used.add(name);
  }
  t.deepEqual([...used].filter((name) => !exported.has(name)), []);
  t.true(used.size >= 12, `the panels use ${used.size} metrics`);
});
