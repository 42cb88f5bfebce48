// What a benchmark set up on the host, undone in reverse order at its end, on an error and on
// Ctrl-C (SIGINT) or SIGTERM. A step that fails is reported and the others still run: a half
// cleaned-up host is worse than a noisy one.

export interface UndoStack {
  /** Registers how to undo what was just done. */
  push(what: string, undo: () => Promise<unknown>): void;
  /** Undoes everything registered, newest first; safe to call again (it undoes nothing twice). */
  unwind(): Promise<void>;
}

export function createUndoStack(report: (line: string) => void = (line) => console.error(line)): UndoStack {
  const steps: { what: string; undo: () => Promise<unknown> }[] = [];
  let unwinding: Promise<void> | null = null;
  const unwind = () => {
    unwinding ??= (async () => {
      for (let step = steps.pop(); step; step = steps.pop()) {
        try {
          await step.undo();
        } catch (error) {
          report(`cleanup: ${step.what} failed: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
    })().finally(() => {
      unwinding = null;
    });
    return unwinding;
  };
  return { push: (what, undo) => void steps.push({ what, undo }), unwind };
}

/**
 * Unwinds `stack` when the process is interrupted, then exits (130 for SIGINT, 143 for SIGTERM);
 * a second signal while unwinding is ignored, so that the cleanup is not cut short.
 */
export function unwindOnSignals(stack: UndoStack, report: (line: string) => void = (line) => console.error(line)): void {
  let interrupted = false;
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(signal, () => {
      if (interrupted) return;
      interrupted = true;
      report(`\n${signal}: cleaning up`);
      void stack.unwind().finally(() => process.exit(code));
    });
  }
}
