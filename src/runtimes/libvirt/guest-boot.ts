// A guest's boot and the wait for its word that it is ready: by its kind's marker (a line on a
// machine's console, a file in a container's root) or, for a definition that asks for it, by its
// agent answering (guest-agent.ts), as XenBEE waited for its instance's agent to report.
import type { Logger } from '../../log.js';
import { describeError, PermanentError } from '../../util/errors.js';
import { agentDir, execRecords } from './guest-agent.js';
import type { GuestBandwidth } from './guest-bandwidth.js';
import type { GuestDefinition } from './guest-definition.js';
import type { GuestDriver } from './guest-driver.js';
import { guestFiles, type GuestFiles } from './guest-files.js';

export interface BootContext {
  readonly guestDir: string;
  readonly readyMarker: string;
  readonly readyTimeoutMs: number;
  readonly bandwidth: GuestBandwidth;
  readonly logger: Logger;
  /** The daemon is stopping: waits end, the guests go on booting. */
  interrupted(): boolean;
}

export const INTERRUPTED = 'the daemon is stopping: the guest was left booting, its readiness not awaited';
/** Between two pings of an agent that did not answer yet. */
const PING_EVERY_MS = 1000;

/**
 * Boots the guest and waits for its word that it is ready; one that does not give it within the
 * timeout is powered off and the start fails with the reason, as XenBEE aborts a task whose
 * instance never reports back. By marker the failure is recoverable (the supervisor starts it
 * again); by agent it is permanent (a task's instance that cannot be reached fails its task).
 */
export async function bootAndAwaitReady(boot: BootContext, driver: GuestDriver, name: string, definition: GuestDefinition): Promise<void> {
  const hv = driver.hypervisor;
  const files = guestFiles(boot.guestDir, name);
  const readiness = definition.readiness ?? { by: 'marker' };
  // The pids of an earlier boot mean nothing now.
  await execRecords(agentDir(files.dir)).clear();
  // Readied as for a marker either way (a container's root is mounted here).
  const watch = await driver.prepareBoot(files, boot.readyMarker);
  const started = Date.now();
  await hv.start(name);
  await boot.bandwidth.shape(name, definition);
  const gone = async () => boot.interrupted() || !(await hv.find(name))?.active;
  if (readiness.by === 'agent') {
    await awaitAgent(boot, driver, name, files, readiness.timeoutMs, gone);
  } else if (readiness.by === 'none') {
    return;
  } else {
    const timeoutMs = boot.readyTimeoutMs;
    const ready = await watch.wait({ timeoutMs, gone });
    if (!ready && boot.interrupted()) throw new Error(INTERRUPTED);
    if (!ready) {
      const stillRunning = (await hv.find(name))?.active ?? false;
      await powerOff(driver, name, files);
      const seconds = Math.round(timeoutMs / 1000);
      const { who, where, whenStopped } = watch;
      throw new Error(stillRunning
        ? `${who} did not report ready ("${boot.readyMarker}" ${where}) within ${seconds} s; it was powered off and will be started again`
        : `${who} stopped before it reported ready ("${boot.readyMarker}" ${where}); ${whenStopped}`);
    }
  }
  boot.logger.info('guest ready', { sliver: name, driver: driver.kind, by: readiness.by, boot_ms: Date.now() - started });
}

async function powerOff(driver: GuestDriver, name: string, files: GuestFiles): Promise<void> {
  await driver.hypervisor.powerOff(name);
  await driver.releaseRoot(files);
}

/** Pings the guest's agent until it answers, the time is up, the guest stopped or the daemon stops. */
async function awaitAgent(
  boot: BootContext, driver: GuestDriver, name: string, files: GuestFiles, timeoutMs: number, gone: () => Promise<boolean>,
): Promise<void> {
  const agent = driver.agent(name, files);
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    try {
      await agent.ping(Math.min(remaining, 5000));
      return;
    } catch (error) {
      last = describeError(error);
    }
    if (boot.interrupted()) throw new Error(INTERRUPTED);
    if (await gone()) {
      await powerOff(driver, name, files);
      throw new PermanentError(`instance stopped before its agent answered (${last})`);
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(PING_EVERY_MS, Math.max(deadline - Date.now(), 0))));
  }
  await powerOff(driver, name, files);
  boot.logger.warn('guest agent did not answer', { sliver: name, driver: driver.kind, timeout_ms: timeoutMs, error: last });
  throw new PermanentError(`instance agent did not answer within ${timeoutMs / 1000} s`);
}
