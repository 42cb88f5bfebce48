// Builds a realistic authority document in the seed format (slices-0.5.xml), deterministically
// from a seed, for benchmarks and tests that need a large one.
import { Buffer } from 'node:buffer';

export interface GenerateSlicesOptions {
  /** Number of <slice> elements in the whole document. */
  readonly slices: number;
  /** The node whose slices the fraction below is about. */
  readonly nodeId: number;
  /** Share of slices that name `nodeId` among their nodes (0..1). */
  readonly onNodeFraction: number;
  /** Same seed, same document. */
  readonly seed: number;
  /** Put before every slice's name (a bench's accounts of its own); the rest of the document is the same. */
  readonly namePrefix?: string;
}

const SITES = [
  'princeton', 'mit', 'berkeley', 'ucsd', 'cmu', 'uw', 'cornell', 'utah', 'gatech', 'umich',
  'stanford', 'nyu', 'rice', 'duke', 'upenn', 'inria', 'epfl', 'tum', 'ethz', 'kaist',
  'tsinghua', 'utokyo', 'unimelb', 'usp', 'ucl', 'cam', 'ox', 'kth', 'uoa', 'iitb',
];
const WORDS = [
  'sirius', 'codeen', 'coral', 'oasis', 'codeploy', 'stork', 'iplane', 'hubble', 'pl_dev', 'beehive',
  'meridian', 'bittyrant', 'scriptroute', 'vini', 'chord', 'bamboo', 'dht', 'measure', 'probe', 'cdn',
];

/** mulberry32: small, fast, and the same on every platform. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function sshString(bytes: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

function randomBytes(next: () => number, count: number): Buffer {
  const out = Buffer.alloc(count);
  for (let i = 0; i < count; i++) out[i] = Math.floor(next() * 256);
  return out;
}

/** A public key line with a well-formed blob (type name, then key material of the right size). */
function publicKey(next: () => number, comment: string): string {
  if (next() < 0.4) {
    const blob = Buffer.concat([sshString(Buffer.from('ssh-ed25519')), sshString(randomBytes(next, 32))]);
    return `ssh-ed25519 ${blob.toString('base64')} ${comment}`;
  }
  const modulus = randomBytes(next, 257);
  modulus[0] = 0;
  modulus[1] = modulus[1]! | 0x80;
  const blob = Buffer.concat([sshString(Buffer.from('ssh-rsa')), sshString(Buffer.from([1, 0, 1])), sshString(modulus)]);
  return `ssh-rsa ${blob.toString('base64')} ${comment}`;
}

function pick<T>(next: () => number, items: readonly T[]): T {
  return items[Math.floor(next() * items.length)]!;
}

export function generateSlicesXml(options: GenerateSlicesOptions): string {
  const next = random(options.seed);
  const out: string[] = ['<?xml version="1.0" encoding="iso-8859-1"?>', '<slices>'];
  const baseTime = 1_700_000_000;
  for (let i = 0; i < options.slices; i++) {
    const site = pick(next, SITES);
    const name = `${options.namePrefix ?? ''}${site}_${pick(next, WORDS)}${i}`;
    const timestamp = baseTime + Math.floor(next() * 1_000_000);
    const expiry = timestamp + 86_400 * (28 + Math.floor(next() * 56));
    out.push(`  <slice id="${1000 + i}" name="${name}" expiry="${expiry}">`);
    out.push(`    <timestamp value="${timestamp}"/>`);

    const nodes: number[] = [];
    if (next() < options.onNodeFraction) nodes.push(options.nodeId);
    const count = next() < 0.5 ? 1 : 2;
    while (nodes.length < count) {
      const node = 1 + Math.floor(next() * 1000);
      if (node !== options.nodeId && !nodes.includes(node)) nodes.push(node);
    }
    if (nodes.length === 2 && next() < 0.5) nodes.reverse();
    for (const node of nodes) out.push(`    <node id="${node}"/>`);

    const person = 10_000 + Math.floor(next() * 50_000);
    out.push(`    <user person_id="${person}"/>`);

    out.push(`    <resource name="nm_cpu_share"><value>${1 + Math.floor(next() * 64)}</value></resource>`);
    const extra = 1 + Math.floor(next() * 3);
    const optional: [string, () => number][] = [
      ['nm_net_max_rate', () => 1000 * (1 + Math.floor(next() * 100))],
      ['nm_disk_quota', () => 1_000_000 * (1 + Math.floor(next() * 20))],
      ['nm_cpu_guaranteed_share', () => 10 * Math.floor(next() * 30)],
      ['nm_enabled', () => (next() < 0.95 ? 1 : 0)],
    ];
    const start = Math.floor(next() * optional.length);
    for (let k = 0; k < extra; k++) {
      const [resource, amount] = optional[(start + k) % optional.length]!;
      out.push(`    <resource name="${resource}"><value>${amount()}</value></resource>`);
    }

    out.push(`    <key person_id="${person}" value="${publicKey(next, `user${person}@${site}.example.org`)}"/>`);
    out.push('  </slice>');
  }
  out.push('</slices>', '');
  return out.join('\n');
}

/** How many slices of a generated document are disabled (nm_enabled 0): made, and never started. */
export function disabledSlices(xml: string): number {
  return (xml.match(/<resource name="nm_enabled"><value>0</g) ?? []).length;
}
