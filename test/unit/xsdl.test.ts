import { Buffer } from 'node:buffer';
import test, { type ExecutionContext } from 'ava';
import { parseXsdl, XsdlError, type XsdlJob } from '../../src/tasks/xsdl.js';

const OPTIONS = { maxBytes: 64 * 1024, source: 'job.xsdl' };
const NS = 'xmlns:jsdl="http://schemas.ggf.org/jsdl/2005/11/jsdl"'
  + ' xmlns:jsdl-posix="http://schemas.ggf.org/jsdl/2005/11/jsdl-posix"'
  + ' xmlns:xsdl="http://www.example.com/schemas/xbe/2007/01/xsdl"'
  + ' xmlns:xbe="http://www.example.com/schemas/xbe/2007/01/xbe"';
const KERNEL_ID = '5f0c2d1e-8a4b-4c3d-9e2f-1a2b3c4d5e6f';
const SHA1 = 'ef5ca5c3342a82a00d60c32b3a73ba93208ef08b';

// A minimal complete job as written for XenBEE (from its schema), with real values in it and
// http: for its ftp: URIs (the node fetches http, https and file).
const EXAMPLE = `<jsdl:JobDefinition xmlns:jsdl="http://schemas.ggf.org/jsdl/2005/11/jsdl"
    xmlns:jsdl-posix="http://schemas.ggf.org/jsdl/2005/11/jsdl-posix"
    xmlns:xsdl="http://www.example.com/schemas/xbe/2007/01/xsdl">
 <jsdl:JobDescription>
  <jsdl:Application><jsdl-posix:POSIXApplication>
    <jsdl-posix:Executable>/bin/sort</jsdl-posix:Executable>
    <jsdl-posix:Argument filesystemName="WORK">in.txt</jsdl-posix:Argument>
    <jsdl-posix:Output filesystemName="WORK">out.txt</jsdl-posix:Output>
    <jsdl-posix:WorkingDirectory filesystemName="WORK"/>
  </jsdl-posix:POSIXApplication></jsdl:Application>
  <jsdl:Resources>
    <jsdl:FileSystem name="WORK"><jsdl:MountPoint>/scratch</jsdl:MountPoint></jsdl:FileSystem>
    <jsdl:TotalCPUCount><jsdl:Exact>1</jsdl:Exact></jsdl:TotalCPUCount>
    <jsdl:TotalPhysicalMemory><jsdl:Exact>268435456</jsdl:Exact></jsdl:TotalPhysicalMemory>
    <xsdl:InstanceDefinition><xsdl:InstanceDescription><xsdl:Instance>
      <xsdl:Kernel><xsdl:Location><xsdl:URI>cache://xbe-file-cache/${KERNEL_ID}</xsdl:URI></xsdl:Location></xsdl:Kernel>
      <xsdl:Image fs-type="ext3"><xsdl:Location>
        <xsdl:URI>http://host/img/base.img.bz2</xsdl:URI>
        <xsdl:Hash algorithm="sha1">${SHA1}</xsdl:Hash>
        <xsdl:Compression algorithm="bzip2"/></xsdl:Location></xsdl:Image>
    </xsdl:Instance></xsdl:InstanceDescription></xsdl:InstanceDefinition>
  </jsdl:Resources>
  <jsdl:DataStaging><jsdl:FileName>in.txt</jsdl:FileName><jsdl:FilesystemName>WORK</jsdl:FilesystemName>
    <jsdl:CreationFlag>overwrite</jsdl:CreationFlag><jsdl:Source><jsdl:URI>http://host/in.txt</jsdl:URI></jsdl:Source></jsdl:DataStaging>
  <jsdl:DataStaging><jsdl:FileName>out.txt</jsdl:FileName><jsdl:FilesystemName>WORK</jsdl:FilesystemName>
    <jsdl:CreationFlag>overwrite</jsdl:CreationFlag><jsdl:Target><jsdl:URI>http://host/upload/out.txt</jsdl:URI></jsdl:Target></jsdl:DataStaging>
 </jsdl:JobDescription>
</jsdl:JobDefinition>
`;

const IMAGE = '<xsdl:Image><xsdl:Location><xsdl:URI>debian-12.qcow2</xsdl:URI></xsdl:Location></xsdl:Image>';
const SORT = '<jsdl-posix:POSIXApplication><jsdl-posix:Executable>/usr/bin/sort</jsdl-posix:Executable></jsdl-posix:POSIXApplication>';

interface Parts {
  application?: string;
  resources?: string;
  instance?: string;
  instanceAttributes?: string;
  staging?: string;
  description?: string;
}

/** A job with one line per part, so that a test can say on which line a fault is. */
function job(parts: Parts = {}): string {
  return [
    `<jsdl:JobDefinition ${NS}>`,
    '  <jsdl:JobDescription>',
    parts.description ?? '',
    `    <jsdl:Application>${parts.application ?? SORT}</jsdl:Application>`,
    '    <jsdl:Resources>',
    parts.resources ?? '',
    '      <xsdl:InstanceDefinition><xsdl:InstanceDescription>',
    `        <xsdl:Instance${parts.instanceAttributes ?? ''}>${parts.instance ?? IMAGE}</xsdl:Instance>`,
    '      </xsdl:InstanceDescription></xsdl:InstanceDefinition>',
    '    </jsdl:Resources>',
    parts.staging ?? '',
    '  </jsdl:JobDescription>',
    '</jsdl:JobDefinition>',
  ].join('\n');
}

