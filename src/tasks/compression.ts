// The two compressions XSDL names, over whole files: gzip by node's zlib, bzip2 by the packaged
// bzip2 program (node has none of its own).
import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import type { Compression } from './xsdl-types.js';

/** Writes `from` compressed (pack) or decompressed (unpack) to `to`, a new private file. */
export async function transcode(direction: 'pack' | 'unpack', compression: Compression, from: string, to: string, signal: AbortSignal): Promise<void> {
  if (compression === 'gzip') {
    const step = direction === 'pack' ? createGzip() : createGunzip();
    await pipeline(createReadStream(from), step, createWriteStream(to, { mode: 0o600 }), { signal });
    return;
  }
  const input = await open(from, 'r');
  const output = await open(to, 'w', 0o600);
  try {
    await runBzip2(direction === 'pack' ? ['-c'] : ['-dc'], input.fd, output.fd, signal);
  } finally {
    await input.close();
    await output.close();
  }
}

function runBzip2(args: string[], inputFd: number, outputFd: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const child = spawn('bzip2', args, { stdio: [inputFd, outputFd, 'pipe'], signal });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', (error: NodeJS.ErrnoException) => reject(error.code === 'ENOENT'
      ? new Error('bzip2 is not installed (Debian package bzip2)') : error));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(stderr.trim() || `bzip2 exited with ${code}`))));
  });
}
