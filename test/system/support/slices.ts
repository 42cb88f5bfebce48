// Builds authority documents (seed format) for system tests.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestSlice {
  name: string;
  id?: number;
  timestamp?: number;
  expiry?: number;
  nodes?: number[];
  /** person id -> public key line */
  users?: Record<number, string>;
  resources?: Record<string, string | number>;
  controllers?: string[];
  instantiation?: 'plc-instantiated' | 'delegated';
}

export interface TestDelegate {
  name: string;
  keys: string[];
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function slicesXml(timestamp: number, slices: TestSlice[], delegates: TestDelegate[] = []): string {
  const out = ['<?xml version="1.0" encoding="utf-8"?>', '<slices>', `  <timestamp value="${timestamp}"/>`];
  slices.forEach((s, i) => {
    out.push(`  <slice id="${s.id ?? 1000 + i}" name="${s.name}"${s.expiry ? ` expiry="${s.expiry}"` : ''}${s.instantiation ? ` instantiation="${s.instantiation}"` : ''}>`);
    out.push(`    <timestamp value="${s.timestamp ?? timestamp}"/>`);
    for (const node of s.nodes ?? [1]) out.push(`    <node id="${node}"/>`);
    for (const person of Object.keys(s.users ?? {})) out.push(`    <user person_id="${person}"/>`);
    for (const [name, value] of Object.entries(s.resources ?? {})) {
      out.push(`    <resource name="${name}"><value>${escape(String(value))}</value></resource>`);
    }
    for (const c of s.controllers ?? []) out.push(`    <controller name="${c}"/>`);
    for (const [person, key] of Object.entries(s.users ?? {})) {
      out.push(`    <key person_id="${person}" value="${escape(key)}"/>`);
    }
    out.push('  </slice>');
  });
  for (const d of delegates) {
    out.push(`  <delegate name="${d.name}">`, `    <timestamp value="${timestamp}"/>`);
    for (const key of d.keys) out.push(`    <key value="${escape(key)}"/>`);
    out.push('  </delegate>');
  }
  out.push('</slices>', '');
  return out.join('\n');
}

/** Real ed25519 public keys made by ssh-keygen (the private halves are thrown away). */
export async function publicKeys(count: number): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-keys-'));
  try {
    const keys: string[] = [];
    for (let i = 0; i < count; i++) {
      const file = join(dir, `k${i}`);
      await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `user${i}@example.org`, '-f', file]);
      keys.push((await readFile(`${file}.pub`, 'utf8')).trim());
    }
    return keys;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
