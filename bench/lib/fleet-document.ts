// The one authority document of a fleet rehearsal: every node of the fleet (ids 1..N) with its
// own one or two slivers, and the authority's delegate, through which it pushes. Pure: the same
// options give the same document, so a version differs from the last only where it should.
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';

export interface FleetDocumentOptions {
  /** Nodes 1..nodes each get their slivers. */
  readonly nodes: number;
  /** The document's version: its timestamp is BASE_TIMESTAMP + version, and each sliver's cpu_share follows it. */
  readonly version: number;
  /** The authority delegate's name and its OpenSSH public key line. */
  readonly delegate: { readonly name: string; readonly key: string };
}

export const BASE_TIMESTAMP = 1_800_000_000;

/** One sliver on odd nodes, two on even ones: few and cheap, as a rehearsal of the authority needs. */
export function sliversOf(node: number): string[] {
  const names = [`fleet_n${node}_a`];
  if (node % 2 === 0) names.push(`fleet_n${node}_b`);
  return names;
}

export function timestampOf(version: number): number {
  return BASE_TIMESTAMP + version;
}

/**
 * A well-formed ed25519 public key line whose key bytes are derived from `seed`: real users' keys
 * do not compress, and neither do these, so the document's gzip ratio is a fleet's.
 */
function userKey(seed: string): string {
  const field = (bytes: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, bytes.length]), bytes]);
  const material = createHash('sha256').update(seed).digest();
  const blob = Buffer.concat([field(Buffer.from('ssh-ed25519')), field(material)]);
  return `ssh-ed25519 ${blob.toString('base64')} ${seed}@users.example.org`;
}

function sliceXml(node: number, name: string, id: number, version: number): string[] {
  // Two users a slice, each with a key; the cpu share moves with the version, so every new
  // version changes every sliver and the node has real work to put it in force.
  const users = [1, 2].map((k) => 10_000 + id * 2 + k);
  return [
    `  <slice id="${id}" name="${name}">`,
    `    <timestamp value="${timestampOf(version)}"/>`,
    `    <node id="${node}"/>`,
    ...users.map((person) => `    <user person_id="${person}"/>`),
    `    <resource name="cpu_share"><value>${8 + (version % 32)}</value></resource>`,
    '    <resource name="net_max_rate"><value>10000</value></resource>',
    ...users.map((person) => `    <key person_id="${person}" value="${userKey(`p${person}`)}"/>`),
    '  </slice>',
  ];
}

export function fleetDocument(options: FleetDocumentOptions): string {
  if (!Number.isInteger(options.nodes) || options.nodes < 1) throw new Error(`fleetDocument: nodes must be a whole number >= 1, not ${options.nodes}`);
  const out = ['<?xml version="1.0" encoding="utf-8"?>', '<slices>', `  <timestamp value="${timestampOf(options.version)}"/>`];
  let id = 1000;
  for (let node = 1; node <= options.nodes; node++) {
    for (const name of sliversOf(node)) out.push(...sliceXml(node, name, id++, options.version));
  }
  out.push(
    `  <delegate name="${options.delegate.name}">`,
    `    <timestamp value="${timestampOf(options.version)}"/>`,
    `    <key value="${options.delegate.key}"/>`,
    '  </delegate>',
    '</slices>',
    '',
  );
  return out.join('\n');
}
