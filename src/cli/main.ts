#!/usr/bin/env node
// nodemgr's command line: the daemon itself and the operator's read-only views of it.
// The daemon runs under V8's own heap settings: with its young generation held small (2 MB
// semi-spaces) the garbage collector took a tenth of the API server's busy time (a third of that
// without), and it saved 3 MB once the daemon settles: V8's memory reducer gives the young space
// back when the daemon goes quiet (bench/sync.ts measures both).
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type Config } from '../config/config.js';
import { startDaemon, type RunningDaemon } from '../app/daemon.js';
import { LockHeldError } from '../db/lock.js';
import { createLogger } from '../log.js';
import { runCall } from './call.js';
import { isImageCommand, runImage } from './image.js';
import { runPlan } from './plan.js';
import { runStatus } from './status.js';
import { runTaskCommand, taskCommandOf } from './tasks.js';
import { commandOf } from './api-client.js';
import { runVc } from './vc.js';
import { describeError } from '../util/errors.js';

const USAGE = `usage: nodemgr <command> [options]

commands:
  daemon            run the node manager (what "npm start" runs)
      --once        sync once, wait until every account has converged, then exit
  status            show slivers and delegates: state, effective rspec, last error, last sync
      --json        print the same as JSON
  plan              show what a sync would change, changing nothing
      --document F  plan against this slices.xml instead of fetching from the authority
      --json        print the plan as JSON
  call METHOD [ARG...]
                    call the node's API as this user (the daemon sees this process's uid);
                    an ARG that parses as JSON is passed as that value, else as a string,
                    e.g. nodemgr call GetRSpec pl_web; nodemgr call system.listMethods
  image add|ls|rm   the node's image cache (nodemgr image help)
  task reserve|confirm|submit|status|terminate
                    XenBEE's tasks: jobs in guests, on demand (nodemgr task help)
  instance launch|ls|terminate
                    Condor Cloud's stateless instances (nodemgr task help)
  vc repository|boot|list|shutdown|clean
                    pragma_boot's virtual clusters (nodemgr vc help)
  help              show this text

options for every command:
  --config FILE     configuration file (default: $NODEMGR_CONFIG, else built-in defaults
                    with the example authority document etc/slices.xml)
`;

class UsageError extends Error {}

function parse(args: string[]) {
  try {
    return parseArgs({
      args,
      allowPositionals: true,
      options: {
        config: { type: 'string' },
        once: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        document: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    throw new UsageError(describeError(error));
  }
}

async function runDaemon(config: Config, once: boolean): Promise<number> {
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, file: join(config.logDir, 'nodemgr.log') });
  // SIGUSR1 reopens the log file (logrotate's postrotate, etc/logrotate.d/nodemgr): lines up to the
  // signal are in the renamed file, every later one in the new file. A listener also replaces
  // Node's own use of SIGUSR1 (starting the inspector), which a root daemon must not offer anyway.
  process.on('SIGUSR1', () => {
    try {
      logger.reopen();
      logger.info('log file reopened', { signal: 'SIGUSR1' });
    } catch (error) {
      logger.error('log file reopen failed; still writing to the previous file', { error: describeError(error) });
    }
  });
  process.on('uncaughtException', (error) => {
    logger.error('uncaught exception; exiting so the service manager restarts the daemon', { error: error.stack ?? String(error) });
    process.exit(70);
  });
  process.on('unhandledRejection', (error) => {
    logger.error('unhandled rejection; exiting so the service manager restarts the daemon', { error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    process.exit(70);
  });
  // SIGHUP asks for a sync; one that comes while the daemon starts must not end it (the signal's
  // default), and the first sync is about to happen anyway.
  let daemon: RunningDaemon | null = null;
  process.on('SIGHUP', () => {
    logger.info('signal received, syncing now', { signal: 'SIGHUP' });
    daemon?.syncNow();
  });
  const running = await startDaemon(config, logger);
  daemon = running;
  if (once) {
    await running.settled();
    await running.stop();
    return 0;
  }
  await new Promise<void>((resolve) => {
    const shutdown = (signal: string) => {
      logger.info('signal received, stopping', { signal });
      running.stop().then(resolve, (error: unknown) => {
        logger.error('stop failed', { error: String(error) });
        resolve();
      });
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  if (isImageCommand(argv)) return runImage(argv);
  if (commandOf(argv) === 'vc') return runVc(argv);
  const onDemand = taskCommandOf(argv);
  if (onDemand !== null) return runTaskCommand(argv, onDemand);
  const { values, positionals } = parse(argv);
  const command = positionals[0] ?? (values.help ? 'help' : undefined);
  if (!command || command === 'help' || values.help) {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (positionals.length > 1 && command !== 'call') throw new UsageError(`unexpected argument "${positionals[1]}"`);
  const config = await loadConfig(values.config ?? null);
  switch (command) {
    case 'daemon':
      return runDaemon(config, values.once ?? false);
    case 'status':
      return runStatus(config, { json: values.json ?? false });
    case 'plan':
      return runPlan(config, { json: values.json ?? false, document: values.document ?? null });
    case 'call':
      if (!positionals[1]) throw new UsageError('call needs a method name, e.g. nodemgr call Help');
      return runCall(config, positionals[1], positionals.slice(2));
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`nodemgr: ${error.message}\n\n${USAGE}`);
      process.exitCode = 2;
    } else if (error instanceof ConfigError) {
      process.stderr.write(`nodemgr: configuration error: ${error.message}\n`);
      process.exitCode = 2;
    } else if (error instanceof LockHeldError) {
      process.stderr.write(`nodemgr: ${error.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`nodemgr: ${describeError(error)}\n`);
      process.exitCode = 1;
    }
  },
);
