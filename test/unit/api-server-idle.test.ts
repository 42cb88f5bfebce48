// The API server's idle cut: a connection on which nothing moves is cut, whatever request of a
// keep-alive connection it stalls in (node:http uses the same socket timer for keep-alive, and
// clears it when each later request comes), while a peer that reads slowly but steadily, and a
// call that takes longer than the idle time, are left alone.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApiServer } from '../../src/api/server.js';
import { memoryLogger } from '../../src/log.js';

/** The idle time of the tests that wait for a cut. */
const IDLE_CUT_MS = 800;
/**
 * The idle time of the tests that must see no cut: long enough that a loaded host's pause of the
 * test process (client and server share it) is never taken for a stalled peer.
 */
const PATIENT_IDLE_CUT_MS = 4000;
/** Far more than the kernel takes on a loopback connection nobody reads from. */
const LARGE = 'x'.repeat(16 * 1024 * 1024);

async function server(t: import('ava').ExecutionContext, idleCutMs = IDLE_CUT_MS) {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-idle-'));
  const api = await startApiServer({
    port: 0, host: '127.0.0.1', socketPath: join(dir, 'api.sock'), maxRequestBytes: 4096, logger: memoryLogger(), idleCutMs,
    identify: async () => ({ uid: 0, kind: 'root', name: null }),
    call: async (_caller, method) => {
      if (method === 'Slow') await new Promise((resolve) => setTimeout(resolve, idleCutMs * 3));
      return method === 'Large' ? LARGE : method;
    },
  });
  t.teardown(async () => {
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });
  return api.port!;
}

const request = (method: string) => {
  const body = `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params></params></methodCall>`;
  return `POST /RPC2 HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/xml\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
};

/** A raw keep-alive connection that counts what it reads and whether the server closed it. */
function connection(port: number) {
  const socket: Socket = connect(port, '127.0.0.1');
  const state = { bytes: 0, text: '', closed: false };
  socket.on('data', (chunk: Buffer) => {
    state.bytes += chunk.length;
    // Only the heads and small answers are kept as text.
    if (chunk.length < 4096) state.text += chunk.toString('latin1');
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) =>
    socket.on('close', () => {
      state.closed = true;
      resolve();
    }));
  const until = async (done: () => boolean, ms: number) => {
    for (const end = Date.now() + ms; !done() && Date.now() < end; ) await new Promise((resolve) => setTimeout(resolve, 20));
  };
  return { socket, state, closed, until };
}

test('a peer that stops reading an answer is cut, on the first request of a connection as on a later one', async (t) => {
  const port = await server(t);
  for (const before of [[], ['Small', 'Small']]) {
    const c = connection(port);
    for (const method of before) {
      const answered = c.state.text.split('HTTP/1.1 200').length;
      c.socket.write(request(method));
      await c.until(() => c.state.text.split('HTTP/1.1 200').length > answered && c.state.text.endsWith('</methodResponse>'), 5000);
    }
    t.regex(c.state.text, before.length ? /<string>Small<\/string>[^]*<string>Small<\/string>/ : /^$/, 'the earlier calls were answered whole');
    c.socket.write(request('Large'));
    c.socket.pause();
    // Long past the idle time, and shorter than node:http's keep-alive (15 s), which would also end it.
    await new Promise((resolve) => setTimeout(resolve, IDLE_CUT_MS * 6));
    c.socket.resume();
    await Promise.race([c.closed, c.until(() => c.state.bytes > LARGE.length, 10_000)]);
    t.true(c.state.closed, `a stalled connection after ${before.length} answered calls is cut`);
    t.true(c.state.bytes < LARGE.length, `and its answer not sent whole (${c.state.bytes} bytes read)`);
  }
});

test('a peer that reads slowly but steadily is not cut', async (t) => {
  const port = await server(t, PATIENT_IDLE_CUT_MS);
  const c = connection(port);
  c.socket.write(request('Small'));
  await c.until(() => c.state.text.endsWith('</methodResponse>'), 5000);
  c.socket.write(request('Large'));
  // Reads in bursts, with pauses well within the idle time: the answer moves, so nothing is cut.
  const reader = setInterval(() => (c.socket.isPaused() ? c.socket.resume() : c.socket.pause()), 200);
  await c.until(() => c.state.bytes > LARGE.length, 60_000);
  clearInterval(reader);
  c.socket.resume();
  t.false(c.state.closed);
  t.true(c.state.bytes > LARGE.length, 'the whole large answer arrived');
  c.socket.destroy();
});

test('a call that runs longer than the idle time is answered, as a connection\'s first call and as a later one', async (t) => {
  // Whatever the host's pauses, a connection whose call is running is never cut: the short idle time is safe here.
  const port = await server(t);
  const c = connection(port);
  for (const call of ['first', 'second']) {
    c.state.text = '';
    c.socket.write(request('Slow'));
    await c.until(() => c.state.text.endsWith('</methodResponse>'), IDLE_CUT_MS * 20);
    t.regex(c.state.text, /<string>Slow<\/string>/, `the ${call} call, running three times the idle time, was answered`);
    t.false(c.state.closed);
  }
  c.socket.destroy();
});
