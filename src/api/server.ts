// The API's HTTP side: one server on 127.0.0.1 (TCP), one on a Unix socket and, when configured,
// one over TLS that takes only clients with a certificate its CA signed; all speak XML-RPC over
// HTTP/1.1 with keep-alive. Bodies are bounded, slow or idle connections are cut, and every
// request gets exactly one answer: a result or a fault, never a crash.
import { chmod, lstat, unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer, Server as TlsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { logLimiter } from '../util/log-limiter.js';
import type { Logger } from '../log.js';
import type { AnswerCache } from './answer-cache.js';
import { decodeCall, encodeFault, encodeResponse } from './codec.js';
import { ApiFault, FaultCode } from './faults.js';
import { describeCaller, type Caller } from './identity.js';
import { describeError } from '../util/errors.js';
import { cutIdleConnections, rearmAfterAnswer } from '../util/idle-cut.js';

export interface ApiServerOptions {
  /** TCP port on 127.0.0.1; null for no TCP listener. */
  readonly port: number | null;
  readonly host: string;
  readonly socketPath: string;
  readonly maxRequestBytes: number;
  /** The TLS listener; absent, there is none. */
  readonly tls?: TlsListenerOptions;
  /** Who is behind a connection; resolved once per connection. */
  identify(socket: Socket, transport: Transport): Promise<Caller>;
  call(caller: Caller, method: string, params: readonly unknown[]): Promise<unknown>;
  readonly logger: Logger;
  /** Answers of calls that read only the database, kept until it changes; none by default. */
  readonly answers?: AnswerCache;
  /** A connection on which nothing moves for this long, while no call of it is being answered, is cut (default 60 s). */
  readonly idleCutMs?: number;
}

export type Transport = 'tcp' | 'unix' | 'tls';

export interface TlsListenerOptions {
  readonly host: string;
  readonly port: number;
  /** PEM text: the node's certificate and key, and the CA certificates that sign the clients'. */
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

export interface ApiServer {
  /** The TCP port actually bound (useful with port 0), or null. */
  readonly port: number | null;
  /** The TLS port actually bound, or null. */
  readonly tlsPort: number | null;
  close(): Promise<void>;
}

/** Idle keep-alive connections are closed after this long. */
const KEEP_ALIVE_MS = 15_000;
/** A request must arrive whole within this long (slowloris). */
const REQUEST_TIMEOUT_MS = 30_000;
/** A connection on which nothing moves for this long, while no call is being answered, is cut. */
const IDLE_CUT_MS = REQUEST_TIMEOUT_MS * 2;

function listen(server: Server | TlsServer, target: { port: number; host: string } | { path: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if ('path' in target) server.listen(target.path, done);
    else server.listen(target.port, target.host, done);
  });
}

/** Removes a socket file left by a daemon that died; refuses to remove anything else. */
async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (!st) return;
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; not removing it`);
  await unlink(path);
}

/**
 * One XML-RPC request from an identified caller, answered: the response or a fault, always a
 * document to send back. Shared by the HTTP transports and the ssh gateway's delegates.
 */
export async function answerCall(
  body: Buffer,
  caller: Caller,
  call: ApiServerOptions['call'],
  logger: Logger,
  answers?: AnswerCache,
): Promise<string> {
  const started = Date.now();
  let method = '?';
  try {
    const decoded = decodeCall(body);
    method = decoded.method;
    const readFrom = answers?.generation();
    const result = await call(caller, decoded.method, decoded.params);
    logger.debug('api call', { method, caller: describeCaller(caller), duration_ms: Date.now() - started });
    const response = encodeResponse(result ?? 1);
    if (readFrom !== undefined) answers!.keep(caller, body, method, response, readFrom);
    return response;
  } catch (error) {
    const fault = error instanceof ApiFault ? error : new ApiFault(FaultCode.internal, `internal error: ${describeError(error)}`);
    if (!(error instanceof ApiFault)) logger.error('api call failed', { method, error: (error as Error).stack ?? String(error) });
    logger[fault.logged ? 'debug' : 'info']('api fault', {
      method: method.slice(0, 64), caller: describeCaller(caller), code: fault.code, fault: fault.message.slice(0, 200),
    });
    return encodeFault(fault.code, fault.message);
  }
}

/**
 * The limits every listener keeps: keep-alive, request and idle timeouts, header count, bad
 * requests. A connection is cut when idle unless one of its calls is being answered (`answering`):
 * a call may take long (AddImage downloads), and the idle cut is for stalled peers, not for us.
 */
function configure<S extends Server | TlsServer>(server: S, answering: WeakSet<Socket>, idleCutMs: number): S {
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = REQUEST_TIMEOUT_MS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.maxHeadersCount = 50;
  // A connection that stops in the middle of anything is cut rather than held; a request that stops
  // arriving is the requestTimeout's.
  cutIdleConnections(server, idleCutMs, (socket) => answering.has(socket));
  server.on('clientError', (_error, socket: Socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });
  return server;
}

/**
 * Sends one answer, unless one was sent already (a request too large is answered while it
 * arrives); `bytes` is its length when known (a kept answer's is counted once). A text of as many
 * bytes as characters is ASCII, and is written as latin1, the same bytes: node:http then copies
 * the head and the text out byte for byte, where UTF-8 would encode them (about 2 µs a call of
 * the API bench's, a tenth of the server's work on a cached answer).
 */
function send(res: ServerResponse, status: number, body: string | Buffer, bytes = Buffer.byteLength(body)): void {
  if (res.headersSent) return;
  res.writeHead(status, {
    'content-type': 'text/xml; charset=utf-8',
    'content-length': bytes,
  });
  if (typeof body === 'string' && bytes === body.length) res.end(body, 'latin1');
  else res.end(body);
}

/**
 * Reads the request's body up to `limit` bytes; over it, the request is answered with its fault and
 * its body is not handed on. Little is made per request (its 'data' and 'end' listeners; a body of
 * one piece is kept as it came): a call takes a few tens of microseconds, and what it allocates is
 * paid for again by the young-generation collector. A request aborted mid-body has nobody left to
 * answer: with no 'error' listener, node:http only ends it (an IncomingMessage emits 'error' only
 * to listeners).
 */
function readLimitedBody(req: IncomingMessage, res: ServerResponse, limit: number, onBody: (body: Buffer) => void): void {
  let first: Buffer | null = null;
  let more: Buffer[] | null = null;
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    if (size > limit) return;
    size += chunk.length;
    if (size > limit) {
      first = more = null;
      send(res, 413, encodeFault(FaultCode.notWellFormed, `request too large: more than ${limit} bytes`));
    } else if (first === null) first = chunk;
    else (more ??= [first]).push(chunk);
  });
  req.on('end', () => {
    if (size <= limit) onBody(more !== null ? Buffer.concat(more, size) : (first ?? Buffer.alloc(0)));
  });
}

export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const { logger } = options;
  const callers = new WeakMap<Socket, Promise<Caller>>();
  /** Callers once identified: a keep-alive connection's later calls need not wait on a promise. */
  const known = new WeakMap<Socket, Caller>();
  const answering = new WeakSet<Socket>();

  const handler = (transport: Transport) => (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== 'POST') {
      send(res, 405, encodeFault(FaultCode.invalidRequest, `XML-RPC requests are POSTed; got ${req.method}`));
      return;
    }
    const declared = Number(req.headers['content-length'] ?? NaN);
    // A body over the limit is answered at once, and the rest of it read and thrown away: a client
    // that writes the whole body before it reads (Python's xmlrpc.client does) would otherwise find
    // the connection closed under it and never see the answer. requestTimeout bounds the reading.
    if (declared > options.maxRequestBytes) {
      send(res, 413, encodeFault(FaultCode.notWellFormed, `request too large: ${declared} bytes, the limit is ${options.maxRequestBytes}`));
      req.resume();
      return;
    }
    readLimitedBody(req, res, options.maxRequestBytes, (body) => {
      const socket = req.socket;
      const caller = known.get(socket);
      if (caller) {
        respond(socket, body, caller, res);
        return;
      }
      let identity = callers.get(socket);
      if (!identity) {
        identity = options.identify(socket, transport);
        callers.set(socket, identity);
      }
      identity.then(
        (identified) => {
          known.set(socket, identified);
          respond(socket, body, identified, res);
        },
        (error: unknown) => {
          logger.error('api caller not identified', { error: describeError(error) });
          send(res, 200, encodeFault(FaultCode.internal, `internal error: the caller could not be identified: ${describeError(error)}`));
        },
      );
    });
  };

  const idleCutMs = options.idleCutMs ?? IDLE_CUT_MS;
  /** An answer not all taken by the kernel arms the idle cut: a peer that stops reading it is cut in time. */
  const sendAnswer = (socket: Socket, res: ServerResponse, answer: string, bytes?: number): void => {
    send(res, 200, answer, bytes);
    rearmAfterAnswer(socket, idleCutMs);
  };

  const respond = (socket: Socket, body: Buffer, caller: Caller, res: ServerResponse): void => {
    // A repeated read of an unchanged database is answered at once, without a promise in between
    // (and without a debug line: at tens of thousands a second the metrics count them).
    const kept = options.answers?.lookup(caller, body);
    if (kept) {
      sendAnswer(socket, res, kept.answer, kept.bytes);
      return;
    }
    answering.add(socket);
    void answerCall(body, caller, options.call, logger, options.answers)
      .then((response) => sendAnswer(socket, res, response))
      .finally(() => answering.delete(socket));
  };

  const servers: Array<Server | TlsServer> = [];
  let port: number | null = null;
  let tlsPort: number | null = null;
  try {
    /** Listens, and keeps the server for the close; the port actually bound. */
    const onPort = async (server: Server | TlsServer, target: { port: number; host: string }) => {
      await listen(server, target);
      servers.push(server);
      const address = server.address();
      return typeof address === 'object' && address ? address.port : target.port;
    };
    if (options.port !== null) port = await onPort(configure(createServer(handler('tcp')), answering, idleCutMs), { port: options.port, host: options.host });
    if (options.tls) tlsPort = await onPort(configure(createTlsListener(options.tls, handler('tls'), logger), answering, idleCutMs), options.tls);
    await removeStaleSocket(options.socketPath);
    const unix = configure(createServer(handler('unix')), answering, idleCutMs);
    await listen(unix, { path: options.socketPath });
    servers.push(unix);
    // Every local user may connect (the caller's uid decides what it may do); the directory
    // holding the socket is not world-writable, so nobody can replace it.
    await chmod(options.socketPath, 0o666);
  } catch (error) {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    throw error;
  }
  logger.info('api listening', {
    tcp: port === null ? 'off' : `${options.host}:${port}`, socket: options.socketPath,
    tls: tlsPort === null ? 'off' : `${options.tls!.host.includes(':') ? `[${options.tls!.host}]` : options.tls!.host}:${tlsPort}`,
  });

  return {
    port,
    tlsPort,
    async close() {
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              s.close(() => resolve());
              s.closeAllConnections();
            }),
        ),
      );
      await unlink(options.socketPath).catch(() => undefined);
    },
  };
}

/** A refused handshake is logged once per peer address and reason per this long. */
const HANDSHAKE_LOG_WINDOW_MS = 10 * 60_000;

/**
 * The TLS listener: a client must present a certificate the CA signed, or the handshake fails
 * (no certificate, another CA's, an expired one); nothing of the API is reached before that.
 */
function createTlsListener(tls: TlsListenerOptions, handle: (req: IncomingMessage, res: ServerResponse) => void, logger: Logger): TlsServer {
  const server = createTlsServer({
    cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: true,
    minVersion: 'TLSv1.2', handshakeTimeout: REQUEST_TIMEOUT_MS,
  }, handle);
  const refusals = logLimiter({ windowMs: HANDSHAKE_LOG_WINDOW_MS, now: Date.now });
  // A TLS socket whose handshake failed has lost its address: it is taken from the TCP socket
  // under it (Node's _parent), noted here while that one is still connected.
  const peers = new WeakMap<Socket, string>();
  server.on('connection', (raw: Socket) => peers.set(raw, raw.remoteAddress ?? '-'));
  server.on('tlsClientError', (error: Error & { code?: string; reason?: string }, socket: TLSSocket) => {
    const under = (socket as TLSSocket & { _parent?: Socket | null })._parent;
    const peer = socket.remoteAddress ?? (under ? peers.get(under) : undefined) ?? '-';
    const { reason, refused } = describeHandshakeFailure(error, socket);
    const admitted = refusals.admit(`${peer} ${reason}`);
    if (admitted.log) logger[refused ? 'info' : 'debug']('api tls handshake refused', { peer, reason, refused_since_last: admitted.repeats });
    socket.destroy();
  });
  return server;
}

/**
 * Why a handshake failed, in an operator's words. A certificate that does not verify is only
 * found once the handshake is over, and the socket is then closed under Node's own "socket hang
 * up": the reason is the verification's (authorizationError).
 */
function describeHandshakeFailure(error: Error & { code?: string; reason?: string }, socket: TLSSocket): { reason: string; refused: boolean } {
  if (socket.authorizationError) return { reason: `client certificate not verified: ${String(socket.authorizationError)}`, refused: true };
  // OpenSSL's own errors carry a reason ("peer did not return a certificate"); a peer that just
  // went away (a port probe) is no refusal worth an info line.
  if (error.reason) return { reason: error.reason, refused: true };
  return { reason: (error.code ?? error.message).slice(0, 200), refused: !/^(ECONNRESET|EPIPE)$/.test(error.code ?? '') };
}
