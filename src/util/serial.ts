// One task at a time: what several modules need where their tasks await between deciding and
// changing (the account files, the image cache's entries, a converge pass, the limits).

export interface SerialQueue {
  /** Runs `task` once every task queued before it has ended, however that ended. */
  run<T>(task: () => Promise<T>): Promise<T>;
  /** Resolves once every task queued so far has ended. */
  idle(): Promise<void>;
}

export function serialQueue(): SerialQueue {
  let tail: Promise<unknown> = Promise.resolve();
  return {
    run(task) {
      const run = tail.then(task, task);
      tail = run.catch(() => undefined);
      return run;
    },
    idle: () => tail.then(() => undefined),
  };
}
