// Property test of the XSDL parser: random mutations of a valid job (characters dropped, inserted,
// duplicated, element names swapped, values replaced, bytes broken) must either parse into a job
// whose paths and sizes obey the parser's promises, or be refused with an XsdlError that says
// where. Any other exception would reach the task engine as a crash instead of a refusal.
//
// Deterministic for a seed: replay a failure with NODEMGR_FUZZ_SEED=<seed in the message>.
import { Buffer } from 'node:buffer';
import test from 'ava';
import { parseXsdl, XsdlError, type XsdlJob } from '../../src/tasks/xsdl.js';
import { seededRandom } from '../support/random.js';

const MUTANTS = 3_000;
const OPTIONS = { maxBytes: 16 * 1024, source: 'fuzz.xsdl' };

function seedFromEnvironment(): number {
  const given = process.env['NODEMGR_FUZZ_SEED'];
  if (given === undefined || given === '') return 0x0c5d_1f22;
  const seed = Number(given);
  if (!Number.isSafeInteger(seed)) throw new Error(`NODEMGR_FUZZ_SEED=${JSON.stringify(given)} is not an integer`);
  return seed >>> 0;
}

// Every part of the format at least once, so that mutations reach every reader.
const VALID = `<?xml version="1.0" encoding="UTF-8"?>
<jsdl:JobDefinition xmlns:jsdl="http://schemas.ggf.org/jsdl/2005/11/jsdl"
    xmlns:jsdl-posix="http://schemas.ggf.org/jsdl/2005/11/jsdl-posix"
    xmlns:xsdl="http://www.example.com/schemas/xbe/2007/01/xsdl"
    xmlns:xbe="http://www.example.com/schemas/xbe/2007/01/xbe">
 <jsdl:JobDescription>
  <jsdl:JobIdentification><jsdl:JobName>fuzz</jsdl:JobName></jsdl:JobIdentification>
  <jsdl:Application><jsdl-posix:POSIXApplication>
    <jsdl-posix:Executable filesystemName="WORK">bin/run</jsdl-posix:Executable>
    <jsdl-posix:Argument>-v</jsdl-posix:Argument>
    <jsdl-posix:Argument filesystemName="WORK">in.txt</jsdl-posix:Argument>
    <jsdl-posix:Input filesystemName="ROOT">dev/null</jsdl-posix:Input>
    <jsdl-posix:Output filesystemName="WORK">out.txt</jsdl-posix:Output>
    <jsdl-posix:Error>/tmp/err.txt</jsdl-posix:Error>
    <jsdl-posix:WorkingDirectory filesystemName="WORK"/>
    <jsdl-posix:Environment name="MODE">fast</jsdl-posix:Environment>
    <jsdl-posix:WallTimeLimit>600</jsdl-posix:WallTimeLimit>
  </jsdl-posix:POSIXApplication></jsdl:Application>
  <jsdl:Resources>
    <jsdl:FileSystem name="WORK"><jsdl:MountPoint>/scratch</jsdl:MountPoint></jsdl:FileSystem>
    <jsdl:TotalCPUCount><jsdl:Range><jsdl:LowerBound>1</jsdl:LowerBound><jsdl:UpperBound>4</jsdl:UpperBound></jsdl:Range></jsdl:TotalCPUCount>
    <jsdl:TotalPhysicalMemory><jsdl:Exact>268435456</jsdl:Exact></jsdl:TotalPhysicalMemory>
    <xsdl:InstanceDefinition><xsdl:InstanceDescription><xsdl:Instance runtime="qemu">
      <xsdl:Kernel><xsdl:Location><xsdl:URI>cache://xbe-file-cache/vmlinuz-6.1</xsdl:URI></xsdl:Location>
        <xsdl:Argument name="console">ttyS0</xsdl:Argument></xsdl:Kernel>
      <xsdl:Initrd><xsdl:Location><xsdl:URI>initrd.img</xsdl:URI><xsdl:Mode>0644</xsdl:Mode></xsdl:Location></xsdl:Initrd>
      <xsdl:Image fs-type="ext3"><xsdl:Location><xsdl:URI>https://host/base.img.gz</xsdl:URI>
        <xsdl:Hash algorithm="md5">0123456789abcdef0123456789abcdef</xsdl:Hash>
        <xsdl:Compression algorithm="gzip"/></xsdl:Location></xsdl:Image>
    </xsdl:Instance></xsdl:InstanceDescription></xsdl:InstanceDefinition>
    <xbe:Reservation><xbe:Ticket>ticket-1</xbe:Ticket></xbe:Reservation>
  </jsdl:Resources>
  <jsdl:DataStaging><jsdl:FileName>in.txt</jsdl:FileName><jsdl:FilesystemName>WORK</jsdl:FilesystemName>
    <jsdl:CreationFlag>dontOverwrite</jsdl:CreationFlag><jsdl:DeleteOnTermination>true</jsdl:DeleteOnTermination>
    <jsdl:Source><jsdl:URI>file:///srv/in.txt</jsdl:URI></jsdl:Source></jsdl:DataStaging>
  <jsdl:DataStaging><jsdl:FileName>out.txt</jsdl:FileName>
    <jsdl:CreationFlag>append</jsdl:CreationFlag><jsdl:Target><jsdl:URI>http://host/out.txt</jsdl:URI></jsdl:Target></jsdl:DataStaging>
 </jsdl:JobDescription>
</jsdl:JobDefinition>
`;

