// The C parts built by native/build.sh (`npm run build:native`, also run by `npm install`): the
// peercred addon, through which the API server learns the Unix user behind a connection (on its
// Unix socket, SO_PEERCRED; on loopback TCP, the owner of the client's socket), and the path of
// forward_api_calls, the delegates' login shell.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SocketOwner } from '../api/tcp-client-uid.js';
import { describeError } from '../util/errors.js';

/** Who is at the other end of a Unix-domain connection, as the kernel recorded it at connect(). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

interface PeercredAddon {
  peerCredentials(fd: number): PeerCredentials;
  tcpSocketOwner(address: string, port: number, peerAddress: string, peerPort: number): SocketOwner | null;
}

const PACKAGE_NAME = 'nodemgr';
let cachedRoot: string | null = null;
let addon: PeercredAddon | null = null;

/** The directory of nodemgr's package.json: this file runs from src/native/ (tsx) or from
 * dist/src/native/ (compiled), so the way up is looked for rather than counted. */
function packageRoot(): string {
  if (cachedRoot !== null) return cachedRoot;
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && packageName(manifest) === PACKAGE_NAME) return (cachedRoot = dir);
    if (dirname(dir) === dir) {
      throw new Error(`no package.json of "${PACKAGE_NAME}" in ${start} or any directory above it`);
    }
  }
}

function packageName(manifest: string): unknown {
  try {
    return (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name;
  } catch {
    return undefined; // not ours, whatever it is
  }
}

/** Where native/build.sh puts what it builds. */
export function nativeBuildDir(): string {
  return join(packageRoot(), 'native', 'build');
}

function loadAddon(): PeercredAddon {
  if (addon !== null) return addon;
  const file = join(nativeBuildDir(), 'peercred.node');
  if (!existsSync(file)) {
    throw new Error(`the peercred addon ${file} is missing: run \`npm run build:native\``);
  }
  try {
    addon = createRequire(import.meta.url)(file) as PeercredAddon;
  } catch (error) {
    throw new Error(`cannot load the peercred addon ${file} (${describeError(error)}): run \`npm run build:native\``);
  }
  return addon;
}

/**
 * The credentials of the process that connected the other end of `socket`, a connection accepted on
 * (or made to) a Unix-domain socket. Throws when the socket has no file descriptor (closed, or not
 * yet connected), is not Unix-domain, or the kernel knows no peer; and when the addon is not built.
 */
export function peerCredentials(socket: Socket): PeerCredentials {
  // net.Socket keeps its fd on the internal handle; there is no public accessor.
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new Error('peerCredentials: the socket has no file descriptor (it is closed or not connected)');
  }
  return loadAddon().peerCredentials(fd);
}

/**
 * The TCP socket of this host whose own end is address:port and whose peer is
 * peerAddress:peerPort, as the kernel describes it (its owner's uid, inode and state); null when
 * the kernel knows none. Throws when the kernel cannot be asked, and when the addon is not built.
 */
export function tcpSocketOwner(address: string, port: number, peerAddress: string, peerPort: number): SocketOwner | null {
  return loadAddon().tcpSocketOwner(address, port, peerAddress, peerPort);
}

/** Absolute path of the forward_api_calls program (native/build/forward_api_calls); it is not
 * checked to exist, so that it can name a delegate's shell before the build. */
export function forwardApiCallsPath(): string {
  return join(nativeBuildDir(), 'forward_api_calls');
}
