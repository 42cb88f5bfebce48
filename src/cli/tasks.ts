// `nodemgr task …` (XenBEE's xbe client) and `nodemgr instance …` (Condor Cloud's): the on-demand
// work through the daemon's API, as the calling user, who owns what it starts.
import { readFile } from 'node:fs/promises';
import { loadConfig, type Config } from '../config/config.js';
import { callApi, commandOf, CommandUsageError, parseCommandLine, reportCommandFailure } from './api-client.js';

export const TASK_USAGE = `usage: nodemgr task <command> [options]

commands:
  reserve               reserve a task; prints its ticket and id
  confirm TICKET FILE   start the reserved task with the XSDL document FILE ("-": stdin)
  submit FILE           reserve and confirm in one; prints the ticket
  status [TICKET|all]   the task's state, times, exit code or reason (default: all of yours)
      -r, --remove      then drop done tasks and their spools
  terminate TICKET      end the task in whatever state it is
      --reason TEXT     why (shown in its status)

  nodemgr instance launch IMAGE [--size small|medium|large] [--count N] [--key FILE] [--runtime qemu|lxc]
                        [--kernel NAME [--initrd NAME]]   (a kernel booted directly)
  nodemgr instance ls
  nodemgr instance terminate ID...

options for every command:
  --json                print what the API answered, as JSON
  --config FILE         configuration file (default: $NODEMGR_CONFIG, else built-in defaults)
`;

/** The command of the command line, when it is `task` or `instance`. */
export function taskCommandOf(argv: readonly string[]): 'task' | 'instance' | null {
  const command = commandOf(argv);
  return command === 'task' || command === 'instance' ? command : null;
}

const TaskUsageError = CommandUsageError;

function parse(argv: string[]) {
  return parseCommandLine(argv, {
    config: { type: 'string' },
    json: { type: 'boolean', default: false },
    remove: { type: 'boolean', short: 'r', default: false },
    reason: { type: 'string' },
    size: { type: 'string' },
    count: { type: 'string' },
    key: { type: 'string' },
    runtime: { type: 'string' },
    kernel: { type: 'string' },
    initrd: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  });
}

type Parsed = ReturnType<typeof parse>;

const readDocument = async (path: string) => (path === '-' ? readStdin() : readFile(path, 'utf8'));

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

type Row = Record<string, unknown>;

/** Columns padded to their widest cell; the last is left as it is. */
export function formatColumns(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => r[c]!.length)));
  return all.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')).join('\n');
}

const shown = (value: unknown) => (value === null || value === undefined || value === '' ? '-' : String(value));

/** A task's status as lines for people. */
export function formatTask(task: Row): string {
  const times = Object.entries((task.times as Record<string, string>) ?? {}).map(([k, v]) => `  ${k.padEnd(16)} ${v}`);
  const outcome = task.signal ? `killed by ${String(task.signal)}` : task.exit_code !== null && task.exit_code !== undefined ? `exit code ${String(task.exit_code)}` : null;
  return [
    `task ${String(task.task_id)}: ${String(task.state)}${outcome ? `, ${outcome}` : ''}`,
    ...(task.reason ? [`  reason           ${String(task.reason)}`] : []),
    ...(task.address ? [`  address          ${String(task.address)}`, `  vnc              ${shown(task.vnc)}`] : []),
    `  owner            ${String(task.owner)}`,
    ...times,
  ].join('\n');
}

