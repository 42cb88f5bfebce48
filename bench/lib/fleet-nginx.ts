// The fleet's authority: Debian's nginx (nginx-light) serving slices.xml as a static file, with
// its own configuration, pid file, logs and temp directories under the rehearsal's directory (the
// system's nginx, if any, is never touched). Static files get nginx's own validators (ETag from
// the mtime and size, Last-Modified); gzip is switched per poll cycle by a reload.
import { execFile } from 'node:child_process';
import { mkdir, readFile, rename, utimes, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Authority {
  readonly url: string;
  readonly accessLog: string;
  /** Serves `body` as `name` from the next request on (written whole, then renamed into place). */
  publish(name: string, body: string): Promise<void>;
  /** Rewrites the configuration with gzip on or off and reloads; resolves once the answers say so. */
  setGzip(on: boolean): Promise<void>;
  /** The master's and workers' CPU seconds so far. */
  cpuSeconds(): Promise<number>;
  stop(): Promise<void>;
}

export function nginxConfig(dir: string, address: string, gzip: boolean): string {
  return `# The fleet rehearsal's authority (written by bench/fleet.ts).
user www-data;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 8192; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  log_format fleet '$msec $remote_addr $status $request_length $bytes_sent "$http_if_none_match" "$http_if_modified_since" "$sent_http_content_encoding" "$request_uri"';
  access_log ${join(dir, 'access.log')} fleet;
  client_body_temp_path ${join(dir, 'tmp')};
  keepalive_timeout 0;
  gzip ${gzip ? 'on' : 'off'};
  gzip_types text/xml application/xml;
  gzip_vary on;
  server {
    listen ${address}:80;
    root ${join(dir, 'www')};
  }
}
`;
}

/** Starts nginx on `address`:80 serving `dir`/www. */
export async function startAuthority(dir: string, address: string): Promise<Authority> {
  const configPath = join(dir, 'nginx.conf');
  const www = join(dir, 'www');
  await mkdir(www, { recursive: true, mode: 0o755 });
  await mkdir(join(dir, 'tmp'), { recursive: true });
  let lastMtime = 0;
  const nginx = (...args: string[]) => run('nginx', ['-p', dir, '-c', configPath, '-e', join(dir, 'error.log'), ...args], { timeout: 30_000 });
  await writeFile(configPath, nginxConfig(dir, address, true));
  await nginx('-t', '-q');
  await nginx();
  const pids = async () => {
    const master = Number((await readFile(join(dir, 'nginx.pid'), 'utf8')).trim());
    const { stdout } = await run('pgrep', ['-P', String(master)]).catch(() => ({ stdout: '' }));
    return [master, ...stdout.split('\n').filter(Boolean).map(Number)];
  };
  const url = `http://${address}/slices.xml`;
  return {
    url,
    accessLog: join(dir, 'access.log'),
    async publish(name, body) {
      const path = join(www, name);
      await writeFile(`${path}.new`, body, { mode: 0o644 });
      // nginx's ETag and Last-Modified have a resolution of one second: each version gets a
      // second of its own, or a node could take a new document for the one it holds.
      const mtime = Math.max(Math.floor(Date.now() / 1000), lastMtime + 1);
      lastMtime = mtime;
      await utimes(`${path}.new`, mtime, mtime);
      await rename(`${path}.new`, path);
    },
    async setGzip(on) {
      await writeFile(configPath, nginxConfig(dir, address, on));
      await nginx('-s', 'reload');
      // The reload is asynchronous: the old worker may answer a while longer.
      for (let i = 0; i < 100; i++) {
        // A query of its own, so that the poll cycles read from the access log leave it out.
        if ((await fetchOnce(`${url}?probe`, true)) === (on ? 'gzip' : null)) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`nginx did not turn gzip ${on ? 'on' : 'off'} within 10 s of its reload`);
    },
    async cpuSeconds() {
      // A reload replaces the workers: the master's count of its reaped children keeps theirs.
      const [master, ...workers] = await pids();
      let total = (await processCpuSeconds(master!, { reapedChildren: true })) ?? 0;
      for (const pid of workers) total += (await processCpuSeconds(pid)) ?? 0;
      return total;
    },
    async stop() {
      await nginx('-s', 'quit').catch(async () => nginx('-s', 'stop'));
    },
  };
}

/** A whole GET, accepting gzip or not; the answer's Content-Encoding (null: none). */
export function fetchOnce(url: string, gzip: boolean): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: gzip ? { 'accept-encoding': 'gzip' } : {} }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.headers['content-encoding'] ?? null));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Linux's USER_HZ, the unit of /proc/<pid>/stat's times, on every architecture Node runs on. */
const TICKS_PER_SECOND = 100;

/**
 * The user and system CPU seconds of a process from /proc/<pid>/stat, with those of its children
 * it has waited for when asked; null when it is gone.
 */
export async function processCpuSeconds(pid: number, options: { reapedChildren?: boolean } = {}): Promise<number | null> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  if (text === null) return null;
  // The command name may hold spaces and parentheses: the fields start after the last ")",
  // with the state (field 3 of proc(5)) first; utime, stime, cutime, cstime are fields 14-17.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
  const own = fields[11]! + fields[12]!;
  return (options.reapedChildren ? own + fields[13]! + fields[14]! : own) / TICKS_PER_SECOND;
}
