// A repository of virtual clusters for the tests and the bench: one description, "testvc" (a
// frontend, and computes after a clock wait), whose nodes boot the test guest's kernel and
// initramfs directly with a gzip-compressed ext2 disk shaped like a cluster node's image, served
// over loopback HTTP.
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip, gzipSync } from 'node:zlib';
import type { TestGuest } from './guest.js';
import { buildVcDisk } from './vc-disk.js';

export interface ServedRepository {
  readonly url: string;
  close(): void;
}

function domain(role: 'frontend' | 'compute', interfaces: string[]): string {
  return `<domain type='kvm'><name>${role}</name>
      <os><type>hvm</type><kernel>vmlinuz</kernel><initrd>initrd.cpio</initrd></os>
      <memory unit='MiB'>256</memory><vcpu>1</vcpu>
      <devices>
        ${interfaces.map((n) => `<interface type='network'><source network='${n}'/></interface>`).join('\n        ')}
        <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='node.img.gz'/></disk>
      </devices>
    </domain>`;
}

/** The repository in `dir`, served over HTTP until closed. */
export async function serveVcRepository(guest: TestGuest, dir: string, waitSeconds: number, corrupt = false): Promise<ServedRepository> {
  const root = join(dir, 'repo');
  await mkdir(join(root, 'testvc'), { recursive: true });
  await writeFile(join(root, 'vcdb.txt'), '# the test repository\ntestvc,testvc/testvc.xml\n');
  await writeFile(join(root, 'testvc', 'testvc.xml'), `<vc version='0.1'>
  <virtualization engine='kvm' type='hvm' arch='x86_64'/>
  <frontend>${domain('frontend', ['private', 'public'])}</frontend>
  <compute>
    <boot_dependency parent='frontend'><wait type='clock' value='${waitSeconds}'/></boot_dependency>
    ${domain('compute', ['private'])}
  </compute>
  <networks><network name='private' subnet='10.7.0.0' netmask='255.255.255.0' mtu='1500'/></networks>
</vc>
`);
  await copyFile(guest.kernel, join(root, 'testvc', 'vmlinuz'));
  await copyFile(guest.initrd, join(root, 'testvc', 'initrd.cpio'));
  const disk = await buildVcDisk(join(dir, 'disk'), 'node', { partitioned: false });
  // A corrupt image: gzip of bytes that hold no file system.
  if (corrupt) await writeFile(join(root, 'testvc', 'node.img.gz'), gzipSync(Buffer.alloc(1 << 20, 0x5a)));
  else await pipeline(createReadStream(disk.raw), createGzip(), createWriteStream(join(root, 'testvc', 'node.img.gz')));
  const server = createServer((req, res) => {
    const file = join(root, decodeURIComponent(new URL(req.url!, 'http://x').pathname));
    readFile(file).then((body) => res.writeHead(200).end(body), () => res.writeHead(404).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, close: () => (server as Server).close() };
}