/** Line numbers of job()'s parts. */
const LINE = { description: 3, application: 4, resources: 6, instance: 8, staging: 11 };

function parse(text: string | Buffer): XsdlJob {
  return parseXsdl(text, OPTIONS);
}

function refused(t: ExecutionContext, text: string | Buffer, where: { line: number | null; element: string }, reason: RegExp, maxBytes = OPTIONS.maxBytes): XsdlError {
  const error = t.throws(() => parseXsdl(text, { ...OPTIONS, maxBytes }), { instanceOf: XsdlError })!;
  t.is(error.line, where.line, error.message);
  t.is(error.element, where.element, error.message);
  t.regex(error.reason, reason);
  const place = where.line === null ? 'job.xsdl: ' : `job.xsdl line ${where.line} column ${error.column}: `;
  t.is(error.message, `${place}${where.element}: ${error.reason}`);
  return error;
}

test('the example job of the XenBEE notes parses to its values', (t) => {
  t.deepEqual(parse(EXAMPLE), {
    name: null,
    application: {
      kind: 'posix', executable: '/bin/sort', arguments: ['/scratch/in.txt'], input: null, output: '/scratch/out.txt',
      error: null, workingDirectory: '/scratch', environment: [], wallTimeSeconds: null,
    },
    runtime: 'qemu',
    cpuCount: 1,
    memoryBytes: 268435456,
    instance: {
      kernel: { uri: { kind: 'cache', name: KERNEL_ID }, hash: null, compression: null, mode: null, arguments: [] },
      initrd: null,
      image: {
        uri: { kind: 'url', href: 'http://host/img/base.img.bz2' }, hash: { algorithm: 'sha1', hex: SHA1 },
        compression: 'bzip2', mode: null, fsType: 'ext3',
      },
    },
    stageIn: [{
      path: '/scratch/in.txt', creationFlag: 'overwrite', deleteOnTermination: false,
      source: { uri: { kind: 'url', href: 'http://host/in.txt' }, hash: null, compression: null, mode: null },
    }],
    stageOut: [{
      path: '/scratch/out.txt', creationFlag: 'overwrite', deleteOnTermination: false,
      target: { uri: { kind: 'url', href: 'http://host/upload/out.txt' }, hash: null, compression: null, mode: null },
    }],
    ticket: null,
    ignored: [],
  });
});

test('the same job as bytes, with an XML declaration, parses alike', (t) => {
  t.deepEqual(parse(Buffer.from(`<?xml version="1.0" encoding="UTF-8"?>\n${EXAMPLE}`)), parse(EXAMPLE));
});

test('a ContinuousTask boots the instance and runs nothing', (t) => {
  const parsed = parse(job({ application: '<xbe:XBEApplication><xbe:ContinuousTask/></xbe:XBEApplication>' }));
  t.deepEqual(parsed.application, { kind: 'continuous' });
  t.deepEqual(parsed.instance.image?.uri, { kind: 'cache', name: 'debian-12.qcow2' });
});

test('kernel arguments are kept in order as name=value, bare name or bare value, with the initrd', (t) => {
  const parsed = parse(job({
    instance: `<xsdl:Kernel>
      <xsdl:Location><xsdl:URI>vmlinuz-6.1</xsdl:URI><xsdl:Mode>0644</xsdl:Mode></xsdl:Location>
      <xsdl:Argument name="console">ttyS0</xsdl:Argument>
      <xsdl:Argument name="quiet"/>
      <xsdl:Argument>
        ro
      </xsdl:Argument>
    </xsdl:Kernel>
    <xsdl:Initrd><xsdl:Location><xsdl:URI>https://mirror.example.org/initrd.img.gz</xsdl:URI>
      <xsdl:Compression algorithm="gzip"/></xsdl:Location></xsdl:Initrd>`,
  }));
  t.deepEqual(parsed.instance.kernel, {
    uri: { kind: 'cache', name: 'vmlinuz-6.1' }, hash: null, compression: null, mode: 0o644, arguments: ['console=ttyS0', 'quiet', 'ro'],
  });
  t.deepEqual(parsed.instance.initrd, { uri: { kind: 'url', href: 'https://mirror.example.org/initrd.img.gz' }, hash: null, compression: 'gzip', mode: null });
  t.is(parsed.instance.image, null);
});

test('runtime="lxc" asks for a container from the image; qemu is the default', (t) => {
  t.is(parse(job()).runtime, 'qemu');
  t.is(parse(job({ instanceAttributes: ' runtime="lxc"' })).runtime, 'lxc');
  refused(t, job({ instanceAttributes: ' runtime="xen"' }), { line: LINE.instance, element: 'xsdl:Instance' }, /runtime "xen" is not one of qemu, lxc/);
  refused(t, job({ instanceAttributes: ' runtime="lxc"', instance: `${IMAGE}<xsdl:Kernel><xsdl:Location><xsdl:URI>vmlinuz</xsdl:URI></xsdl:Location></xsdl:Kernel>` }),
    { line: LINE.instance, element: 'xsdl:Kernel' }, /container .* boots none/);
});

