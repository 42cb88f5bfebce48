// A lean HTTP/1.1 load generator for the API benchmark: raw sockets, pre-built requests, and only
// as much response parsing as framing needs (status, Content-Length, whether the server closes).
// node:http's client costs as much CPU per call as a fast server does, and on a small machine it
// would measure itself rather than the server.
import { connect, type Socket } from 'node:net';

export interface LoadFigures {
  readonly callsPerSecond: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
}

interface Response {
  readonly status: number;
  readonly bodyBytes: number;
}

const CALL_TIMEOUT_MS = 10_000;

/** One client: one connection at a time, reopened whenever the server closes it (HTTP/1.0). */
class Client {
  private socket: Socket | null = null;
  private buffer: Buffer = Buffer.alloc(0);
  private waiting: { resolve(r: Response): void; reject(e: Error): void } | null = null;
  private closeAfter = false;

  constructor(private readonly port: number) {}

  call(request: Buffer): Promise<Response> {
    return new Promise((resolve, reject) => {
      // A server that never answers costs this call, not the whole run.
      const timer = setTimeout(() => {
        this.socket?.destroy();
        this.socket = null;
        this.fail(new Error(`no answer within ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS);
      const settle = <T>(fn: (value: T) => void) => (value: T) => {
        clearTimeout(timer);
        fn(value);
      };
      this.waiting = { resolve: settle(resolve), reject: settle(reject) };
      this.buffer = Buffer.alloc(0);
      const socket = this.socket ?? this.open();
      socket.write(request);
    });
  }

  private open(): Socket {
    const socket = connect(this.port, '127.0.0.1');
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      this.tryFinish(false);
    });
    const gone = (error?: Error) => {
      // A socket this client already let go of (the server closed it after answering) is no news.
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.waiting) this.tryFinish(true, error);
    };
    socket.on('error', gone);
    socket.on('close', () => gone());
    this.socket = socket;
    return socket;
  }

  private tryFinish(closed: boolean, error?: Error): void {
    const head = this.buffer.indexOf('\r\n\r\n');
    if (head < 0) {
      if (closed) this.fail(error ?? new Error('connection closed before a response'));
      return;
    }
    const header = this.buffer.toString('latin1', 0, head);
    const status = Number(header.slice(9, 12));
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(header);
    const chunked = /\r\ntransfer-encoding:\s*chunked/i.test(header);
    const bodyBytes = this.buffer.length - head - 4;
    const complete = length ? bodyBytes >= Number(length[1]) : chunked ? this.buffer.subarray(-5).toString('latin1') === '0\r\n\r\n' : closed;
    if (!complete) {
      if (closed) this.fail(new Error('connection closed mid-response'));
      return;
    }
    this.closeAfter = header.startsWith('HTTP/1.0') ? !/\r\nconnection:\s*keep-alive/i.test(header) : /\r\nconnection:\s*close/i.test(header);
    if (this.closeAfter && this.socket) {
      this.socket.destroy();
      this.socket = null;
    }
    const waiting = this.waiting!;
    this.waiting = null;
    waiting.resolve({ status, bodyBytes });
  }

  private fail(error: Error): void {
    if (!this.waiting) return;
    const waiting = this.waiting;
    this.waiting = null;
    waiting.reject(error);
  }

  close(): void {
    this.socket?.destroy();
  }
}

/** Clients kept connected to one server between runs, so that runs can be short slices. */
export interface LoadClients {
  /**
   * Every client sends the next of its bodies as soon as its last call is answered, for `seconds`;
   * a call counts if it is answered 200 with a body. `window` is told when the seconds start and end
   * (to read the server's CPU over them).
   */
  run(seconds: number, window?: { start?(): void; end?(): void }): Promise<LoadFigures>;
  close(): void;
}

/** `clients` keep-alive clients of the server on `port`, taking turns through `bodies`. */
export function openClients(port: number, clients: number, bodies: readonly Buffer[]): LoadClients {
  const requests = bodies.map((body) =>
    Buffer.concat([
      Buffer.from(`POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\nContent-Length: ${body.length}\r\n\r\n`, 'latin1'),
      body,
    ]),
  );
  const pool = Array.from({ length: clients }, () => new Client(port));
  const next = pool.map((_, i) => i);
  return {
    async run(seconds, window = {}) {
      const latencies: number[] = [];
      let errors = 0;
      let running = true;
      const loop = async (c: number) => {
        while (running) {
          const start = process.hrtime.bigint();
          const ok = await pool[c]!.call(requests[next[c]! % requests.length]!).then(
            (r) => r.status === 200 && r.bodyBytes > 0,
            () => false,
          );
          next[c]! += clients;
          // A call that ends after the window closed is not counted.
          if (!running) break;
          if (ok) latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
          else errors++;
        }
      };
      window.start?.();
      const started = process.hrtime.bigint();
      const loops = pool.map((_, c) => loop(c));
      await new Promise((r) => setTimeout(r, seconds * 1000));
      running = false;
      window.end?.();
      const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
      await Promise.all(loops);
      const count = latencies.length;
      latencies.sort((a, b) => a - b);
      const at = (q: number) => latencies[Math.min(count - 1, Math.floor(q * count))] ?? NaN;
      return { callsPerSecond: count / elapsed, p50: at(0.5), p99: at(0.99), errors };
    },
    close: () => pool.forEach((client) => client.close()),
  };
}

/**
 * `clients` clients for `seconds` after a one-second warm-up (connections opened, the server's
 * first answers made), then closed; see LoadClients.run.
 */
export async function loadServer(
  port: number, clients: number, bodies: readonly Buffer[], seconds: number,
  window: { start?(): void; end?(): void } = {},
): Promise<LoadFigures> {
  const load = openClients(port, clients, bodies);
  try {
    await load.run(1);
    return await load.run(seconds, window);
  } finally {
    load.close();
  }
}
