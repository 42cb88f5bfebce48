// What the libvirt system tests share: whether they can run here, and a test node (a daemon of
// its own with an authority document the test sets, an address pool and a sandbox).
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ExecutionContext } from 'ava';
import { readDatabaseSnapshot } from '../../../src/db/store.js';
import type { NodeDatabase } from '../../../src/db/types.js';
import { readDomainDetails, type DomainDetails } from '../../../src/runtimes/libvirt/domain-xml.js';
import { cli, isRoot, run, sandbox, serveDocument, startDaemonProcess, stopDaemonProcess, type DaemonProcess, type Sandbox } from './host.js';
import { slicesXml, type TestSlice } from './slices.js';

/** Why the tests of the libvirt driver at `uri` cannot run here, or null. */
export async function libvirtUnavailable(uri: string): Promise<string | null> {
  if (!isRoot) return 'not root';
  try {
    await run('virsh', ['-c', uri, 'version'], { timeout: 20_000 });
  } catch (error) {
    return `libvirtd does not answer on ${uri} (test/libvirt-setup.sh starts it): ${(error as Error).message.split('\n')[0]}`;
  }
  try {
    await import('@unraid/libvirt');
  } catch (error) {
    return `the libvirt binding is not built (native/build.sh builds it): ${(error as Error).message.split('\n')[0]}`;
  }
  return null;
}

/** Why lxc containers cannot run here (libvirt's lxc driver, the binding, the overlay file system), or null. */
export async function lxcUnavailable(): Promise<string | null> {
  const why = await libvirtUnavailable('lxc:///system');
  if (why !== null) return why;
  if (!/\toverlay$/m.test(await readFile('/proc/filesystems', 'utf8'))) return 'the kernel has no overlay file system';
  return null;
}

/** virsh on one connection, and what the tests ask of it. */
export function virshOn(uri: string) {
  const virsh = async (...args: string[]): Promise<string> => (await run('virsh', ['-c', uri, ...args])).stdout;
  return {
    virsh,
    /** The domain's state ("running", "shut off"), or null when there is no such domain. */
    domainState: (name: string): Promise<string | null> => virsh('domstate', name).then((s) => s.trim(), () => null),
    /** What libvirt holds of the domain now (the running definition of a running one). */
    liveDetails: async (name: string): Promise<DomainDetails> => readDomainDetails(await virsh('dumpxml', name)),
  };
}

export const fileUri = (path: string) => pathToFileURL(path).href;

export interface GuestNode {
  box: Sandbox;
  /** The daemon's guest_dir. */
  guests: string;
  daemon: DaemonProcess | null;
  /** Serves a new document and has the daemon sync at once. */
  setDocument(slices: TestSlice[]): void;
  start(): void;
  db(): Promise<NodeDatabase>;
  /** `nodemgr call` of an API method; its output, trimmed. */
  call(...args: string[]): Promise<string>;
  close(): Promise<void>;
}

let timestamp = 1_800_000_000;

/**
 * A node for one test, torn down when the test ends (the daemon's last lines logged when it
 * failed). `pool`: the address pool's entries, [MAC, IP/prefix]; `beforeCleanup` runs after the
 * daemon stopped and before the sandbox goes (for what the test's guests may have left).
 */
export async function guestNode(t: ExecutionContext, opts: {
  settings: Record<string, string | number>;
  pool: ReadonlyArray<readonly [string, string]>;
  beforeCleanup?: (node: GuestNode) => Promise<void>;
}): Promise<GuestNode> {
  const server = await serveDocument(slicesXml(timestamp, []));
  const box = await sandbox({ authority_url: server.url, ...opts.settings });
  const lines = opts.pool.map(([mac, ip], i) => `${mac} ${ip} # test address ${i + 1}`);
  await writeFile(join(box.dir, 'mac-addresses'), `# the test's pool\n${lines.join('\n')}\n`);
  const n: GuestNode = {
    box,
    guests: join(box.dir, 'guests'),
    daemon: null,
    setDocument(slices) {
      server.set(slicesXml(++timestamp, slices));
      n.daemon?.child.kill('SIGHUP'); // sync now
    },
    start() {
      n.daemon = startDaemonProcess(box.config);
    },
    db: () => readDatabaseSnapshot(join(box.stateDir, 'nodemgr.json')),
    call: async (...args) => (await run(process.execPath, [cli, 'call', '--config', box.config, ...args])).stdout.trim(),
    async close() {
      if (n.daemon) await stopDaemonProcess(n.daemon);
      await server.close();
      await opts.beforeCleanup?.(n);
      await box.cleanup();
    },
  };
  t.teardown(async () => {
    if (n.daemon && !t.passed) t.log(n.daemon.output().split('\n').slice(-30).join('\n'));
    await n.close();
  });
  return n;
}