test('cache URIs in XenBEE form and plain cache names both name an image-cache entry', (t) => {
  const source = (uri: string) => `<jsdl:DataStaging><jsdl:FileName>/data/in</jsdl:FileName><jsdl:CreationFlag>overwrite</jsdl:CreationFlag>
    <jsdl:Source><jsdl:URI>${uri}</jsdl:URI></jsdl:Source></jsdl:DataStaging>`;
  const parsed = parse(job({ staging: source(`cache://xbe-file-cache/${KERNEL_ID}`) + source('dataset-2024.tar') + source('file:///srv/data/in') }));
  t.deepEqual(parsed.stageIn.map((s) => s.source.uri), [
    { kind: 'cache', name: KERNEL_ID }, { kind: 'cache', name: 'dataset-2024.tar' }, { kind: 'url', href: 'file:///srv/data/in' },
  ]);
  refused(t, job({ staging: source('cache://other-cache/x') }), { line: LINE.staging + 1, element: 'jsdl:URI' }, /cache:\/\/xbe-file-cache\/<name>/);
  refused(t, job({ staging: source('ftp://host/in.txt') }), { line: LINE.staging + 1, element: 'jsdl:URI' }, /scheme "ftp:" is not supported/);
  refused(t, job({ staging: source('my data') }), { line: LINE.staging + 1, element: 'jsdl:URI' }, /neither an http:, https: or file: URL nor an image-cache name/);
  const target = `<jsdl:DataStaging><jsdl:FileName>/data/out</jsdl:FileName><jsdl:CreationFlag>overwrite</jsdl:CreationFlag>
    <jsdl:Target><jsdl:URI>results</jsdl:URI></jsdl:Target></jsdl:DataStaging>`;
  refused(t, job({ staging: target }), { line: LINE.staging + 1, element: 'jsdl:URI' }, /stage-out target must be an http:, https: or file: URL/);
});

test('paths follow their file system mount point; ROOT is / without a FileSystem element', (t) => {
  const parsed = parse(job({
    resources: `<jsdl:FileSystem name="SPOOL"><jsdl:Description>spool</jsdl:Description><jsdl:MountPoint>/var//spool/</jsdl:MountPoint></jsdl:FileSystem>
      <jsdl:FileSystem name="USR"><jsdl:MountPoint>/usr</jsdl:MountPoint></jsdl:FileSystem>`,
    application: `<jsdl-posix:POSIXApplication>
      <jsdl-posix:Executable filesystemName="USR">
        bin/python3
      </jsdl-posix:Executable>
      <jsdl-posix:Argument>-c</jsdl-posix:Argument>
      <jsdl-posix:Argument filesystemName="SPOOL">/./job/run.py</jsdl-posix:Argument>
      <jsdl-posix:Input filesystemName="ROOT">etc/hostname</jsdl-posix:Input>
      <jsdl-posix:Error>/tmp/err</jsdl-posix:Error>
      <jsdl-posix:WorkingDirectory filesystemName="SPOOL">job</jsdl-posix:WorkingDirectory>
      <jsdl-posix:Environment name="HOME" filesystemName="ROOT"/>
      <jsdl-posix:Environment name="MODE">fast</jsdl-posix:Environment>
    </jsdl-posix:POSIXApplication>`,
    staging: `<jsdl:DataStaging><jsdl:FileName>sub/result.csv</jsdl:FileName><jsdl:CreationFlag>append</jsdl:CreationFlag>
      <jsdl:DeleteOnTermination>true</jsdl:DeleteOnTermination>
      <jsdl:Target><jsdl:URI>https://results.example.org/upload/result.csv</jsdl:URI><xsdl:Compression algorithm="gzip"/></jsdl:Target></jsdl:DataStaging>`,
  }));
  t.like(parsed.application, {
    kind: 'posix', executable: '/usr/bin/python3', arguments: ['-c', '/var/spool/job/run.py'], input: '/etc/hostname',
    output: null, error: '/tmp/err', workingDirectory: '/var/spool/job',
  });
  t.deepEqual(parsed.application.kind === 'posix' && parsed.application.environment, [{ name: 'HOME', value: '/' }, { name: 'MODE', value: 'fast' }]);
  // A FileName without FilesystemName is relative to the working directory (JSDL); the flags are kept.
  t.like(parsed.stageOut[0], { path: '/var/spool/job/sub/result.csv', creationFlag: 'append', deleteOnTermination: true, target: { compression: 'gzip' } });
});