const NAMES = [...new Set(VALID.match(/(?<=<\/?)[\w-]+:\w+/g) ?? [])];
const VALUES = ['', ' ', '0', '-1', '1.5', '1e9', '99999999999999999999', '..', '../..', '/', 'ROOT', 'a b', '&amp;', '&lt;',
  '&#0;', '&#x1F600;', '<![CDATA[x]]>', '<!-- c -->', 'cache://xbe-file-cache/', 'ftp://h/x', 'http://u:p@h/x', 'true', 'lxc', 'bzip2',
  '\u0000', '\u00e9', '\ud800', 'x'.repeat(300)];
const NOISE = '<>/="\':&;!?-[] \n\tabcXYZ019\u00e9';

interface Random {
  int(n: number): number;
  pick<T>(items: readonly T[]): T;
}

function random(seed: number): Random {
  const next = seededRandom(seed);
  const int = (n: number) => Math.floor(next() * n);
  return { int, pick: (items) => items[int(items.length)]! };
}

/** One mutation of `text`, as text or (for the byte-level ones) as bytes. */
function mutate(r: Random, text: string): string | Buffer {
  const at = r.int(text.length);
  const span = 1 + r.int(40);
  switch (r.int(9)) {
    case 0: return text.slice(0, at) + text.slice(at + span);
    case 1: return text.slice(0, at) + Array.from({ length: 1 + r.int(5) }, () => r.pick([...NOISE])).join('') + text.slice(at);
    case 2: return text.slice(0, at) + text.slice(at, at + span * 5) + text.slice(at);
    case 3: return text.slice(0, at);
    case 4: {
      // A known name in place of another: the right words in the wrong places.
      const from = r.pick(NAMES);
      return text.split(from).join(r.pick(NAMES));
    }
    case 5: {
      // A text value or attribute value replaced by a troublesome one.
      const values = [...text.matchAll(/>([^<>]+)</g), ...text.matchAll(/="([^"]*)"/g)];
      const chosen = r.pick(values);
      const start = chosen.index! + chosen[0].indexOf(chosen[1]!);
      return text.slice(0, start) + r.pick(VALUES) + text.slice(start + chosen[1]!.length);
    }
    case 6: {
      // An element swapped with a later sibling-looking one: order and duplicates.
      const tags = [...text.matchAll(/<[\w-]+:\w+[^>]*>[^<]*<\/[\w-]+:\w+>/g)];
      const a = r.pick(tags);
      const b = r.pick(tags);
      return text.replace(a[0], b[0]);
    }
    case 7: {
      const bytes = Buffer.from(text);
      bytes[r.int(bytes.length)] = r.int(256);
      return bytes;
    }
    default: {
      const wrapper = r.pick(['<!DOCTYPE j>', '<?pi x?>', '<other xmlns="urn:x">', '</jsdl:JobDescription>', '\ufeff']);
      return text.slice(0, at) + wrapper + text.slice(at);
    }
  }
}

