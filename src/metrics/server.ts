// The metrics endpoint: GET /metrics in Prometheus's text exposition format, nothing else.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';
import { describeError } from '../util/errors.js';
import { cutIdleConnections, rearmAfterAnswer } from '../util/idle-cut.js';
import type { NodeMetrics } from './registry.js';

export interface MetricsServer {
  /** The port it listens on (the one asked for, or the one given for port 0). */
  readonly port: number;
  close(): Promise<void>;
}

/** A connection on which nothing moves this long is cut: a scraper that stops reading holds neither socket nor text. */
const IDLE_CUT_MS = 60_000;

export async function startMetricsServer(metrics: NodeMetrics, address: string, port: number, logger: Logger, idleCutMs = IDLE_CUT_MS): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; the metrics are at GET /metrics\n');
      return;
    }
    metrics.text().then((text) => {
      res.writeHead(200, { 'content-type': metrics.contentType, 'content-length': Buffer.byteLength(text) });
      res.end(req.method === 'HEAD' ? undefined : text);
      rearmAfterAnswer(res.socket, idleCutMs);
    }, (error: unknown) => {
      logger.warn('metrics not collected', { error: describeError(error) });
      res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics not collected\n');
    });
  });
  server.keepAliveTimeout = 5_000;
  server.requestTimeout = 30_000;
  cutIdleConnections(server, idleCutMs);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  logger.info('metrics listening', { address: `${address}:${bound}` });
  return {
    port: bound,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