test('range values resolve to the first Exact, else the least lower bound, else the upper bound', (t) => {
  const sized = (cpu: string, memory: string) => {
    const parsed = parse(job({ resources: `<jsdl:TotalCPUCount>${cpu}</jsdl:TotalCPUCount><jsdl:TotalPhysicalMemory>${memory}</jsdl:TotalPhysicalMemory>` }));
    return [parsed.cpuCount, parsed.memoryBytes];
  };
  t.deepEqual(sized('<jsdl:Exact>4</jsdl:Exact><jsdl:Exact>2</jsdl:Exact>', '<jsdl:UpperBoundedRange>1073741824</jsdl:UpperBoundedRange><jsdl:Exact>536870912</jsdl:Exact>'), [4, 536870912]);
  t.deepEqual(sized(
    '<jsdl:LowerBoundedRange exclusiveBound="true">1</jsdl:LowerBoundedRange><jsdl:UpperBoundedRange>8</jsdl:UpperBoundedRange>',
    '<jsdl:Range><jsdl:LowerBound>268435456</jsdl:LowerBound><jsdl:UpperBound>536870912</jsdl:UpperBound></jsdl:Range>'
    + '<jsdl:Range><jsdl:LowerBound>134217728</jsdl:LowerBound><jsdl:UpperBound>200000000</jsdl:UpperBound></jsdl:Range>',
  ), [2, 134217728]);
  t.deepEqual(sized('<jsdl:UpperBoundedRange exclusiveBound="true">3</jsdl:UpperBoundedRange>', '<jsdl:UpperBoundedRange>1073741824</jsdl:UpperBoundedRange>'), [2, 1073741824]);
  t.deepEqual([parse(job()).cpuCount, parse(job()).memoryBytes], [null, null]);
  refused(t, job({ resources: '<jsdl:TotalCPUCount><jsdl:Exact>0</jsdl:Exact></jsdl:TotalCPUCount>' }),
    { line: LINE.resources, element: 'jsdl:Exact' }, /resolves to 0 CPUs; at least 1 is needed/);
});

test('WallTimeLimit, the reservation ticket, the job name and foreign elements', (t) => {
  const parsed = parse(job({
    description: `<jsdl:JobIdentification><jsdl:JobName> nightly sort </jsdl:JobName><jsdl:JobAnnotation>a</jsdl:JobAnnotation>
      <acme:Owner xmlns:acme="urn:acme">ops</acme:Owner></jsdl:JobIdentification>`,
    application: `<jsdl-posix:POSIXApplication><jsdl-posix:Executable>/bin/true</jsdl-posix:Executable>
      <jsdl-posix:WallTimeLimit>3600</jsdl-posix:WallTimeLimit><jsdl-posix:MemoryLimit>1024</jsdl-posix:MemoryLimit></jsdl-posix:POSIXApplication>`,
    resources: `<xbe:Reservation><xbe:Ticket>9d1e7c55-0b8f-4f2a-a0d4-1f6e3b2c8a90</xbe:Ticket></xbe:Reservation>
      <jsdl:TotalVirtualMemory><jsdl:Exact>1</jsdl:Exact></jsdl:TotalVirtualMemory><acme:Rack xmlns:acme="urn:acme"><jsdl:Nonsense/></acme:Rack>`,
  }));
  t.is(parsed.name, 'nightly sort');
  t.is(parsed.application.kind === 'posix' && parsed.application.wallTimeSeconds, 3600);
  t.is(parsed.ticket, '9d1e7c55-0b8f-4f2a-a0d4-1f6e3b2c8a90');
  t.deepEqual(parsed.ignored, ['jsdl-posix:MemoryLimit', 'jsdl:TotalVirtualMemory']);
  // WallTimeLimit is JSDL-POSIX's: in the jsdl namespace it is a mistake, and said so.
  refused(t, job({ application: `<jsdl-posix:POSIXApplication><jsdl-posix:Executable>/bin/true</jsdl-posix:Executable>
      <jsdl:WallTimeLimit>60</jsdl:WallTimeLimit></jsdl-posix:POSIXApplication>` }),
  { line: LINE.application + 1, element: 'jsdl:WallTimeLimit' }, /the jsdl namespace .* has no "WallTimeLimit"; did you mean jsdl-posix:WallTimeLimit\?/);
});

// ---- refusals ---------------------------------------------------------------------------------

test('a DOCTYPE is refused, and with it any entity declaration', (t) => {
  refused(t, `<!DOCTYPE x [<!ENTITY big "${'a'.repeat(50)}">]>\n${job()}`, { line: 1, element: 'document' }, /DOCTYPE is not allowed/);
});

test('a document over the size limit is refused before it is parsed', (t) => {
  const text = job();
  const size = Buffer.byteLength(text);
  // The limit counts bytes: a document of exactly the limit is fine, one byte more is not.
  t.is(parseXsdl(text, { ...OPTIONS, maxBytes: size }).runtime, 'qemu');
  t.is(parseXsdl(Buffer.from(text), { ...OPTIONS, maxBytes: size }).runtime, 'qemu');
  refused(t, text, { line: null, element: 'document' }, new RegExp(`document is ${size} bytes, more than the limit of ${size - 1} bytes`), size - 1);
  refused(t, Buffer.from(text), { line: null, element: 'document' }, new RegExp(`document is ${size} bytes, more than the limit of ${size - 1} bytes`), size - 1);
  // A string is measured in UTF-8 bytes, not in characters: "é" is two.
  const accented = job({ description: '<jsdl:JobIdentification><jsdl:JobName>résumé</jsdl:JobName></jsdl:JobIdentification>' });
  t.is(parseXsdl(accented, { ...OPTIONS, maxBytes: Buffer.byteLength(accented) }).name, 'résumé');
  refused(t, accented, { line: null, element: 'document' }, /more than the limit/, accented.length);
  // Before it is parsed: a document both too large and forbidden is refused for its size.
  refused(t, `<!DOCTYPE x>${text}`, { line: null, element: 'document' }, /more than the limit of 500 bytes/, 500);
});

