// The ssh gateway: the daemon's own ssh server, so that a node needs no special sshd set-up.
// A delegate's session carries one XML-RPC request on stdin and gets the answer on stdout, as its
// forward_api_calls login shell would give it; a sliver's session is its login shell, or one
// command, running as the sliver inside its cgroups.
//
// The parts: admission.ts (login grace, session limits), authentication.ts (public keys from the
// node database), connection.ts (one connection and its session requests), dispatch.ts (which
// session a login gets), channel-io.ts (terminal, pipes or API request on the channel).
import ssh2, { type Connection } from 'ssh2';
import type { NodeDatabase } from '../db/types.js';
import { connectionFront, sessionSlots } from './admission.js';
import { serveConnection } from './connection.js';
import type { SessionServices } from './dispatch.js';

const { Server } = ssh2;

export interface GatewayOptions extends SessionServices {
  /** 0: any free port (tests); the one bound is in the result. */
  readonly port: number;
  readonly hostKey: string;
  readonly maxSessions: number;
  readonly maxSessionsPerAccount: number;
  /** A connection with no data either way for this long is closed. */
  readonly idleTimeoutMs: number;
  readonly maxAuthAttempts: number;
  /** A connection not logged in after this long is closed. */
  readonly loginGraceMs: number;
  /** Connections not yet logged in at once; one more is closed as it comes. */
  readonly maxStartups: number;
  readonly database: () => NodeDatabase;
}

export interface Gateway {
  readonly port: number;
  /** Sessions open now, in total. */
  sessions(): number;
  close(): Promise<void>;
}

export async function startSshGateway(options: GatewayOptions): Promise<Gateway> {
  const { logger } = options;
  const slots = sessionSlots(options.maxSessions, options.maxSessionsPerAccount);
  const clients = new Set<Connection>();
  const front = connectionFront(options, logger, (socket) => server.injectSocket(socket));
  let boundPort = options.port;
  const context = {
    services: options, slots, serverPort: () => boundPort, front,
    database: options.database, maxAuthAttempts: options.maxAuthAttempts, idleTimeoutMs: options.idleTimeoutMs,
  };
  const server = new Server({ hostKeys: [options.hostKey], ident: 'nodemgr' }, (client, info) => {
    clients.add(client);
    client.on('close', () => clients.delete(client));
    serveConnection(client, info, context);
  });

  const { tcp } = front;
  boundPort = await new Promise<number>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(options.port, options.host, () => {
      tcp.off('error', reject);
      const address = tcp.address();
      resolve(typeof address === 'object' && address ? address.port : options.port);
    });
  });
  tcp.on('error', (error: Error) => logger.error('ssh gateway error', { error: error.message }));
  server.on('error', (error: Error) => logger.error('ssh gateway error', { error: error.message }));
  logger.info('ssh gateway listening', { address: `${options.host}:${boundPort}` });

  return {
    port: boundPort,
    sessions: () => slots.total(),
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of clients) client.end();
        front.destroyAll();
        tcp.close(() => resolve());
      }),
  };
}
