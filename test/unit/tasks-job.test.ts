// How a task's job is handed to the guest's agent (tasks/job.ts): one /bin/sh that takes everything
// as positional parameters and execs the job. Run here with the host's own /bin/sh, as the agent
// would run it, to show what the job gets.
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jobDirectories, jobRequest, signalName } from '../../src/tasks/job.js';
import type { PosixApplication } from '../../src/tasks/xsdl-types.js';

const app = (over: Partial<PosixApplication>): PosixApplication => ({
  kind: 'posix', executable: '/bin/echo', arguments: [], input: null, output: null, error: null, workingDirectory: null,
  environment: [], wallTimeSeconds: null, ...over,
});

/** Runs the request as the agent does: the exact path, arguments and environment. */
function runLikeTheAgent(request: ReturnType<typeof jobRequest>): Promise<{ code: number | null; signal: string | null }> {
  return new Promise((resolve) => {
    const child = execFile(request.path, request.args, { env: Object.fromEntries(request.env.map((e) => e.split(/=(.*)/s).slice(0, 2))) });
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
}

test('the job gets its arguments as written, its environment alone, its directory and its files', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-job-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'in.txt'), 'from stdin\n');
  const request = jobRequest(app({
    executable: '/bin/sh', arguments: ['-c', 'pwd; cat; echo "$1|$2|$GREETING|${i-none}"; echo oops >&2; exit 3', 'job', 'a b', '$HOME'],
    input: join(dir, 'in.txt'), output: join(dir, 'out.txt'), error: join(dir, 'err.txt'), workingDirectory: dir,
    environment: [{ name: 'GREETING', value: 'hello world' }],
  }));
  t.is(request.path, '/bin/sh');
  t.deepEqual(request.env, ['GREETING=hello world']);
  t.deepEqual(await runLikeTheAgent(request), { code: 3, signal: null });
  t.is(await readFile(join(dir, 'out.txt'), 'utf8'), `${dir}\nfrom stdin\na b|$HOME|hello world|none\n`);
  t.is(await readFile(join(dir, 'err.txt'), 'utf8'), 'oops\n');
  // The environment the job itself gets (a shell as the job would export its own PWD).
  const env = jobRequest(app({ executable: '/usr/bin/env', output: join(dir, 'env.txt'), workingDirectory: dir, environment: [{ name: 'A', value: '1' }] }));
  t.deepEqual(await runLikeTheAgent(env), { code: 0, signal: null });
  t.is(await readFile(join(dir, 'env.txt'), 'utf8'), 'A=1\n');
});

test('a job killed by a signal is seen killed by it (the shell execs the job)', async (t) => {
  t.deepEqual(await runLikeTheAgent(jobRequest(app({ executable: '/bin/sh', arguments: ['-c', 'kill -9 $$'] }))), { code: null, signal: 'SIGKILL' });
  t.is(signalName(9), 'SIGKILL');
  t.is(signalName(15), 'SIGTERM');
  t.is(signalName(99), 'signal 99');
});

test('the executable is never looked up in PATH, and a directory that cannot be entered is exit 126', async (t) => {
  t.throws(() => jobRequest(app({ executable: 'echo' })), { message: 'the executable "echo" is not an absolute path' });
  t.is((await runLikeTheAgent(jobRequest(app({ executable: '/nonexistent/echo' })))).code, 127);
  t.is((await runLikeTheAgent(jobRequest(app({ workingDirectory: '/nonexistent/dir' })))).code, 126);
});

test('the directories made before the job: its working directory and those of its outputs', (t) => {
  t.deepEqual(jobDirectories(app({ workingDirectory: '/work', output: '/work/out/o.txt', error: '/e.txt' })), ['/work', '/work/out']);
  t.deepEqual(jobDirectories(app({})), []);
});
