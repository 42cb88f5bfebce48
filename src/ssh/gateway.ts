// The ssh gateway: the daemon's own ssh server, so that a node needs no special sshd set-up.
// A delegate's session carries one XML-RPC request on stdin and gets the answer on stdout, as its
// forward_api_calls login shell would give it; a sliver's session is its login shell, or one
// command, running as the sliver inside its cgroups.
//
// Public keys only, checked against the keys in the node database. An unknown user, a wrong key,
// a password and keyboard-interactive all get the same answer ("publickey" may continue), so the
// gateway does not tell which accounts exist.
import { createServer, type Socket } from 'node:net';
import { constants } from 'node:os';
import ssh2, { type AuthContext, type Connection, type ServerChannel, type Session } from 'ssh2';
import { encodeFault } from '../api/codec.js';
import { FaultCode } from '../api/faults.js';
import type { Caller } from '../api/identity.js';
import type { NodeDatabase } from '../db/types.js';
import type { Logger } from '../log.js';
import { keyAllowed, loginTarget, type LoginTarget } from './authorized.js';
import { fingerprintOf } from './host-key.js';
import {
  accountLaunch, sshLoginEnvironment, startPipedSession, startTerminalSession, type SessionAccount, type SessionLaunch,
  type TerminalRequest,
} from './sessions.js';
import { describeError } from '../util/errors.js';

const { Server, utils } = ssh2;

export interface GatewayOptions {
  readonly host: string;
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
  /** Largest request a delegate may send, bytes (the API's own limit). */
  readonly maxRequestBytes: number;
  readonly database: () => NodeDatabase;
  /** The sliver's account if it exists on the host and is the daemon's, and whether it is started. */
  readonly sliverAccount: (name: string) => Promise<{ account: SessionAccount; started: boolean } | null>;
  /** The delegate account's uid, or null when it does not exist (yet). */
  readonly delegateUid: (name: string) => Promise<number | null>;
  /** The cgroup.procs files the sliver's processes start in. */
  readonly cgroupFiles: (name: string) => readonly string[];
  /**
   * A libvirt sliver's session: what runs (as root) to reach the guest, e.g. its console, or the
   * reason a command cannot be run there; null when the sliver is not a libvirt guest.
   */
  readonly guestSession?: (name: string, command: string | null, terminal: boolean) => Promise<{ launch: SessionLaunch | { refused: string }; started: boolean } | null>;
  /** Answers one XML-RPC request as the API does. */
  readonly callApi: (caller: Caller, body: Buffer) => Promise<string>;
  readonly logger: Logger;
}

export interface Gateway {
  readonly port: number;
  /** Sessions open now, in total. */
  sessions(): number;
  close(): Promise<void>;
}

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, number]) => [number, name.replace(/^SIG/, '')]));
const MAX_CLIENT_VARIABLES = 64;

interface Login {
  readonly target: LoginTarget;
  readonly fingerprint: string;
}

