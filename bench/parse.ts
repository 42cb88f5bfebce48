// Parsing the authority document: nodemgr's parser (the plain-subset scanner, saxes for anything
// else) beside the original node manager's approach
// (Python expat state machine, bench/baseline/parse_expat.py) and fast-xml-parser, on the same
// generated seed-format documents. Prints figures only; no thresholds.
//
//   node --import tsx bench/parse.ts
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { XMLParser } from 'fast-xml-parser';
import { parseSlicesDocument } from '../src/slices/parse.js';
import { generateSlicesXml } from './lib/generate-slices.js';

const NODE_ID = 42;
const SIZES = [100, 1_000, 10_000];
const here = dirname(fileURLToPath(import.meta.url));

interface Timing {
  medianMs: number;
  minMs: number;
  slivers: number;
}

function runsFor(slices: number): { runs: number; warmup: number } {
  return slices >= 10_000 ? { runs: 15, warmup: 5 } : { runs: 30, warmup: 10 };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function time(runs: number, warmup: number, work: () => number): Timing {
  let slivers = 0;
  for (let i = 0; i < warmup; i++) work();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    slivers = work();
    times.push(performance.now() - started);
  }
  return { medianMs: median(times), minMs: Math.min(...times), slivers };
}

// fast-xml-parser builds the whole document as objects; picking this node's slices afterwards is
// the least a caller would then do.
function fastXmlParser(body: Buffer): number {
  const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', isArray: (name) => ['slice', 'node', 'user', 'key', 'resource'].includes(name) });
  const doc = parser.parse(body) as { slices: { slice?: { node?: { id: number | string }[] }[] } };
  const nodeText = String(NODE_ID);
  return (doc.slices.slice ?? []).filter((s) => (s.node ?? []).some((n) => String(n.id) === nodeText)).length;
}

function expat(file: string, runs: number, warmup: number): Timing | string {
  try {
    const out = execFileSync('python3', [join(here, 'baseline', 'parse_expat.py'), file, String(NODE_ID), String(runs), String(warmup)], { encoding: 'utf8' });
    const result = JSON.parse(out) as { median_ms: number; min_ms: number; slivers: number };
    return { medianMs: result.median_ms, minMs: result.min_ms, slivers: result.slivers };
  } catch (error) {
    return `python3 failed: ${(error as Error).message.split('\n')[0]}`;
  }
}

function pythonVersion(): string {
  try {
    return execFileSync('python3', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return 'python3 not found';
  }
}

const cell = (t: Timing | string): string => (typeof t === 'string' ? 'n/a' : `${t.medianMs.toFixed(1)} / ${t.minMs.toFixed(1)}`);
const mb = (bytes: number): string => (bytes >= 1_000_000 ? `${(bytes / 1_000_000).toFixed(2)} MB` : `${(bytes / 1000).toFixed(1)} kB`);

console.log(`machine: ${cpus()[0]?.model ?? 'unknown cpu'}, ${availableParallelism()} cores, node ${process.version}, ${pythonVersion()}`);
console.log(`document: seed format, ~1/10 of slices on node ${NODE_ID}; times in ms, median / min after warm-up\n`);

const header = ['slices', 'size', 'runs', 'on node', 'nodemgr', 'original (py expat)', 'fast-xml-parser', 'vs expat'];
const rows: string[][] = [];
const notes: string[] = [];
const dir = mkdtempSync(join(tmpdir(), 'nodemgr-bench-'));
try {
  for (const slices of SIZES) {
    const file = join(dir, `slices-${slices}.xml`);
    writeFileSync(file, generateSlicesXml({ slices, nodeId: NODE_ID, onNodeFraction: 0.1, seed: 1 }), 'latin1');
    const body = readFileSync(file);
    const { runs, warmup } = runsFor(slices);
    const ours = time(runs, warmup, () => parseSlicesDocument(body, { nodeId: NODE_ID, maxBytes: 64 << 20 }).slivers.length);
    const fxp = time(Math.min(runs, 10), Math.min(warmup, 3), () => fastXmlParser(body));
    const original = expat(file, runs, warmup);
    if (typeof original === 'string') notes.push(original);
    else if (original.slivers !== ours.slivers) notes.push(`${slices}: expat kept ${original.slivers} slivers, nodemgr ${ours.slivers}`);
    if (fxp.slivers !== ours.slivers) notes.push(`${slices}: fast-xml-parser found ${fxp.slivers} slices, nodemgr ${ours.slivers}`);
    rows.push([
      slices.toLocaleString('en-US'), mb(body.length), String(runs), String(ours.slivers), cell(ours), cell(original), cell(fxp),
      typeof original === 'string' ? 'n/a' : `${(original.medianMs / ours.medianMs).toFixed(1)}x faster (${((100 * ours.medianMs) / original.medianMs).toFixed(0)}% of its time)`,
    ]);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (cells: string[]): string => cells.map((c, i) => (i < 4 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
console.log(line(header));
console.log(widths.map((w) => '-'.repeat(w)).join('  '));
for (const row of rows) console.log(line(row));
for (const note of notes) console.log(`note: ${note}`);