test('XML that is not well-formed is refused at its line and column', (t) => {
  const text = job({ application: '<jsdl-posix:POSIXApplication><jsdl-posix:Executable>/bin/ls</jsdl-posix:Executabel></jsdl-posix:POSIXApplication>' });
  const error = refused(t, text, { line: LINE.application, element: 'jsdl-posix:Executable' }, /unexpected close tag <\/jsdl-posix:Executabel>/);
  t.is(error.column, text.split('\n')[LINE.application - 1]!.indexOf('</jsdl-posix:Executabel>') + 1);
  refused(t, job({ staging: '<jsdl:DataStaging>&nbsp;</jsdl:DataStaging>' }), { line: LINE.staging, element: 'jsdl:DataStaging' }, /undefined entity &nbsp;/);
});

test('a POSIXApplication without an Executable, or with a relative one, is refused', (t) => {
  refused(t, job({ application: '<jsdl-posix:POSIXApplication><jsdl-posix:Argument>-l</jsdl-posix:Argument></jsdl-posix:POSIXApplication>' }),
    { line: LINE.application, element: 'jsdl-posix:POSIXApplication' }, /has no jsdl-posix:Executable/);
  refused(t, job({ application: '<jsdl-posix:POSIXApplication><jsdl-posix:Executable>bin/sort</jsdl-posix:Executable></jsdl-posix:POSIXApplication>' }),
    { line: LINE.application, element: 'jsdl-posix:Executable' }, /"bin\/sort" is relative; give an absolute path or a file system name/);
  refused(t, job({ application: '' }), { line: LINE.application, element: 'jsdl:Application' }, /has no jsdl-posix:POSIXApplication .* or xbe:XBEApplication/);
});

test('a ".." that leaves its file system, or names an undefined file system, is refused', (t) => {
  const resources = '<jsdl:FileSystem name="WORK"><jsdl:MountPoint>/scratch</jsdl:MountPoint></jsdl:FileSystem>';
  const app = (output: string) => `<jsdl-posix:POSIXApplication><jsdl-posix:Executable>/bin/sort</jsdl-posix:Executable>${output}</jsdl-posix:POSIXApplication>`;
  refused(t, job({ resources, application: app('<jsdl-posix:Output filesystemName="WORK">logs/../../etc/shadow</jsdl-posix:Output>') }),
    { line: LINE.application, element: 'jsdl-posix:Output' }, /"logs\/..\/..\/etc\/shadow" climbs above \/scratch with "\.\."/);
  refused(t, job({ resources, application: app('<jsdl-posix:Output filesystemName="WROK">out</jsdl-posix:Output>') }),
    { line: LINE.application, element: 'jsdl-posix:Output' }, /file system "WROK" is not defined \(jsdl:FileSystem names: ROOT, WORK\)/);
  refused(t, job({ staging: `<jsdl:DataStaging><jsdl:FileName>../in</jsdl:FileName><jsdl:FilesystemName>ROOT</jsdl:FilesystemName>
    <jsdl:CreationFlag>overwrite</jsdl:CreationFlag><jsdl:Source><jsdl:URI>http://host/in</jsdl:URI></jsdl:Source></jsdl:DataStaging>` }),
  { line: LINE.staging, element: 'jsdl:FileName' }, /climbs above \/ with/);
});

test('an unknown element or attribute in a known namespace is refused by name', (t) => {
  refused(t, job({ resources: '<jsdl:TotalCPUCont><jsdl:Exact>2</jsdl:Exact></jsdl:TotalCPUCont>' }),
    { line: LINE.resources, element: 'jsdl:TotalCPUCont' }, /the jsdl namespace \(http:\/\/schemas.ggf.org\/jsdl\/2005\/11\/jsdl\) has no "TotalCPUCont" \(expected in jsdl:Resources: .*jsdl:TotalCPUCount/);
  refused(t, job({ application: '<jsdl-posix:POSIXApplication><jsdl-posix:Executable filesysemName="USR">bin/ls</jsdl-posix:Executable></jsdl-posix:POSIXApplication>' }),
    { line: LINE.application, element: 'jsdl-posix:Executable' }, /unknown attribute "filesysemName" \(jsdl-posix:Executable takes: filesystemName\)/);
});

test('a hash digest of the wrong length or an unknown algorithm is refused', (t) => {
  const hashed = (hash: string) => job({ instance: `<xsdl:Image><xsdl:Location><xsdl:URI>base.img</xsdl:URI>${hash}</xsdl:Location></xsdl:Image>` });
  refused(t, hashed(`<xsdl:Hash algorithm="sha256">${SHA1}</xsdl:Hash>`), { line: LINE.instance, element: 'xsdl:Hash' }, /a sha256 digest has 64 hex digits, this one has 40/);
  refused(t, hashed(`<xsdl:Hash algorithm="crc32">${SHA1}</xsdl:Hash>`), { line: LINE.instance, element: 'xsdl:Hash' }, /algorithm "crc32" is not one of md5, sha1/);
  t.deepEqual(parse(hashed(`<xsdl:Hash algorithm="SHA1">\n ${SHA1.toUpperCase()}\n</xsdl:Hash>`)).instance.image?.hash, { algorithm: 'sha1', hex: SHA1 });
});

test('an unknown compression and an archive are refused', (t) => {
  const compressed = (algorithm: string) => job({ instance: `<xsdl:Image><xsdl:Location><xsdl:URI>base.img</xsdl:URI><xsdl:Compression algorithm="${algorithm}"/></xsdl:Location></xsdl:Image>` });
  refused(t, compressed('xz'), { line: LINE.instance, element: 'xsdl:Compression' }, /algorithm "xz" is not one of gzip, bzip2/);
  refused(t, compressed('tgz'), { line: LINE.instance, element: 'xsdl:Compression' }, /tar archive\) is not supported/);
});

