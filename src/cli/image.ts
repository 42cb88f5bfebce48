// `nodemgr image add|ls|rm`: the node's image cache, through the daemon's API on its Unix socket
// (the daemon is the cache's only writer; adding and removing need root).
import { loadConfig, type Config } from '../config/config.js';
import { IMAGE_TYPES, type ImageEntry } from '../images/index.js';
import { cachedImagesClassad } from '../images/classad.js';
import { formatImageTable } from '../images/table.js';
import { ApiCallFault, callApi, commandOf, CommandUsageError, parseCommandLine, reportCommandFailure } from './api-client.js';
import { formatBytes } from '../util/text.js';

export const IMAGE_USAGE = `usage: nodemgr image <command> [options]

commands:
  add URI --type ${IMAGE_TYPES.join('|')} --desc TEXT [--sha256 HEX] [--name NAME]
                    fetch an http:, https: or file: URI into the node's image cache (as root);
                    the checksum is verified when given; NAME defaults to the URI's last part
  ls [--json | --classad]
                    list the cached entries; --classad prints the HTCondor ClassAd line
                    CACHED_IMAGES = "name1,name2" (every entry's name) for a startd cron job
  rm REF            remove an entry, by name or URI (as root); refused while a sliver uses it

options for every command:
  --config FILE     configuration file (default: $NODEMGR_CONFIG, else built-in defaults)
`;

/** True when the command line's command (its first argument that is not an option) is `image`. */
export function isImageCommand(argv: readonly string[]): boolean {
  return commandOf(argv) === 'image';
}

const ImageUsageError = CommandUsageError;

/** An answer of the API: its value, or the fault's message (with a hint where one helps). */
async function call(config: Config, method: string, params: unknown[], timeoutMs: number | null): Promise<unknown> {
  try {
    return await callApi(config, method, params, timeoutMs);
  } catch (error) {
    if (error instanceof ApiCallFault && error.code === 108) throw new Error(`${error.message} (adding and removing images needs root)`);
    throw error;
  }
}

/** An entry as the API sends it (a size above 2^31 arrives as an i8, which the client gives as a string). */
function entryOf(value: unknown): ImageEntry {
  const e = value as ImageEntry;
  return { ...e, bytes: Number(e.bytes) };
}

function parse(argv: string[]) {
  return parseCommandLine(argv, {
    config: { type: 'string' },
    type: { type: 'string' },
    desc: { type: 'string' },
    sha256: { type: 'string' },
    name: { type: 'string' },
    json: { type: 'boolean', default: false },
    classad: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
}

async function run({ values, positionals }: ReturnType<typeof parse>): Promise<number> {
  const [, command, ...rest] = positionals;
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(IMAGE_USAGE);
    return command === undefined && !values.help ? 2 : 0;
  }
  const expect = (count: number, what: string) => {
    if (rest.length < count) throw new ImageUsageError(`image ${command} needs ${what}`);
    if (rest.length > count) throw new ImageUsageError(`unexpected argument "${rest[count]}"`);
  };
  const only = (allowed: string[]) => {
    for (const option of ['type', 'desc', 'sha256', 'name', 'json', 'classad'] as const) {
      if (!allowed.includes(option) && values[option] !== undefined && values[option] !== false) {
        throw new ImageUsageError(`--${option} does not apply to image ${command}`);
      }
    }
  };
  switch (command) {
    case 'add': {
      only(['type', 'desc', 'sha256', 'name']);
      expect(1, 'a URI');
      if (values.type === undefined) throw new ImageUsageError(`image add needs --type ${IMAGE_TYPES.join('|')}`);
      if (values.desc === undefined) throw new ImageUsageError('image add needs --desc TEXT (what the image is)');
      const config = await loadConfig(values.config ?? null);
      // No time limit: a large image takes as long as it takes, and the daemon has its own per-attempt timeout.
      const entry = entryOf(await call(config, 'AddImage', [rest[0], values.type, values.desc, values.sha256 ?? '', values.name ?? ''], null));
      process.stdout.write(
        `${entry.name}: ${entry.type}${entry.type === 'image' ? ` (${entry.format})` : ''}, ${formatBytes(entry.bytes)}, sha256 ${entry.sha256}\n`
        + `  from ${entry.uri}\n  at ${entry.path}\n`,
      );
      return 0;
    }
    case 'ls': {
      only(['json', 'classad']);
      expect(0, '');
      if (values.json && values.classad) throw new ImageUsageError('image ls takes --json or --classad, not both');
      const config = await loadConfig(values.config ?? null);
      const entries = ((await call(config, 'GetImages', [], 30_000)) as unknown[]).map(entryOf);
      // Every entry, whatever its type: a job may need a kernel or an lxc root archive as much as a
      // disk image, and holding any of them saves its download.
      const output = values.json ? JSON.stringify(entries, null, 2)
        : values.classad ? cachedImagesClassad(entries.map((e) => e.name)) : formatImageTable(entries);
      process.stdout.write(`${output}\n`);
      return 0;
    }
    case 'rm': {
      only([]);
      expect(1, 'the name or URI of an entry');
      const config = await loadConfig(values.config ?? null);
      const entry = entryOf(await call(config, 'RemoveImage', [rest[0]], 30_000));
      process.stdout.write(`removed ${entry.name} (${entry.uri}), ${formatBytes(entry.bytes)}\n`);
      return 0;
    }
    default:
      throw new ImageUsageError(`unknown image command "${command}"`);
  }
}

/** Runs `nodemgr [--config FILE] image ...`; its own messages, exit 2 on a usage error, 1 on a failure. */
export async function runImage(argv: string[]): Promise<number> {
  let command = '';
  try {
    const parsed = parse(argv);
    command = parsed.positionals[1] ?? '';
    return await run(parsed);
  } catch (error) {
    return reportCommandFailure(error, IMAGE_USAGE, `image ${command}`);
  }
}
