// The uid behind a loopback TCP connection: the owner of the client's own socket, as the kernel
// answers for it (here a lookup given in its place; the real kernel: test/system/native.test.ts)
// or as tables in the format of /proc/net/tcp and tcp6 list it. A client that closed its end is
// nobody, though the kernel lists what is left of its socket with uid 0.
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeProcAddress, heldSocketUid, tcpClientUidLookup, type SocketOwner } from '../../src/api/tcp-client-uid.js';

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const line = (n: number, local: string, remote: string, uid: number) =>
  `  ${n}: ${local} ${remote} 01 00000000:00000000 00:00000000 00000000 ${String(uid).padStart(5)}        0 ${1000 + n} 1 0000000000000000 20 4 30 10 -1\n`;
/** A TIME_WAIT entry as the kernel lists it: uid 0 and inode 0, whoever owned the socket. */
const timeWaitLine = (n: number, local: string, remote: string) =>
  `  ${n}: ${local} ${remote} 06 00000000:00000000 03:00001767 00000000     0        0 0 3 0000000000000000\n`;

async function procNet(t: import('ava').ExecutionContext, tcp: string, tcp6 = '') {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-procnet-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'tcp'), HEADER + tcp);
  await writeFile(join(dir, 'tcp6'), HEADER + tcp6);
  return dir;
}

test('addresses are decoded as the kernel writes them (host byte order)', (t) => {
  t.is(decodeProcAddress('0100007F:032C'), '127.0.0.1:812');
  t.is(decodeProcAddress('0000000000000000FFFF00000100007F:C044'), '127.0.0.1:49220');
  t.is(decodeProcAddress('00000000000000000000000001000000:0050'), '::1:80');
  t.is(decodeProcAddress('0100007F'), null);
  t.is(decodeProcAddress('XYZ:0050'), null);
});

test("the client end's owner is found, not a socket that merely shares its port", async (t) => {
  // Port 0xC044 = 49220 appears four times: as a remote port of the server's own end (uid 0), on
  // another address, and in a listening socket; only one line is the client's end towards 812.
  const dir = await procNet(
    t,
    line(0, '0100007F:032C', '0100007F:C044', 0) +
      line(1, '0200007F:C044', '0100007F:032C', 1111) +
      line(2, '0100007F:C044', '0100007F:0050', 2222) +
      Array.from({ length: 5000 }, (_, i) => line(10 + i, '0100007F:9E9B', `0100007F:${(0x8000 + i).toString(16).toUpperCase()}`, 3)).join('') +
      line(9000, '0100007F:C044', '0100007F:032C', 40123),
  );
  const connection = { remoteAddress: '127.0.0.1', remotePort: 49220, localAddress: '127.0.0.1', localPort: 812 };
  const lookup = tcpClientUidLookup({ procNet: dir });
  t.is(await lookup(connection), 40123);
  t.is(await lookup({ ...connection, remotePort: 49221 }), null, 'no such client socket: nobody');
  // Lookups that come together share one read, and each finds its own client.
  t.deepEqual(await Promise.all([lookup(connection), lookup({ ...connection, remotePort: 49221 }), lookup(connection)]), [40123, null, 40123]);
});

test('an IPv4 client on a dual-stack socket is found in tcp6', async (t) => {
  const dir = await procNet(t, '', line(0, '0000000000000000FFFF00000100007F:D431', '0000000000000000FFFF00000100007F:032C', 4242));
  const lookup = tcpClientUidLookup({ procNet: dir });
  t.is(await lookup({ remoteAddress: '::ffff:127.0.0.1', remotePort: 0xd431, localAddress: '::ffff:127.0.0.1', localPort: 812 }), 4242);
});

test('a client that closed its end before the lookup is nobody, not the uid 0 of its TIME_WAIT entry', async (t) => {
  const dir = await procNet(t, timeWaitLine(0, '0100007F:C044', '0100007F:032C'));
  const connection = { remoteAddress: '127.0.0.1', remotePort: 49220, localAddress: '127.0.0.1', localPort: 812 };
  t.is(await tcpClientUidLookup({ procNet: dir })(connection), null);
});

test('a socket names its owner only while a process holds it, connected', (t) => {
  t.is(heldSocketUid({ uid: 40123, inode: 51234, state: 1 }), 40123, 'established');
  t.is(heldSocketUid({ uid: 40123, inode: 51234, state: 8 }), 40123, 'close-wait: the client still holds it');
  t.is(heldSocketUid({ uid: 0, inode: 0, state: 6 }), null, 'time-wait');
  t.is(heldSocketUid({ uid: 40123, inode: 0, state: 4 }), null, 'orphaned: closed, on its way out');
  t.is(heldSocketUid({ uid: 0, inode: 700, state: 10 }), null, 'a listener on the port is not the client');
  t.is(heldSocketUid(null), null);
});

test('the kernel is asked first; the tables are read only where it cannot answer', async (t) => {
  // The tables say uid 1111 for the client: a lookup that answers from them is seen to.
  const dir = await procNet(t, line(0, '0100007F:C044', '0100007F:032C', 1111));
  const connection = { remoteAddress: '::ffff:127.0.0.1', remotePort: 49220, localAddress: '::ffff:127.0.0.1', localPort: 812 };
  const asked: string[] = [];
  const kernel = (sockets: Record<string, SocketOwner>) => (address: string, port: number, peerAddress: string, peerPort: number) => {
    const key = `${address}:${port}>${peerAddress}:${peerPort}`;
    asked.push(key);
    return sockets[key] ?? null;
  };
  const client = '127.0.0.1:49220>127.0.0.1:812';
  const server = '127.0.0.1:812>127.0.0.1:49220';

  t.is(await tcpClientUidLookup({ procNet: dir, lookupSocket: kernel({ [client]: { uid: 40123, inode: 9, state: 1 } }) })(connection), 40123);
  t.deepEqual(asked, [client], 'asked by the IPv4 form of the dual-stack addresses');

  asked.length = 0;
  const gone = tcpClientUidLookup({ procNet: dir, lookupSocket: kernel({ [server]: { uid: 0, inode: 7, state: 8 } }) });
  t.is(await gone(connection), null, 'our end is known and the client\'s is not: the client is gone');
  t.deepEqual(asked, [client, server]);

  const blind = tcpClientUidLookup({ procNet: dir, lookupSocket: kernel({}) });
  t.is(await blind(connection), 1111, 'the kernel knows neither end: it cannot see TCP sockets, the tables are read');

  const told: unknown[] = [];
  const failing = tcpClientUidLookup({
    procNet: dir,
    lookupSocket: () => { throw Object.assign(new Error('socket(AF_NETLINK, NETLINK_SOCK_DIAG): Address family not supported by protocol'), { code: 'EAFNOSUPPORT' }); },
    onLookupError: (error) => told.push(error),
  });
  t.deepEqual([await failing(connection), await failing(connection)], [1111, 1111]);
  t.is(told.length, 1, 'the fallback is told once, not at every connection');
  t.regex(String(told[0]), /NETLINK_SOCK_DIAG/);
});