test('an instance needs an Image or a Kernel, and an Initrd needs the Kernel', (t) => {
  const initrd = '<xsdl:Initrd><xsdl:Location><xsdl:URI>initrd.img</xsdl:URI></xsdl:Location></xsdl:Initrd>';
  refused(t, job({ instance: `${IMAGE}\n${initrd}` }), { line: LINE.instance + 1, element: 'xsdl:Initrd' }, /an initrd needs an xsdl:Kernel/);
  refused(t, job({ instance: '<xsdl:Description>nothing</xsdl:Description>' }), { line: LINE.instance, element: 'xsdl:Instance' }, /has neither xsdl:Image nor xsdl:Kernel/);
});

test("XenBEE's Package form is refused as not supported", (t) => {
  const text = job().replace(/<xsdl:Instance>.*<\/xsdl:Instance>/, '<xsdl:Package><xsdl:Location><xsdl:URI>file:///srv/pkg.tar.bz2</xsdl:URI></xsdl:Location></xsdl:Package>');
  refused(t, text, { line: LINE.instance, element: 'xsdl:Package' }, /a package .* is not supported; describe an xsdl:Instance/);
});

test('a negative or fractional memory size is refused', (t) => {
  const memory = (value: string) => job({ resources: `<jsdl:TotalPhysicalMemory><jsdl:Exact>${value}</jsdl:Exact></jsdl:TotalPhysicalMemory>` });
  refused(t, memory('-268435456'), { line: LINE.resources, element: 'jsdl:Exact' }, /"-268435456" is negative; a whole number of bytes >= 0 is expected/);
  refused(t, memory('268435456.5'), { line: LINE.resources, element: 'jsdl:Exact' }, /"268435456.5" is not a whole number/);
  refused(t, memory('256MiB'), { line: LINE.resources, element: 'jsdl:Exact' }, /"256MiB" is not a number/);
});

test('the root must be a JobDefinition with exactly one JobDescription', (t) => {
  refused(t, '<JobDefinition/>', { line: 1, element: 'JobDefinition' }, /root element is JobDefinition \(no namespace\), expected jsdl:JobDefinition/);
  const two = job().replace('  </jsdl:JobDescription>', '  </jsdl:JobDescription><jsdl:JobDescription/>');
  refused(t, two, { line: 12, element: 'jsdl:JobDescription' }, /a second jsdl:JobDescription in jsdl:JobDefinition; only one is allowed/);
});

// ---- the rest of the format, each rule with what it accepts and what it refuses -----------------

/** One DataStaging on one line, so that a refusal in it is at LINE.staging. */
function staging(inner: string, fileName = '<jsdl:FileName>/data/in</jsdl:FileName>'): string {
  return `<jsdl:DataStaging>${fileName}${inner}</jsdl:DataStaging>`;
}
const SOURCE = '<jsdl:Source><jsdl:URI>http://host/in</jsdl:URI></jsdl:Source>';
const TARGET = '<jsdl:Target><jsdl:URI>http://host/out</jsdl:URI></jsdl:Target>';
const at = (line: number, element: string) => ({ line, element });

test('a DataStaging with both Source and Target stages in and out; its CreationFlag and DeleteOnTermination are checked', (t) => {
  const parsed = parse(job({ staging: staging(`<jsdl:CreationFlag>dontOverwrite</jsdl:CreationFlag><jsdl:DeleteOnTermination>1</jsdl:DeleteOnTermination>${SOURCE}${TARGET}`) }));
  t.deepEqual(parsed.stageIn.map((s) => [s.path, s.creationFlag, s.deleteOnTermination, s.source.uri]), [['/data/in', 'dontOverwrite', true, { kind: 'url', href: 'http://host/in' }]]);
  t.deepEqual(parsed.stageOut.map((s) => [s.path, s.target.uri]), [['/data/in', { kind: 'url', href: 'http://host/out' }]]);
  refused(t, job({ staging: staging(`<jsdl:CreationFlag>Overwrite</jsdl:CreationFlag>${SOURCE}`) }),
    at(LINE.staging, 'jsdl:CreationFlag'), /"Overwrite" is not one of overwrite, dontOverwrite, append/);
  refused(t, job({ staging: staging(SOURCE) }), at(LINE.staging, 'jsdl:DataStaging'), /has no jsdl:CreationFlag/);
  refused(t, job({ staging: staging('<jsdl:CreationFlag>overwrite</jsdl:CreationFlag>') }),
    at(LINE.staging, 'jsdl:DataStaging'), /has neither jsdl:Source \(to stage in\) nor jsdl:Target \(to stage out\)/);
  refused(t, job({ staging: staging(`<jsdl:CreationFlag>overwrite</jsdl:CreationFlag><jsdl:DeleteOnTermination>yes</jsdl:DeleteOnTermination>${SOURCE}`) }),
    at(LINE.staging, 'jsdl:DeleteOnTermination'), /"yes" is not a boolean/);
  refused(t, job({ staging: staging(`<jsdl:CreationFlag>overwrite</jsdl:CreationFlag>${SOURCE}`, '<jsdl:FileName>/data/</jsdl:FileName>') }),
    at(LINE.staging, 'jsdl:FileName'), /"\/data\/" names a directory, not a file/);
  // Without a working directory there is nothing a relative FileName could be relative to.
  refused(t, job({ staging: staging(`<jsdl:CreationFlag>overwrite</jsdl:CreationFlag>${SOURCE}`, '<jsdl:FileName>in</jsdl:FileName>') }),
    at(LINE.staging, 'jsdl:FileName'), /"in" is relative; give an absolute path or a file system name/);
  refused(t, job({ staging: staging(`<jsdl:CreationFlag>overwrite</jsdl:CreationFlag>${SOURCE}<jsdl:FilesystemName>SCRATCH</jsdl:FilesystemName>`) }),
    at(LINE.staging, 'jsdl:FilesystemName'), /file system "SCRATCH" is not defined/);
});

