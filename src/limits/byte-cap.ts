// Daily byte caps (the original's bwmon), pure: from a class's byte counter and the time, the bytes
// a sliver has sent in its period and the ceiling its class should have now.
//
// A period lasts `periodSeconds` (a day) from its start. Bytes are counted from the kernel's class
// counter as differences between samples, so a counter that goes backwards (the class was made
// afresh, the qdisc replaced) starts a new baseline without losing what was counted before it.
// Once the bytes used reach the threshold, the ceiling becomes the rate that spreads what is left
// of the allowance over what is left of the period, never below the guaranteed minimum; at the end
// of the period the count starts again and the normal ceiling returns.

export interface ByteCapState {
  /** Start of the current period, in seconds since the epoch. */
  readonly periodStart: number;
  /** Bytes sent in the current period. */
  readonly usedBytes: number;
  /** The class counter at the last sample. */
  readonly lastCounter: number;
  /** The operator has been told of this period's threshold. */
  readonly notified: boolean;
}

export interface ByteCapRule {
  /** Allowance per period, KiB (net_max_kbyte, net_i2_max_kbyte). */
  readonly maxKbyte: number;
  /** Throttling starts at this many KiB (net_thresh_kbyte, net_i2_thresh_kbyte). */
  readonly threshKbyte: number;
  /** The normal ceiling, kbit/s (net_max_rate, net_i2_max_rate). */
  readonly maxRateKbit: number;
  /** The guaranteed rate, kbit/s (net_min_rate, net_i2_min_rate). */
  readonly minRateKbit: number;
}

export interface ByteCapStep {
  readonly state: ByteCapState;
  /** The ceiling the class should have now, kbit/s. */
  readonly ceilingKbit: number;
  readonly throttled: boolean;
  /** True once per period: the sample at which the threshold was first reached. */
  readonly notify: boolean;
}

/** HTB refuses a rate of 0; a throttled class keeps at least this. */
export const FLOOR_KBIT = 8;

export function stepByteCap(
  previous: ByteCapState | null,
  counter: number,
  nowSeconds: number,
  periodSeconds: number,
  rule: ByteCapRule,
): ByteCapStep {
  if (!(periodSeconds > 0)) throw new Error(`the byte-cap period must be positive, got ${periodSeconds}`);
  let state: ByteCapState;
  if (previous === null) {
    // First sight of this class: whatever the counter holds was sent before we looked.
    state = { periodStart: nowSeconds, usedBytes: 0, lastCounter: counter, notified: false };
  } else {
    const sent = counter >= previous.lastCounter ? counter - previous.lastCounter : counter;
    state = { ...previous, usedBytes: previous.usedBytes + sent, lastCounter: counter };
    if (nowSeconds >= previous.periodStart + periodSeconds) {
      // A new period; if several passed unobserved (the daemon was down), it starts now.
      state = { periodStart: nowSeconds, usedBytes: 0, lastCounter: counter, notified: false };
    }
  }

  const floor = Math.max(FLOOR_KBIT, rule.minRateKbit);
  const normal = Math.max(floor, rule.maxRateKbit);
  if (state.usedBytes < rule.threshKbyte * 1024) return { state, ceilingKbit: normal, throttled: false, notify: false };

  const secondsLeft = Math.max(1, state.periodStart + periodSeconds - nowSeconds);
  const bytesLeft = Math.max(0, rule.maxKbyte * 1024 - state.usedBytes);
  const spread = Math.floor((bytesLeft * 8) / secondsLeft / 1000);
  const ceilingKbit = Math.min(normal, Math.max(floor, spread));
  const notify = !state.notified;
  return { state: notify ? { ...state, notified: true } : state, ceilingKbit, throttled: true, notify };
}
