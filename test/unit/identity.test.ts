// Who is calling: the uid behind a loopback TCP connection, read from tables in the format of
// /proc/net/tcp and tcp6, and the mapping of a uid to root, an account, or nobody.
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callerOf, decodeProcAddress, sharedTcpClientUid, tcpClientUid } from '../../src/api/identity.js';

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const line = (n: number, local: string, remote: string, uid: number) =>
  `  ${n}: ${local} ${remote} 01 00000000:00000000 00:00000000 00000000 ${String(uid).padStart(5)}        0 ${1000 + n} 1 0000000000000000 20 4 30 10 -1\n`;

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
  t.is(await tcpClientUid(connection, dir), 40123);
  t.is(await tcpClientUid({ ...connection, remotePort: 49221 }, dir), null, 'no such client socket: nobody');
  // A server's lookups that come together share one read, and each finds its own client.
  const lookup = sharedTcpClientUid(dir);
  t.deepEqual(await Promise.all([lookup(connection), lookup({ ...connection, remotePort: 49221 }), lookup(connection)]), [40123, null, 40123]);
});

test('an IPv4 client on a dual-stack socket is found in tcp6', async (t) => {
  const dir = await procNet(t, '', line(0, '0000000000000000FFFF00000100007F:D431', '0000000000000000FFFF00000100007F:032C', 4242));
  t.is(await tcpClientUid({ remoteAddress: '::ffff:127.0.0.1', remotePort: 0xd431, localAddress: '::ffff:127.0.0.1', localPort: 812 }, dir), 4242);
});

test('a uid is root, the account that has it, or nobody', (t) => {
  const accounts = new Map([[40123, { name: 'pl_web', kind: 'sliver' as const }], [40124, { name: 'del_ctrl', kind: 'delegate' as const }]]);
  const of = (uid: number) => callerOf(uid, (u) => accounts.get(u) ?? null);
  t.deepEqual(of(0), { uid: 0, kind: 'root', name: null });
  t.deepEqual(of(40123), { uid: 40123, kind: 'sliver', name: 'pl_web' });
  t.deepEqual(of(40124), { uid: 40124, kind: 'delegate', name: 'del_ctrl' });
  t.deepEqual(of(1000), { uid: 1000, kind: 'nobody', name: null });
});