test('a URL with credentials, a file: URL of another host and a hash on an upload are refused', (t) => {
  const source = (uri: string) => job({ staging: staging(`<jsdl:CreationFlag>overwrite</jsdl:CreationFlag><jsdl:Source><jsdl:URI>${uri}</jsdl:URI></jsdl:Source>`) });
  refused(t, source('https://alice:secret@host/in'), at(LINE.staging, 'jsdl:URI'), /credentials in the URI are not accepted/);
  refused(t, source('file://fileserver/srv/in'), at(LINE.staging, 'jsdl:URI'), /a file: URI names a file of this host, not of "fileserver"/);
  refused(t, source(''), at(LINE.staging, 'jsdl:URI'), /the URI is empty/);
  refused(t, job({ staging: staging(`<jsdl:CreationFlag>overwrite</jsdl:CreationFlag><jsdl:Target><jsdl:URI>http://host/out</jsdl:URI><xsdl:Hash algorithm="sha1">${SHA1}</xsdl:Hash></jsdl:Target>`) }),
    at(LINE.staging, 'xsdl:Hash'), /xsdl:Hash does not belong in jsdl:Target/);
});

test('environment variables need a valid name, once each', (t) => {
  const env = (variables: string) => job({ application: `<jsdl-posix:POSIXApplication><jsdl-posix:Executable>/bin/env</jsdl-posix:Executable>${variables}</jsdl-posix:POSIXApplication>` });
  refused(t, env('<jsdl-posix:Environment>x</jsdl-posix:Environment>'), at(LINE.application, 'jsdl-posix:Environment'), /has no name attribute/);
  refused(t, env('<jsdl-posix:Environment name="1ST">x</jsdl-posix:Environment>'), at(LINE.application, 'jsdl-posix:Environment'), /name "1ST" is not a variable name/);
  refused(t, env('<jsdl-posix:Environment name="A">1</jsdl-posix:Environment><jsdl-posix:Environment name="A">2</jsdl-posix:Environment>'),
    at(LINE.application, 'jsdl-posix:Environment'), /a second value for variable A/);
});

test('a wall-time limit is a whole number of seconds above 0', (t) => {
  const limit = (value: string) => job({ application: `<jsdl-posix:POSIXApplication><jsdl-posix:Executable>/bin/true</jsdl-posix:Executable><jsdl-posix:WallTimeLimit>${value}</jsdl-posix:WallTimeLimit></jsdl-posix:POSIXApplication>` });
  const seconds = (value: string) => { const app = parse(limit(value)).application; return app.kind === 'posix' ? app.wallTimeSeconds : undefined; };
  t.is(seconds(' 86400 '), 86400);
  t.is(seconds('+60'), 60);
  refused(t, limit('0'), at(LINE.application, 'jsdl-posix:WallTimeLimit'), /a wall-time limit of 0 seconds would end the job before it starts/);
  refused(t, limit('1h'), at(LINE.application, 'jsdl-posix:WallTimeLimit'), /"1h" is not a number; a whole number of seconds >= 0 is expected/);
  refused(t, limit('3.6e3'), at(LINE.application, 'jsdl-posix:WallTimeLimit'), /"3.6e3" has an exponent; write it out in digits/);
});

test('an application is a POSIXApplication or an XBEApplication, not both, and a ContinuousTask is empty', (t) => {
  refused(t, job({ application: `${SORT}<xbe:XBEApplication><xbe:ContinuousTask/></xbe:XBEApplication>` }),
    at(LINE.application, 'xbe:XBEApplication'), /either a jsdl-posix:POSIXApplication or an xbe:XBEApplication, not both/);
  refused(t, job({ application: '<xbe:XBEApplication><xbe:ContinuousTask>sleep</xbe:ContinuousTask></xbe:XBEApplication>' }),
    at(LINE.application, 'xbe:ContinuousTask'), /has text "sleep" where only elements belong/);
  refused(t, job({ application: '<xbe:XBEApplication/>' }), at(LINE.application, 'xbe:XBEApplication'), /has no xbe:ContinuousTask/);
});