const NORMALISED_ABSOLUTE = /^\/(?:[^/\0]+(?:\/[^/\0]+)*)?$/;

/** What a parsed job promises the engine; returns the first broken promise, or null. */
function brokenPromise(job: XsdlJob): string | null {
  const paths: (string | null)[] = [...job.stageIn.map((s) => s.path), ...job.stageOut.map((s) => s.path)];
  if (job.application.kind === 'posix') {
    const app = job.application;
    paths.push(app.executable, app.input, app.output, app.error, app.workingDirectory);
    if (app.wallTimeSeconds !== null && !(Number.isSafeInteger(app.wallTimeSeconds) && app.wallTimeSeconds > 0)) return `wall time ${app.wallTimeSeconds}`;
  }
  for (const path of paths) {
    if (path === null) continue;
    if (!NORMALISED_ABSOLUTE.test(path) || path.split('/').some((part) => part === '.' || part === '..')) return `path ${JSON.stringify(path)}`;
  }
  if (job.cpuCount !== null && !(Number.isSafeInteger(job.cpuCount) && job.cpuCount >= 1)) return `cpu count ${job.cpuCount}`;
  if (job.memoryBytes !== null && !(Number.isSafeInteger(job.memoryBytes) && job.memoryBytes >= 1)) return `memory ${job.memoryBytes}`;
  if (job.instance.image === null && job.instance.kernel === null) return 'neither image nor kernel';
  if (job.runtime !== 'qemu' && job.runtime !== 'lxc') return `runtime ${String(job.runtime)}`;
  if (job.stageOut.some((s) => s.target.uri.kind !== 'url')) return 'a stage-out into the cache';
  return null;
}

test('the unmutated document parses (the fuzzer starts from a valid job)', (t) => {
  const job = parseXsdl(VALID, OPTIONS);
  t.is(brokenPromise(job), null);
  t.is(job.stageIn.length, 1);
  t.is(job.stageOut.length, 1);
  t.is(job.cpuCount, 1);
});

test('a mutated document parses into a sound job or is refused with an XsdlError that says where', (t) => {
  const seed = seedFromEnvironment();
  const r = random(seed);
  let refusals = 0;
  for (let i = 0; i < MUTANTS; i++) {
    const mutant = mutate(r, VALID);
    const replay = `mutant ${i} of NODEMGR_FUZZ_SEED=${seed}`;
    let job: XsdlJob;
    try {
      job = parseXsdl(mutant, OPTIONS);
    } catch (error) {
      if (!(error instanceof XsdlError)) {
        t.fail(`${replay} threw ${String(error)}:\n${mutant.toString()}`);
        return;
      }
      refusals++;
      // The place is inside the document, the element and reason are named, the message holds both.
      const lines = mutant.toString().split(/\r\n|\r|\n/).length;
      if ((error.line !== null && (error.line < 1 || error.line > lines)) || error.element === '' || error.reason === ''
        || !error.message.startsWith('fuzz.xsdl') || !error.message.endsWith(`${error.element}: ${error.reason}`)) {
        t.fail(`${replay}: badly placed refusal ${JSON.stringify({ line: error.line, element: error.element, message: error.message })}`);
        return;
      }
      continue;
    }
    const broken = brokenPromise(job);
    if (broken !== null) {
      t.fail(`${replay} parsed with a broken promise (${broken}):\n${mutant.toString()}`);
      return;
    }
  }
  // Most mutations break the document; a fuzzer whose every mutant parsed would be testing nothing.
  t.true(refusals > MUTANTS / 2, `only ${refusals} of ${MUTANTS} mutants were refused`);
  t.true(refusals < MUTANTS, 'every mutant was refused: the mutations never leave a valid job');
});
