// A virtual machine's staging disks on the host side (tasks/staging-disk.ts), with the real
// mkfs.ext2 and debugfs: the stage-in image holds each file at its guest path with its mode, and
// what a guest writes to the stage-out image is read back without mounting it. The guest's side
// (mounting by serial, copying) runs in test/system/tasks.test.ts.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeSpool, spoolOf } from '../../src/tasks/spool.js';
import {
  imageKiB, makeStageInImage, makeStageOutImage, readStagedOutput, stageInScript, stageOutScript, stagingImages,
} from '../../src/tasks/staging-disk.js';
import type { StageIn } from '../../src/tasks/xsdl-types.js';

const haveE2fsprogs = (() => {
  try {
    execFileSync('debugfs', ['-V'], { stdio: 'ignore' });
    execFileSync('mkfs.ext2', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const withTools = haveE2fsprogs ? test : test.skip;
if (!haveE2fsprogs) test.skip('staging disks: mkfs.ext2 and debugfs (e2fsprogs) are not installed', () => undefined);

const debugfs = (image: string, request: string) => execFileSync('debugfs', ['-R', request, image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();

async function spool() {
  const dir = await mkdtemp(join(tmpdir(), 'nodemgr-staging-'));
  const s = spoolOf(dir, 'abcd1234');
  await makeSpool(s);
  return { dir, s };
}

const staged = (path: string, mode: number | null = null): StageIn => ({
  path, creationFlag: 'overwrite', deleteOnTermination: false, source: { uri: { kind: 'url', href: 'http://x/' }, hash: null, compression: null, mode },
});

withTools('the stage-in image holds each file at its guest path, with its mode', async (t) => {
  const { dir, s } = await spool();
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(s.input(0), 'input one\n');
  await writeFile(s.input(1), Buffer.alloc(3 * 1024 * 1024, 7));
  await chmod(s.input(1), 0o755);
  await makeStageInImage(s, [staged('/work/in.txt'), staged('/opt/tool/run.sh', 0o755)]);
  const image = stagingImages(s).in;
  t.is(debugfs(image, 'cat /work/in.txt'), 'input one\n');
  t.regex(debugfs(image, 'stat /opt/tool/run.sh'), /Mode:\s+0755/);
  t.regex(debugfs(image, 'stat /opt/tool/run.sh'), /Size: 3145728/);
  t.regex(execFileSync('dumpe2fs', ['-h', image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString(), /Filesystem volume name:\s+nodemgr-in/);
  t.is((await stat(join(s.dir, 'disks'))).mode & 0o777, 0o711, 'the hypervisor may pass through, not list');
});

withTools('what the guest wrote to the stage-out image is read back; an output it did not write is said missing', async (t) => {
  const { dir, s } = await spool();
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await makeStageOutImage(s, 2, 64 * 1024 * 1024);
  const image = stagingImages(s).out;
  t.true((await stat(image)).blocks * 512 < 16 * 1024 * 1024, 'sparse: room for the largest outputs, little of it written');
  const written = join(dir, 'result');
  await writeFile(written, 'the result\n');
  execFileSync('debugfs', ['-w', '-R', `write ${written} 0`, image], { stdio: 'ignore' });
  t.true(await readStagedOutput(s, 0, s.output(0)));
  t.is(await readFile(s.output(0), 'utf8'), 'the result\n');
  t.false(await readStagedOutput(s, 1, s.output(1)));
});

test('image sizes leave room for metadata and each file\'s last block', (t) => {
  t.is(imageKiB(0, 0), 8192);
  t.true(imageKiB(100 * 1024 * 1024, 10) > 100 * 1024 + 8192);
});

test('the guest scripts find their disk by its serial and say by their exit code what went wrong', (t) => {
  t.regex(stageInScript(), /\$d\/serial.*= nodemgr-in .*mount -t ext2 -o ro/);
  t.regex(stageOutScript(), /= nodemgr-out .*for p in "\$@".*rc=\$\(\(10 \+ n\)\).*sync; umount/);
  // Both are valid shell (sh -n parses without running).
  for (const script of [stageInScript(), stageOutScript()]) t.notThrows(() => execFileSync('/bin/sh', ['-n', '-c', script]));
});
