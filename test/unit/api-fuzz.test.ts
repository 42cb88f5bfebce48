// Thousands of mutated XML-RPC bodies against the real API server and methods: every one gets an
// answer (a well-formed method response, fault or result), and the server keeps serving.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApiMethods } from '../../src/api/methods.js';
import { startApiServer } from '../../src/api/server.js';
import { openDatabase } from '../../src/db/store.js';
import { memoryLogger } from '../../src/log.js';
import { recordWriter } from '../../src/db/record-writer.js';

const SEEDS = [
  '<?xml version="1.0"?><methodCall><methodName>GetRSpec</methodName><params><param><value><string>pl_a</string></value></param></params></methodCall>',
  '<methodCall><methodName>SetLoans</methodName><params><param><value>pl_a</value></param><param><value><array><data><value><array><data><value>pl_b</value><value>cpu_share</value><value><int>3</int></value></data></array></value></data></array></value></param></params></methodCall>',
  '<methodCall><methodName>system.methodHelp</methodName><params><param><value><string>Stop</string></value></param></params></methodCall>',
  '<methodCall><methodName>Ticket</methodName><params><param><value><struct><member><name>a</name><value><i4>1</i4></value></member></struct></value></param></params></methodCall>',
];
const PIECES = ['<', '>', '</value>', '<value>', '<struct>', '<array><data>', '&amp;', '&#0;', '\u0000', ']]>', '<![CDATA[', '<!DOCTYPE x>', '"', '<int>', '99999999999999999999', '<nil/>', '__proto__', '\uffff', '<base64>', '<dateTime.iso8601>x'];

/** A deterministic pseudo-random generator, so a failure can be replayed. */
function generator(seed: number) {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

function mutate(body: string, random: () => number): string {
  let text = body;
  const edits = 1 + Math.floor(random() * 4);
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(random() * (text.length + 1));
    const choice = random();
    if (choice < 0.3) text = text.slice(0, at) + text.slice(at + 1 + Math.floor(random() * 8));
    else if (choice < 0.6) text = text.slice(0, at) + PIECES[Math.floor(random() * PIECES.length)] + text.slice(at);
    else if (choice < 0.8) text = text.slice(0, at);
    else text = text.slice(0, at) + String.fromCharCode(Math.floor(random() * 0x3000)) + text.slice(at + 1);
  }
  return text;
}

test('mutated request bodies each get a method response, and the server keeps answering', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-fuzz-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const logger = memoryLogger();
  const { store } = await openDatabase({ path: join(dir, 'db.json'), lockPath: join(dir, 'db.lock'), logger });
  const refuse = () => {
    throw new Error('a caller who is nobody reached a method that changes the node');
  };
  const methods = createApiMethods({
    store, records: recordWriter(store, logger), logger, now: () => new Date(), authorityDelegate: null, defaultRuntime: 'unix',
    converge: async () => refuse(), submit: refuse, observe: async () => refuse(), verifyTicket: refuse, verifyPush: refuse, acceptDocument: async () => refuse(),
  });
  const server = await startApiServer({
    port: 0, host: '127.0.0.1', socketPath: join(dir, 'api.sock'), maxRequestBytes: 64 * 1024,
    identify: async () => ({ uid: 65534, kind: 'nobody', name: null }),
    call: (caller, method, params) => methods.call(caller, method, params),
    logger,
  });
  t.teardown(() => server.close());
  // Closed: any write a nobody caller could cause would now throw and show up as an internal error.
  await store.close().catch(() => undefined);

  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());
  const post = (body: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.port!, method: 'POST', path: '/RPC2', agent, headers: { 'content-type': 'text/xml' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      });
      req.on('error', reject);
      req.end(body);
    });

  const random = generator(20261125);
  const bodies = Array.from({ length: 3000 }, (_, i) => mutate(SEEDS[i % SEEDS.length]!, random));
  let faults = 0;
  let results = 0;
  for (let i = 0; i < bodies.length; i += 8) {
    const answers = await Promise.all(bodies.slice(i, i + 8).map(post));
    for (const [j, answer] of answers.entries()) {
      const ok = answer.status === 200 && /^<\?xml version="1.0"\?>\s*<methodResponse>.*<\/methodResponse>$/s.test(answer.text);
      if (!ok) t.fail(`body ${i + j} ${JSON.stringify(bodies[i + j])} got ${answer.status} ${answer.text.slice(0, 200)}`);
      if (answer.text.includes('<fault>')) faults++;
      else results++;
    }
  }
  t.log(`${bodies.length} mutated bodies: ${faults} faults, ${results} results`);
  t.is(faults + results, bodies.length);
  t.true(faults > bodies.length / 2, 'most mutations are refused');
  const after = await post(SEEDS[2]!);
  t.regex(after.text, /stays stopped/, 'a valid call is still answered afterwards');
  t.false(logger.lines.some((l) => l.startsWith('error api call failed')), 'no call ended in an internal error');
});
