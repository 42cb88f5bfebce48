// The authority's push: the OpenSSH client logs into each node's ssh gateway as the authority's
// delegate and sends one XML-RPC DeliverSlices request (the document and its detached signature)
// on standard input, as `ssh plc_delegate@node < request.xml` would; the node answers on stdout.
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** The XML-RPC call DeliverSlices(document, signature). */
export function deliverSlicesRequest(document: string, signature: string): string {
  const param = (value: string) => `<param><value><string>${escapeXml(value)}</string></value></param>`;
  return `<?xml version="1.0"?>\n<methodCall><methodName>DeliverSlices</methodName><params>${param(document)}${param(signature)}</params></methodCall>\n`;
}

export type PushAnswer = { readonly outcome: string } | { readonly fault: string };

/** The outcome of DeliverSlices's answer ("applied", "unchanged", "older"), or the fault's text. */
export function readPushAnswer(body: string): PushAnswer {
  if (body.includes('<fault>')) {
    const code = /<name>faultCode<\/name>\s*<value>\s*<(?:int|i4)>(-?\d+)</.exec(body)?.[1] ?? '?';
    const text = /<name>faultString<\/name>\s*<value>\s*(?:<string>)?([^<]*)</.exec(body)?.[1] ?? body.slice(0, 200);
    return { fault: `fault ${code}: ${text}` };
  }
  const outcome = /<name>outcome<\/name>\s*<value>\s*(?:<string>)?([^<]*)</.exec(body)?.[1];
  return outcome === undefined ? { fault: `not a DeliverSlices answer: ${JSON.stringify(body.slice(0, 200))}` } : { outcome };
}

export interface PushTarget {
  readonly address: string;
  readonly port: number;
  readonly user: string;
  /** The delegate's private key file. */
  readonly identity: string;
}

export interface PushResult {
  readonly answer: PushAnswer;
  /** From the ssh client's start to its exit. */
  readonly ms: number;
}

/** One push: `ssh -p port user@address < requestFile`. */
export function pushOverSsh(target: PushTarget, requestFile: string): Promise<PushResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn('ssh', [
      '-p', String(target.port), '-i', target.identity, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
      // The nodes' host keys are made at their first start; the rehearsal trusts them on sight.
      '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
      '-o', 'ConnectTimeout=30', `${target.user}@${target.address}`,
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    createReadStream(requestFile).pipe(child.stdin);
    child.on('close', (code) => {
      const ms = performance.now() - started;
      const answer = code === 0 || stdout !== '' ? readPushAnswer(stdout) : { fault: `ssh exited ${code}: ${stderr.trim()}` };
      resolve({ answer, ms });
    });
  });
}

/** Runs `task` for every item with at most `parallel` running at once; results in the items' order. */
export async function inParallel<T, R>(items: readonly T[], parallel: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) results[i] = await task(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(parallel, items.length) }, worker));
  return results;
}
