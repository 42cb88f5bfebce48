// The API server reads a request's body as it arrives: in pieces (a chunked body, written in
// several writes) it is put together; past api_max_request_bytes it is answered with its fault
// while it still arrives, and nothing of it is handed on; a client gone mid-body is forgotten.
// An answer goes out byte for byte as UTF-8, whether it is ASCII (written as latin1) or not.
import test from 'ava';
import { connect } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApiServer } from '../../src/api/server.js';
import { memoryLogger } from '../../src/log.js';

const LIMIT = 4096;

async function server(t: import('ava').ExecutionContext) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-body-'));
  const calls: unknown[][] = [];
  const api = await startApiServer({
    port: 0, host: '127.0.0.1', socketPath: join(dir, 'api.sock'), maxRequestBytes: LIMIT, logger: memoryLogger(),
    identify: async () => ({ uid: 0, kind: 'root', name: null }),
    call: async (_caller, _method, params) => {
      calls.push([...params]);
      return params[0];
    },
  });
  t.teardown(async () => {
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { port: api.port!, calls };
}

/** POSTs `pieces` with chunked transfer coding, one write each with a pause between. */
function postInPieces(port: number, pieces: string[]): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/RPC2', method: 'POST', headers: { 'content-type': 'text/xml' } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    const next = (i: number) => {
      if (i === pieces.length) return void req.end();
      req.write(pieces[i]!, () => setTimeout(() => next(i + 1), 20));
    };
    next(0);
  });
}

const call = (text: string) =>
  `<?xml version="1.0"?><methodCall><methodName>Echo</methodName><params><param><value><string>${text}</string></value></param></params></methodCall>`;

test('a body that comes in several pieces is read whole', async (t) => {
  const { port, calls } = await server(t);
  const whole = call('in three pieces');
  const answer = await postInPieces(port, [whole.slice(0, 40), whole.slice(40, 90), whole.slice(90)]);
  t.is(answer.status, 200);
  t.regex(answer.body, /<string>in three pieces<\/string>/);
  t.deepEqual(calls, [['in three pieces']]);
});

test('a chunked body over the limit is answered with its fault and never called', async (t) => {
  const { port, calls } = await server(t);
  const answer = await postInPieces(port, [call('x'.repeat(3000)).slice(0, 3000), 'y'.repeat(3000)]);
  t.is(answer.status, 413);
  t.regex(answer.body, new RegExp(`request too large: more than ${LIMIT} bytes`));
  t.deepEqual(calls, []);
});

test('a client that goes away in the middle of a body is forgotten, and the server goes on answering', async (t) => {
  const { port, calls } = await server(t);
  const whole = call('never finished');
  await new Promise<void>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(`POST /RPC2 HTTP/1.1\r\nhost: x\r\ncontent-type: text/xml\r\ncontent-length: ${whole.length}\r\n\r\n${whole.slice(0, 50)}`, () =>
        // The server has the head and part of the body when the connection is reset.
        setTimeout(() => socket.resetAndDestroy(), 50));
    });
    socket.on('error', reject);
    socket.on('close', () => resolve());
  });
  await new Promise((resolve) => setTimeout(resolve, 50));
  const answer = await postInPieces(port, [call('after it')]);
  t.is(answer.status, 200);
  t.deepEqual(calls, [['after it']], 'the unfinished call was never made');
});

test('an answer is sent as UTF-8 with its length in bytes, ASCII or not', async (t) => {
  const { port } = await server(t);
  for (const text of ['plain ASCII', 'Zürich — 東京 😀', '\u00ff at the end: ÿ']) {
    const raw: Buffer = await new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/RPC2', method: 'POST', headers: { 'content-type': 'text/xml' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d)).on('end', () => {
          const body = Buffer.concat(chunks);
          t.is(Number(res.headers['content-length']), body.length, `content-length of ${text}`);
          resolve(body);
        });
      });
      req.on('error', reject);
      // An answer shorter than its content-length would leave the client waiting.
      req.setTimeout(5000, () => req.destroy(new Error(`no whole answer for ${text} within 5 s`)));
      req.end(call(text));
    });
    t.true(raw.toString('utf8').includes(`<string>${text}</string>`), `${text} comes back as it went`);
  }
});