export function formatInstances(rows: readonly Row[]): string {
  if (rows.length === 0) return 'no instances';
  const age = (s: number) => (s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`);
  return formatColumns(['ID', 'OWNER', 'IMAGE', 'SIZE', 'STATE', 'ADDRESS', 'VNC', 'AGE'],
    rows.map((r) => [String(r.id), String(r.owner), shown(r.image), shown(r.size), String(r.state), shown(r.address), shown(r.vnc), age(Number(r.age_seconds))]));
}

async function taskCommand(config: Config, parsed: Parsed, command: string, rest: string[]): Promise<unknown> {
  const { values } = parsed;
  const expect = (min: number, max: number, what: string) => {
    if (rest.length < min) throw new TaskUsageError(`task ${command} needs ${what}`);
    if (rest.length > max) throw new TaskUsageError(`unexpected argument "${rest[max]}"`);
  };
  switch (command) {
    case 'reserve':
      expect(0, 0, '');
      return callApi(config, 'Reserve', []);
    case 'confirm':
      expect(2, 2, 'a ticket and an XSDL file');
      return callApi(config, 'Confirm', [rest[0], await readDocument(rest[1]!)]);
    case 'submit':
      expect(1, 1, 'an XSDL file');
      return callApi(config, 'Submit', [await readDocument(rest[0]!)]);
    case 'status':
      expect(0, 1, '');
      return callApi(config, 'TaskStatus', [rest[0] ?? 'all', values.remove]);
    case 'terminate':
      expect(1, 1, 'a ticket');
      return callApi(config, 'Terminate', [rest[0], values.reason ?? '']);
    default:
      throw new TaskUsageError(`unknown task command "${command}"`);
  }
}

async function instanceCommand(config: Config, parsed: Parsed, command: string, rest: string[]): Promise<unknown> {
  const { values } = parsed;
  switch (command) {
    case 'launch': {
      if (rest.length !== 1) throw new TaskUsageError('instance launch needs one IMAGE (a name of the image cache)');
      const count = values.count === undefined ? 1 : Number(values.count);
      if (!Number.isSafeInteger(count) || count < 1) throw new TaskUsageError(`--count must be a whole number >= 1, got "${values.count}"`);
      const key = values.key === undefined ? '' : (await readFile(values.key, 'utf8')).trim();
      const request = {
        image: rest[0], kernel: values.kernel ?? '', initrd: values.initrd ?? '', size: values.size ?? 'small', count, ssh_key: key,
        runtime: values.runtime ?? 'qemu',
      };
      return callApi(config, 'LaunchInstances', [request], null);
    }
    case 'ls':
      if (rest.length > 0) throw new TaskUsageError(`unexpected argument "${rest[0]}"`);
      return callApi(config, 'ListInstances', []);
    case 'terminate':
      if (rest.length === 0) throw new TaskUsageError('instance terminate needs one or more IDs');
      return callApi(config, 'TerminateInstances', [rest], null);
    default:
      throw new TaskUsageError(`unknown instance command "${command}"`);
  }
}

function print(kind: 'task' | 'instance', command: string, answer: unknown, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
    return;
  }
  const row = answer as Row;
  let text: string;
  if (kind === 'instance') text = formatInstances(answer as Row[]);
  else if (command === 'reserve') text = `ticket ${String(row.ticket)}\ntask ${String(row.task_id)}`;
  else if (command === 'status') text = (answer as Row[]).length === 0 ? 'no tasks' : (answer as Row[]).map(formatTask).join('\n\n');
  else text = `${command === 'submit' ? `ticket ${String(row.ticket)}\n` : ''}${formatTask(row)}`;
  process.stdout.write(`${text}\n`);
}

/** Runs `nodemgr [--config FILE] task|instance ...`; exit 2 on a usage error, 1 on a refusal or failure. */
export async function runTaskCommand(argv: string[], kind: 'task' | 'instance'): Promise<number> {
  let command = '';
  try {
    const parsed = parse(argv);
    const [, sub, ...rest] = parsed.positionals;
    command = sub ?? '';
    if (parsed.values.help || sub === undefined || sub === 'help') {
      process.stdout.write(TASK_USAGE);
      return sub === undefined && !parsed.values.help ? 2 : 0;
    }
    const config = await loadConfig(parsed.values.config ?? null);
    const answer = kind === 'task' ? await taskCommand(config, parsed, sub, rest) : await instanceCommand(config, parsed, sub, rest);
    print(kind, sub, answer, parsed.values.json);
    return 0;
  } catch (error) {
    return reportCommandFailure(error, TASK_USAGE, `${kind} ${command}`);
  }
}
