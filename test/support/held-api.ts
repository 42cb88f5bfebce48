// An API for the ssh gateway's tests that holds every request until the test releases them: a
// delegate's session stays open exactly as long as the test needs, and the test can tell when a
// request has reached the API (the session is open by then).
import type { Caller } from '../../src/api/identity.js';

export interface HeldApi {
  /** The gateway's callApi: each request waits until release(), then gets `answer`'s text. */
  callApi(caller: Caller, body: Buffer): Promise<string>;
  /** Answers every request held so far. */
  release(): void;
  /** Requests that reached the API so far. */
  readonly calls: number;
}

export function heldApi(answer: (caller: Caller, body: Buffer) => string): HeldApi {
  let held: Array<() => void> = [];
  let calls = 0;
  return {
    callApi: (caller, body) => new Promise((resolve) => {
      calls++;
      held.push(() => resolve(answer(caller, body)));
    }),
    release() {
      const now = held;
      held = [];
      for (const resolve of now) resolve();
    },
    get calls() {
      return calls;
    },
  };
}
