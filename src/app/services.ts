// The daemon as an ordered list of services: each started in order, stopped in reverse, so the
// stop order is written once, by the start order.
import type { Logger } from '../log.js';
import { describeError } from '../util/errors.js';

export interface Service {
  readonly name: string;
  stop(): Promise<void> | void;
}

export interface Services {
  /** Starts a service and keeps it for the stop; returns what `start` returned. */
  add<T>(name: string, start: () => Promise<T> | T, stop: (started: T) => Promise<void> | void): Promise<T>;
  /** Stops every service added, the last first; a failure is logged and the others still stop. */
  stopAll(): Promise<void>;
}

export function services(logger: Logger): Services {
  const started: Service[] = [];
  return {
    async add(name, start, stop) {
      const value = await start();
      started.push({ name, stop: () => stop(value) });
      return value;
    },
    async stopAll() {
      for (const service of started.reverse()) {
        try {
          await service.stop();
        } catch (error) {
          logger.error('service did not stop cleanly', { service: service.name, error: describeError(error) });
        }
      }
      started.length = 0;
    },
  };
}

/** Runs `task` every `ms`, never two at once; a failure is logged and the next run happens. */
export function every(ms: number, task: () => Promise<unknown>, failure: string, logger: Logger): { stop(): void } {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    task()
      .catch((error: unknown) => logger.warn(failure, { error: describeError(error) }))
      .finally(() => (running = false));
  }, ms);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
