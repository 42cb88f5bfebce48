// XenBEE job descriptions (XSDL) for the tests of tasks, written as a client writes them: a JSDL
// JobDefinition with a POSIX application (or xbe:ContinuousTask), one file system "WORK" mounted at
// /work, the instance's boot files, and DataStaging elements.

export interface StagedFile {
  /** The file's name under /work. */
  readonly name: string;
  readonly uri: string;
  readonly hash?: { readonly algorithm: string; readonly hex: string };
  readonly compression?: 'gzip' | 'bzip2';
  readonly creationFlag?: 'overwrite' | 'dontOverwrite' | 'append';
}

export interface JobParts {
  /** The executable's absolute path; null: an xbe:ContinuousTask (boot and run nothing). */
  readonly executable?: string | null;
  readonly args?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  /** stdout into /work/<output>. */
  readonly output?: string;
  readonly wallTimeSeconds?: number;
  readonly image?: string | null;
  readonly kernel?: string | null;
  readonly initrd?: string | null;
  readonly kernelArgs?: readonly string[];
  readonly runtime?: 'qemu' | 'lxc';
  readonly cpus?: number;
  readonly memoryBytes?: number;
  readonly stageIn?: readonly StagedFile[];
  readonly stageOut?: readonly StagedFile[];
}

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function location(uri: string, file: Partial<StagedFile> = {}): string {
  return `<xsdl:Location><xsdl:URI>${escape(uri)}</xsdl:URI>`
    + (file.hash ? `<xsdl:Hash algorithm="${file.hash.algorithm}">${file.hash.hex}</xsdl:Hash>` : '')
    + (file.compression ? `<xsdl:Compression algorithm="${file.compression}"/>` : '')
    + '</xsdl:Location>';
}

function staging(file: StagedFile, direction: 'Source' | 'Target'): string {
  return `  <jsdl:DataStaging><jsdl:FileName>${escape(file.name)}</jsdl:FileName><jsdl:FilesystemName>WORK</jsdl:FilesystemName>`
    + `<jsdl:CreationFlag>${file.creationFlag ?? 'overwrite'}</jsdl:CreationFlag>`
    + `<jsdl:${direction}><jsdl:URI>${escape(file.uri)}</jsdl:URI></jsdl:${direction}></jsdl:DataStaging>`;
}

function application(parts: JobParts): string {
  if (parts.executable === null) return '<xbe:XBEApplication><xbe:ContinuousTask/></xbe:XBEApplication>';
  return '<jsdl-posix:POSIXApplication>'
    + `<jsdl-posix:Executable>${escape(parts.executable ?? '/bin/true')}</jsdl-posix:Executable>`
    + (parts.args ?? []).map((a) => `<jsdl-posix:Argument>${escape(a)}</jsdl-posix:Argument>`).join('')
    + (parts.output ? `<jsdl-posix:Output filesystemName="WORK">${escape(parts.output)}</jsdl-posix:Output>` : '')
    + '<jsdl-posix:WorkingDirectory filesystemName="WORK"/>'
    + Object.entries(parts.env ?? {}).map(([k, v]) => `<jsdl-posix:Environment name="${escape(k)}">${escape(v)}</jsdl-posix:Environment>`).join('')
    + (parts.wallTimeSeconds ? `<jsdl-posix:WallTimeLimit>${parts.wallTimeSeconds}</jsdl-posix:WallTimeLimit>` : '')
    + '</jsdl-posix:POSIXApplication>';
}

/** The whole document. */
export function xsdlJob(parts: JobParts = {}): string {
  const kernel = parts.kernel ?? null;
  const instance = [
    kernel === null ? ''
      : `<xsdl:Kernel>${location(kernel)}${(parts.kernelArgs ?? []).map((a) => `<xsdl:Argument>${escape(a)}</xsdl:Argument>`).join('')}</xsdl:Kernel>`,
    parts.initrd ? `<xsdl:Initrd>${location(parts.initrd)}</xsdl:Initrd>` : '',
    parts.image === null || parts.image === undefined ? '' : `<xsdl:Image>${location(parts.image)}</xsdl:Image>`,
  ].join('');
  return [
    '<jsdl:JobDefinition xmlns:jsdl="http://schemas.ggf.org/jsdl/2005/11/jsdl"',
    '    xmlns:jsdl-posix="http://schemas.ggf.org/jsdl/2005/11/jsdl-posix"',
    '    xmlns:xsdl="http://www.example.com/schemas/xbe/2007/01/xsdl"',
    '    xmlns:xbe="http://www.example.com/schemas/xbe/2007/01/xbe">',
    ' <jsdl:JobDescription>',
    `  <jsdl:Application>${application(parts)}</jsdl:Application>`,
    '  <jsdl:Resources>',
    '   <jsdl:FileSystem name="WORK"><jsdl:MountPoint>/work</jsdl:MountPoint></jsdl:FileSystem>',
    parts.cpus ? `   <jsdl:TotalCPUCount><jsdl:Exact>${parts.cpus}</jsdl:Exact></jsdl:TotalCPUCount>` : '',
    parts.memoryBytes ? `   <jsdl:TotalPhysicalMemory><jsdl:Exact>${parts.memoryBytes}</jsdl:Exact></jsdl:TotalPhysicalMemory>` : '',
    `   <xsdl:InstanceDefinition><xsdl:InstanceDescription><xsdl:Instance${parts.runtime ? ` runtime="${parts.runtime}"` : ''}>`,
    `    ${instance}`,
    '   </xsdl:Instance></xsdl:InstanceDescription></xsdl:InstanceDefinition>',
    '  </jsdl:Resources>',
    ...(parts.stageIn ?? []).map((f) => staging(f, 'Source')),
    ...(parts.stageOut ?? []).map((f) => staging(f, 'Target')),
    ' </jsdl:JobDescription>',
    '</jsdl:JobDefinition>',
  ].join('\n');
}