test('file systems need a name, once each, and an absolute mount point unless they are ROOT', (t) => {
  const fs = (resources: string) => job({ resources });
  // ROOT may also be declared, without a mount point.
  t.like(parse(job({
    resources: '<jsdl:FileSystem name="ROOT"/>',
    application: '<jsdl-posix:POSIXApplication><jsdl-posix:Executable filesystemName="ROOT">bin/ls</jsdl-posix:Executable></jsdl-posix:POSIXApplication>',
  })).application, { kind: 'posix', executable: '/bin/ls' });
  refused(t, fs('<jsdl:FileSystem name="WORK"/>'), at(LINE.resources, 'jsdl:FileSystem'), /has no jsdl:MountPoint \(only ROOT is \/ without one\)/);
  refused(t, fs('<jsdl:FileSystem name="WORK"><jsdl:MountPoint>work</jsdl:MountPoint></jsdl:FileSystem>'),
    at(LINE.resources, 'jsdl:MountPoint'), /"work" is relative; a mount point is an absolute path in the guest/);
  refused(t, fs('<jsdl:FileSystem><jsdl:MountPoint>/w</jsdl:MountPoint></jsdl:FileSystem>'), at(LINE.resources, 'jsdl:FileSystem'), /has no name attribute/);
  refused(t, fs('<jsdl:FileSystem name="W"><jsdl:MountPoint>/a</jsdl:MountPoint></jsdl:FileSystem><jsdl:FileSystem name="W"><jsdl:MountPoint>/b</jsdl:MountPoint></jsdl:FileSystem>'),
    at(LINE.resources, 'jsdl:FileSystem'), /a second file system named W/);
});

test('kernel arguments stay one word each; a mode is 4 octal digits; control scripts are refused', (t) => {
  const kernel = (inside: string) => job({ instance: `<xsdl:Kernel><xsdl:Location><xsdl:URI>vmlinuz</xsdl:URI></xsdl:Location>${inside}</xsdl:Kernel>` });
  refused(t, kernel('<xsdl:Argument name="init">/bin/sh -x</xsdl:Argument>'), at(LINE.instance, 'xsdl:Argument'), /contains white space, which would split it/);
  refused(t, kernel('<xsdl:Argument/>'), at(LINE.instance, 'xsdl:Argument'), /is empty/);
  refused(t, kernel('<xsdl:Argument name="a b">1</xsdl:Argument>'), at(LINE.instance, 'xsdl:Argument'), /name "a b" is not a kernel parameter name/);
  refused(t, job({ instance: '<xsdl:Image><xsdl:Location><xsdl:URI>base.img</xsdl:URI><xsdl:Mode>755</xsdl:Mode></xsdl:Location></xsdl:Image>' }),
    at(LINE.instance, 'xsdl:Mode'), /mode "755" is not 4 octal digits/);
  const control = job().replace('</xsdl:Instance>', '</xsdl:Instance><xsdl:Control><xsdl:Script target="setup"/></xsdl:Control>');
  refused(t, control, at(LINE.instance, 'xsdl:Control'), /control scripts are not supported/);
});

test('a container needs its image; a ticket is one printable word', (t) => {
  refused(t, job({ instanceAttributes: ' runtime="lxc"', instance: '<xsdl:Description>none</xsdl:Description>' }),
    at(LINE.instance, 'xsdl:Instance'), /has no xsdl:Image: a container \(runtime="lxc"\) needs its root file system/);
  refused(t, job({ resources: '<xbe:Reservation><xbe:Ticket>two words</xbe:Ticket></xbe:Reservation>' }),
    at(LINE.resources, 'xbe:Ticket'), /"two words" is not a ticket/);
});

test('a namespace the document does not declare, or the wrong JSDL namespace, is refused where it is used', (t) => {
  const undeclared = job({ resources: '<jsdlx:TotalCPUCount/>' });
  refused(t, undeclared, at(LINE.resources, 'jsdlx:TotalCPUCount'), /unbound namespace prefix: "jsdlx" \(declare it with xmlns:prefix="..."\)/);
  const older = job().replace('jsdl/2005/11/jsdl"', 'jsdl/2005/06/jsdl"');
  refused(t, older, at(1, 'jsdl:JobDefinition'), /the root element is jsdl:JobDefinition \(http:\/\/schemas.ggf.org\/jsdl\/2005\/06\/jsdl\), expected jsdl:JobDefinition/);
});

test('bytes are read in the encoding the declaration names, and bytes that are not in it are refused at their line', (t) => {
  const latin1 = Buffer.from(`<?xml version="1.0" encoding="ISO-8859-1"?>\n${job({ description: '<jsdl:JobIdentification><jsdl:JobName>r\u00e9sum\u00e9</jsdl:JobName></jsdl:JobIdentification>' })}`, 'latin1');
  t.is(parse(latin1).name, 'r\u00e9sum\u00e9');
  const broken = Buffer.concat([Buffer.from(job().slice(0, job().indexOf('/usr/bin/sort'))), Buffer.from([0xff]), Buffer.from(job().slice(job().indexOf('/usr/bin/sort')))]);
  refused(t, broken, at(LINE.application, 'document'), /byte 0xff at offset \d+ is not valid UTF-8/);
});