export async function startSshGateway(options: GatewayOptions): Promise<Gateway> {
  const { logger } = options;
  const perAccount = new Map<string, number>();
  let total = 0;
  const clients = new Set<Connection>();
  // The TCP side is the daemon's own: ssh2 hears of a connection only once the peer speaks ssh, so
  // the login grace starts here, where a peer that never says anything is also seen.
  const sockets = new Map<string, { socket: Socket; grace: NodeJS.Timeout }>();
  const tcp = createServer((socket) => {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    // Each step of the handshake and each keystroke is a small write that must not wait for the
    // peer's delayed ACK (Nagle's algorithm made every login ~40 ms slower per round trip).
    socket.setNoDelay(true);
    const grace = setTimeout(() => {
      logger.info('ssh connection closed: not logged in in time', { remote, grace_s: options.loginGraceMs / 1000 });
      socket.destroy();
    }, options.loginGraceMs);
    sockets.set(remote, { socket, grace });
    socket.once('close', () => {
      clearTimeout(grace);
      sockets.delete(remote);
    });
    server.injectSocket(socket);
  });
  /** Ends a connection: ssh2 says goodbye, and the socket goes too if the peer does not answer. */
  const cut = (client: Connection, remote: string) => {
    client.end();
    const socket = sockets.get(remote)?.socket;
    setTimeout(() => socket?.destroy(), 1_000).unref();
  };

  const server = new Server({ hostKeys: [options.hostKey], ident: 'nodemgr' }, (client, info) => {
    clients.add(client);
    const remote = `${info.ip}:${info.port}`;
    let login: Login | null = null;
    let failures = 0;
    const idle = setTimeout(() => {
      logger.info('ssh connection closed: idle', { remote, account: login?.target.name ?? '', idle_s: options.idleTimeoutMs / 1000 });
      cut(client, remote);
    }, options.idleTimeoutMs);
    const touch = () => idle.refresh();

    // As OpenSSH's MaxAuthTries: refused attempts are counted (the client's opening "none" and a
    // key's query are not), and the connection is cut once there are too many.
    const refuse = (ctx: AuthContext, why: string | null) => {
      if (ctx.method !== 'none') failures++;
      if (why) logger.info('ssh login refused', { remote, user: ctx.username.slice(0, 64), why });
      if (failures >= options.maxAuthAttempts) {
        logger.info('ssh connection closed: too many failed logins', { remote, user: ctx.username.slice(0, 64) });
        ctx.reject([]);
        cut(client, remote);
        return;
      }
      ctx.reject(['publickey']);
    };
    client.on('authentication', (ctx: AuthContext) => {
      if (ctx.method !== 'publickey') {
        refuse(ctx, null);
        return;
      }
      const target = loginTarget(options.database(), ctx.username);
      if (!target || !target.enabled || !keyAllowed(target, ctx.key.data)) {
        refuse(ctx, ctx.signature ? `key ${fingerprintOf(ctx.key.data)} not allowed` : null);
        return;
      }
      // Without a signature the client only asks whether this key would do.
      if (!ctx.signature || !ctx.blob) {
        ctx.accept();
        return;
      }
      const key = utils.parseKey(ctx.key.data);
      const parsed = key instanceof Error ? null : Array.isArray(key) ? key[0] : key;
      if (!parsed || !parsed.verify(ctx.blob, ctx.signature, ctx.hashAlgo)) {
        refuse(ctx, 'bad signature');
        return;
      }
      login = { target, fingerprint: fingerprintOf(ctx.key.data) };
      ctx.accept();
    });

    client.on('ready', () => {
      clearTimeout(sockets.get(remote)?.grace);
      logger.info('ssh login', { remote, account: login!.target.name, kind: login!.target.kind, key: login!.fingerprint });
    });

    client.on('session', (accept) => {
      if (!login) return;
      touch();
      handleSession(accept(), login, { remote, clientAddress: info.ip, clientPort: info.port }, touch);
    });
    // Port forwarding and the like are not offered.
    client.on('tcpip', (_accept, reject) => reject());
    client.on('request', (_accept, reject) => reject?.());
    client.on('error', (error) => logger.debug('ssh connection error', { remote, error: error.message }));
    client.on('close', () => {
      clearTimeout(idle);
      clients.delete(client);
    });
  });

  function handleSession(session: Session, login: Login, peer: { remote: string; clientAddress: string; clientPort: number }, touch: () => void) {
    let terminal: TerminalRequest | null = null;
    const variables = new Map<string, string>();
    let resize: ((cols: number, rows: number) => void) | null = null;
    let started = false;

    session.on('pty', (accept, _reject, info) => {
      terminal = { term: info.term, cols: info.cols, rows: info.rows };
      accept?.();
    });
    session.on('env', (accept, reject, info) => {
      if (variables.size >= MAX_CLIENT_VARIABLES) return reject?.();
      variables.set(info.key, info.val);
      accept?.();
    });
    session.on('window-change', (accept, _reject, info) => {
      resize?.(info.cols, info.rows);
      accept?.();
    });
    session.on('subsystem', (_accept, reject) => reject?.());
    const begin = (channel: ServerChannel, command: string | null) => {
      if (started) return;
      started = true;
      void runSession(channel, command, login, peer, terminal, variables, touch, (r) => (resize = r)).catch((error: unknown) => {
        logger.error('ssh session failed', { account: login.target.name, remote: peer.remote, error: describeError(error) });
        endChannel(channel, 1, `nodemgr: the session could not be started: ${describeError(error)}\r\n`);
      });
    };
    session.on('shell', (accept) => begin(accept(), null));
    session.on('exec', (accept, _reject, info) => begin(accept(), info.command));
  }

  function endChannel(channel: ServerChannel, status: number | string, message?: string) {
    if (message) channel.stderr.write(message);
    if (typeof status === 'number') channel.exit(status);
    else channel.exit(status, false, '');
    channel.end();
  }

  async function runSession(
    channel: ServerChannel,
    command: string | null,
    login: Login,
    peer: { remote: string; clientAddress: string; clientPort: number },
    terminal: TerminalRequest | null,
    variables: ReadonlyMap<string, string>,
    touch: () => void,
    onResize: (resize: (cols: number, rows: number) => void) => void,
  ): Promise<void> {
    const name = login.target.name;
    const count = perAccount.get(name) ?? 0;
    if (total >= options.maxSessions || count >= options.maxSessionsPerAccount) {
      const which = total >= options.maxSessions ? `the node's limit of ${options.maxSessions}` : `the limit of ${options.maxSessionsPerAccount} for ${name}`;
      logger.info('ssh session refused: too many sessions', { account: name, remote: peer.remote });
      endChannel(channel, 1, `nodemgr: too many sessions (${which}); try again later\r\n`);
      return;
    }
    total++;
    perAccount.set(name, count + 1);
    const opened = Date.now();
    let ended = false;
    const finish = (status: number | string, message?: string) => {
      if (ended) return;
      ended = true;
      total--;
      const left = (perAccount.get(name) ?? 1) - 1;
      if (left === 0) perAccount.delete(name);
      else perAccount.set(name, left);
      logger.info('ssh session ended', {
        account: name, kind: login.target.kind, key: login.fingerprint, remote: peer.remote,
        session: command === null ? (login.target.kind === 'delegate' ? 'api' : terminal ? 'shell' : 'shell without terminal') : 'exec',
        command: command?.slice(0, 200) ?? '', duration_ms: Date.now() - opened, exit_status: String(status),
      });
      endChannel(channel, status, message);
    };

    if (login.target.kind === 'delegate') {
      await delegateRequest(channel, login, touch, finish);
      return;
    }

    const found = await options.sliverAccount(name);
    const guest = found ? null : await options.guestSession?.(name, command, terminal !== null);
    if (!found && !guest) {
      finish(1, `nodemgr: sliver ${name} does not exist on this node yet\r\n`);
      return;
    }
    if (!(found ?? guest)!.started) {
      finish(1, `nodemgr: sliver ${name} is stopped; it can be logged into once it is started again\r\n`);
      return;
    }
    if (guest && 'refused' in guest.launch) {
      finish(1, `nodemgr: ${guest.launch.refused}\r\n`);
      return;
    }
    const account: SessionAccount = found?.account ?? { name, uid: 0, gid: 0, home: '/', shell: '/bin/sh' };
    const env = sshLoginEnvironment(account, {
      clientAddress: peer.clientAddress, clientPort: peer.clientPort, serverAddress: options.host, serverPort: boundPort,
    }, variables, terminal);
    const launch = found ? accountLaunch(found.account, options.cgroupFiles(name), command) : (guest!.launch as SessionLaunch);

    if (terminal) {
      let pty;
      try {
        pty = await startTerminalSession(launch, env, terminal);
      } catch (error) {
        finish(1, `nodemgr: ${describeError(error)}; a command without a terminal (ssh -T) still works\r\n`);
        return;
      }
      onResize((cols, rows) => {
        if (cols > 0 && rows > 0) pty.resize(Math.min(cols, 1000), Math.min(rows, 500));
      });
      // Output goes only as fast as the client reads it: a client that stops reading stops its
      // own shell's output, and nobody else's.
      pty.onData((data) => {
        touch();
        if (!channel.write(data)) {
          pty.pause();
          channel.once('drain', () => pty.resume());
        }
      });
      channel.on('data', (data: Buffer) => {
        touch();
        pty.write(data.toString('binary'));
      });
      pty.onExit(({ exitCode, signal }) => finish(signal ? (SIGNAL_NAMES.get(signal) ?? 'KILL') : exitCode));
      channel.on('close', () => {
        if (!ended) pty.kill('SIGHUP');
      });
      return;
    }

    const child = startPipedSession(launch, env);
    child.stdout!.on('data', touch);
    child.stdout!.pipe(channel, { end: false });
    child.stderr!.pipe(channel.stderr, { end: false });
    channel.on('data', touch);
    channel.pipe(child.stdin!);
    child.stdin!.on('error', () => undefined); // the command may exit without reading its input
    child.on('error', (error) => finish(1, `nodemgr: ${error.message}\r\n`));
    child.on('close', (code, signal) => finish(signal ? signal.replace(/^SIG/, '') : (code ?? 1)));
    channel.on('close', () => {
      if (!ended) child.kill('SIGHUP');
    });
  }

  /** One XML-RPC request on stdin, the answer on stdout, as forward_api_calls does. */
  async function delegateRequest(channel: ServerChannel, login: Login, touch: () => void, finish: (status: number, message?: string) => void) {
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    channel.on('data', (chunk: Buffer) => {
      touch();
      if (refused) return;
      size += chunk.length;
      if (size > options.maxRequestBytes) {
        refused = true;
        chunks.length = 0;
        // As forward_api_calls answers it: fault 102 and exit status 2.
        channel.write(encodeFault(FaultCode.invalidArgument, `request too large: more than ${options.maxRequestBytes} bytes`));
        finish(2);
        return;
      }
      chunks.push(chunk);
    });
    channel.on('end', () => {
      if (refused) return;
      void (async () => {
        const uid = await options.delegateUid(login.target.name);
        const caller: Caller = { uid: uid ?? -1, kind: 'delegate', name: login.target.name };
        const answer = await options.callApi(caller, Buffer.concat(chunks, size));
        channel.write(answer);
        finish(0);
      })().catch((error: unknown) => finish(1, `nodemgr: ${describeError(error)}\n`));
    });
  }

  const boundPort = await new Promise<number>((resolve, reject) => {
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
    sessions: () => total,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of clients) client.end();
        for (const { socket } of sockets.values()) socket.destroy();
        tcp.close(() => resolve());
      }),
  };
}
