// nodemgr installed in the guest the way the README tells an operator to: the package (`npm pack`
// of this checkout, as `npm install -g .` would install it) installed with `npm install -g`, the
// configuration and the example document in /etc/nodemgr, the unit in /etc/systemd/system.
//
// The guest has no way out to the npm registry, so its npm installs offline from a cache the host
// fills (kept under the test cache, so only the first run downloads). Node.js: Debian 12's nodejs
// is 18 and nodemgr requires 20 (package.json's engines), so the guest gets a copy of the Node.js
// this test runs on, laid out as the host has it (node beside npm's global prefix).
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { projectRoot } from '../../system/support/host.js';
import { SHARE_MOUNT } from './guest.js';

const run = promisify(execFile);
const NPM_CACHE = join(process.env.NODEMGR_TEST_CACHE ?? '/var/cache/nodemgr-test', 'npm-cache');

export interface Share {
  readonly dir: string;
  readonly tarball: string;
  remove(): Promise<void>;
}

/** A directory for the guest: the package tarball, Node.js and npm, and npm's cache for the package's dependencies. */
export async function stageShare(): Promise<Share> {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-share-'));
  try {
    // The build is `npm run test:systemd`'s pretest; packing again would only rebuild it.
    await run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { cwd: projectRoot });
    const tarball = (await readdir(dir)).find((f) => f.endsWith('.tgz'));
    if (!tarball) throw new Error(`npm pack left no tarball in ${dir}`);
    // Filling the cache installs the package once on the host, in a throwaway prefix, without
    // its scripts: only what npm fetches matters here.
    const prefix = join(dir, 'host-prefix');
    await run('npm', ['install', '-g', '--prefix', prefix, '--cache', NPM_CACHE, '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', join(dir, tarball)],
      { timeout: 10 * 60_000 });
    await rm(prefix, { recursive: true, force: true });
    await cp(NPM_CACHE, join(dir, 'npm-cache'), { recursive: true });
    await cp(process.execPath, join(dir, 'node'));
    await cp(join(dirname(dirname(process.execPath)), 'lib', 'node_modules', 'npm'), join(dir, 'npm'), { recursive: true });
    return { dir, tarball, remove: () => rm(dir, { recursive: true, force: true }) };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** The operator's steps, as one script run in the guest as root. */
export function installScript(tarball: string): string {
  const share = SHARE_MOUNT;
  return `set -eu
# Node.js 20 and npm where the host has them (/usr/bin, /usr/lib/node_modules): npm's global
# prefix is then /usr, and the nodemgr command lands in /usr/bin.
install -m 0755 ${share}/node /usr/bin/node
mkdir -p /usr/lib/node_modules
cp -r ${share}/npm /usr/lib/node_modules/npm
ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/bin/npm
cp -r ${share}/npm-cache /root/.npm-offline
# The README: npm install -g, the configuration in /etc/nodemgr, the unit in /etc/systemd/system.
npm install -g --offline --cache /root/.npm-offline --no-audit --no-fund ${share}/${tarball}
package="$(npm root -g)/nodemgr"
install -d /etc/nodemgr
install -m 0644 "$package/etc/nodemgr.conf" "$package/etc/slices.xml" /etc/nodemgr/
sed -i 's|^cgroup_parent = .*|cgroup_parent = system.slice/nodemgr.service/slivers|' /etc/nodemgr/nodemgr.conf
install -m 0644 "$package/systemd/nodemgr.service" /etc/systemd/system/
systemctl daemon-reload
`;
}
