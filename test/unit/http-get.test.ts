// The shared GET (host/http-get.ts) against real servers on loopback: redirects and their safety
// rules, credentials, abort and the idle timeout. Its callers' own policies (gzip, size limits,
// Range, retries) are tested with them, in authority-fetch and images-cache.
import test from 'ava';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { httpGet, HttpGetError, MAX_REDIRECTS } from '../../src/host/http-get.js';

function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; base: string }> {
  const server = createServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    resolve({ server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
  }));
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

async function bodyOf(body: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

async function failure(promise: Promise<unknown>): Promise<HttpGetError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof HttpGetError) return error;
    throw error;
  }
  throw new Error('expected an HttpGetError');
}

let other = '';
let otherServer: Server;
let base = '';
let server: Server;

test.before(async () => {
  ({ server: otherServer, base: other } = await listen((req, res) => res.writeHead(200).end(JSON.stringify(req.headers))));
  ({ server, base } = await listen((req, res) => {
    const path = req.url ?? '/';
    if (path === '/headers') return void res.writeHead(200).end(JSON.stringify(req.headers));
    if (path === '/to-headers') return void res.writeHead(302, { location: '/headers' }).end('moved');
    if (path === '/to-other') return void res.writeHead(307, { location: `${other}/headers` }).end();
    if (path.startsWith('/hops/')) {
      const left = Number(path.slice('/hops/'.length));
      return void res.writeHead(301, { location: left === 0 ? '/headers' : `/hops/${left - 1}` }).end();
    }
    if (path === '/to-ftp') return void res.writeHead(302, { location: 'ftp://127.0.0.1/x' }).end();
    if (path === '/nowhere') return void res.writeHead(303).end();
    if (path === '/missing') return void res.writeHead(404).end('not here');
    if (path === '/silent') return; // never answers
    if (path === '/stalls') {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('x'.repeat(10));
      return; // and nothing more
    }
    res.writeHead(500).end();
  }));
});

test.after.always(async () => {
  await close(server);
  await close(otherServer);
});

test('a redirect is followed to the answer, whose status, URL and unread body are returned; any status is an answer', async (t) => {
  const answer = await httpGet(new URL(`${base}/to-headers`), { headers: { 'x-test': 'yes' } });
  t.is(answer.status, 200);
  t.is(answer.url.href, `${base}/headers`);
  const headers = JSON.parse(await bodyOf(answer.body)) as Record<string, string>;
  t.is(headers['x-test'], 'yes', 'the headers go with every hop');
  t.is(headers['user-agent'], 'nodemgr');

  const missing = await httpGet(new URL(`${base}/missing`));
  t.is(missing.status, 404);
  t.is(missing.statusText, 'Not Found');
  t.is(await bodyOf(missing.body), 'not here');
});

test(`up to ${MAX_REDIRECTS} redirects are followed; one more is refused at the hop that asked for it`, async (t) => {
  t.is((await httpGet(new URL(`${base}/hops/${MAX_REDIRECTS - 1}`))).url.href, `${base}/headers`);
  const error = await failure(httpGet(new URL(`${base}/hops/${MAX_REDIRECTS}`)));
  t.is(error.kind, 'redirect');
  t.is(error.message, `too many redirects (more than ${MAX_REDIRECTS})`);
  t.is(error.url.href, `${base}/hops/0`);
});

test('a redirect to another scheme, or without a Location, is refused', async (t) => {
  const ftp = await failure(httpGet(new URL(`${base}/to-ftp`)));
  t.is(ftp.kind, 'redirect');
  t.is(ftp.message, 'redirect to ftp://127.0.0.1/x refused: only http: and https: redirects are followed');
  const nowhere = await failure(httpGet(new URL(`${base}/nowhere`)));
  t.is(nowhere.message, 'HTTP 303 redirect without a Location');
});

test('credentials in the URL are sent as basic authentication, kept across a redirect on the same origin only', async (t) => {
  const auth = `Basic ${Buffer.from('plc:s3cret').toString('base64')}`;
  const withCredentials = (path: string) => new URL(`${base.replace('http://', 'http://plc:s3cret@')}${path}`);
  const same = JSON.parse(await bodyOf((await httpGet(withCredentials('/to-headers'))).body)) as Record<string, string>;
  t.is(same['authorization'], auth);
  const elsewhere = await httpGet(withCredentials('/to-other'));
  t.is(elsewhere.url.origin, other);
  t.is((JSON.parse(await bodyOf(elsewhere.body)) as Record<string, string>)['authorization'], undefined);
});

test('a connection refused is a network failure that names the reason in words', async (t) => {
  const { server: spare, base: gone } = await listen(() => undefined);
  await close(spare);
  const error = await failure(httpGet(new URL(`${gone}/x`)));
  t.is(error.kind, 'network');
  t.is(error.message, 'connection refused');
  t.is((error.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
});

test('the idle timeout ends a GET that gets no answer, and a body that stops arriving', async (t) => {
  const silent = await failure(httpGet(new URL(`${base}/silent`), { idleTimeoutMs: 1000 }));
  t.is(silent.kind, 'timeout');
  t.is(silent.message, 'nothing received for 1 s');

  const stalls = await httpGet(new URL(`${base}/stalls`), { idleTimeoutMs: 1000 });
  t.is(stalls.status, 200);
  const error = await failure(bodyOf(stalls.body));
  t.is(error.kind, 'timeout');
});

test('an abort ends the GET, or its body, with the signal\'s reason', async (t) => {
  const before = new AbortController();
  setTimeout(() => before.abort(new Error('timed out after 0.2 s')), 200);
  const silent = await failure(httpGet(new URL(`${base}/silent`), { signal: before.signal }));
  t.is(silent.kind, 'aborted');
  t.is(silent.message, 'timed out after 0.2 s');

  const during = new AbortController();
  const stalls = await httpGet(new URL(`${base}/stalls`), { signal: during.signal });
  setTimeout(() => during.abort(new Error('closing')), 100);
  const error = await failure(bodyOf(stalls.body));
  t.is(error.kind, 'aborted');
  t.is(error.message, 'closing');

  const already = new AbortController();
  already.abort(new Error('too late'));
  t.is((await failure(httpGet(new URL(`${base}/headers`), { signal: already.signal }))).message, 'too late');
});

test('an unreadable CA file is refused at the first https hop, and not read for http', async (t) => {
  t.is((await httpGet(new URL(`${base}/headers`), { caFile: '/nonexistent/ca.pem' })).status, 200);
  const error = await failure(httpGet(new URL('https://127.0.0.1:1/x'), { caFile: '/nonexistent/ca.pem' }));
  t.is(error.kind, 'ca');
  t.is(error.message, 'cannot read the CA file /nonexistent/ca.pem: no such file');
});
