/**
 * Bounds on live subscriptions (SSE and WebSocket `…/subscribe`): each one
 * holds a connection, a file descriptor and its buffers (some 60 KB) for as
 * long as its client likes, so without a bound one read key could open
 * subscriptions until the process runs out of files or memory. A process
 * takes at most `perProcess` subscriptions, and one holder at most `perKey`
 * of them: an API key (a run-time key by its id, an environment key by its
 * digest), or in open mode (no keys) a client address. Both count this
 * process's subscriptions only; instances sharing a store count their own.
 *
 * A subscription takes its slot before it is set up and gives it back when
 * it ends, however it ends.
 *
 * @module
 */

/** Default most live subscriptions of one key (or, in open mode, one client address). */
export const DEFAULT_SUBSCRIPTIONS_PER_KEY = 100;
/** Default most live subscriptions of one process. */
export const DEFAULT_SUBSCRIPTIONS_MAX = 10_000;
/** Seconds a refused subscriber is told to wait (`Retry-After`). */
export const SUBSCRIPTION_RETRY_AFTER_SECONDS = 5;

/** The bounds. */
export interface SubscriptionLimits {
  /** Most subscriptions of one key or client address. @default {100} */
  perKey?: number;
  /** Most subscriptions of the process. @default {10000} */
  perProcess?: number;
}

/** A subscription refused: its holder's bound (`key`) or the process's (`process`) is reached. */
export class SubscriptionLimitError extends Error {
  /** Which bound. */
  readonly limit: "key" | "process";
  /** Its value. */
  readonly max: number;

  constructor(limit: "key" | "process", max: number, message: string) {
    super(message);
    this.name = "SubscriptionLimitError";
    this.limit = limit;
    this.max = max;
  }
}

/** A slot held: {@linkcode release} gives it back (once; later calls do nothing). */
export interface SubscriptionSlot {
  release(): void;
}

/**
 * The live subscriptions of one process, by holder.
 *
 * @example
 * ```ts
 * import { SubscriptionSlots } from "./subscription_slots.ts";
 *
 * const slots = new SubscriptionSlots({ perKey: 2, perProcess: 100 });
 * const slot = slots.take("key:abc", "API key 'abc'");
 * // …when the subscription ends:
 * slot.release();
 * ```
 */
export class SubscriptionSlots {
  #perKey: number;
  #perProcess: number;
  #byHolder = new Map<string, number>();
  #total = 0;

  constructor(limits: SubscriptionLimits = {}) {
    this.#perKey = limits.perKey ?? DEFAULT_SUBSCRIPTIONS_PER_KEY;
    this.#perProcess = limits.perProcess ?? DEFAULT_SUBSCRIPTIONS_MAX;
  }

  /** Subscriptions held now, of `holder` or of the process. */
  held(holder?: string): number {
    return holder === undefined ? this.#total : this.#byHolder.get(holder) ?? 0;
  }

  /**
   * Takes a slot for `holder` (`named` says who it is in the refusal, without the key text);
   * throws {@linkcode SubscriptionLimitError} when a bound is reached.
   */
  take(holder: string, named: string): SubscriptionSlot {
    const mine = this.#byHolder.get(holder) ?? 0;
    if (mine >= this.#perKey) {
      throw new SubscriptionLimitError(
        "key",
        this.#perKey,
        `Too many live subscriptions: ${named} has ${mine} open on this server; the limit is ${this.#perKey}; close one first`,
      );
    }
    if (this.#total >= this.#perProcess) {
      throw new SubscriptionLimitError(
        "process",
        this.#perProcess,
        `Too many live subscriptions on this server: ${this.#total} open; the limit is ${this.#perProcess}; try again later or another instance`,
      );
    }
    this.#byHolder.set(holder, mine + 1);
    this.#total += 1;
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        this.#total -= 1;
        const left = (this.#byHolder.get(holder) ?? 1) - 1;
        if (left === 0) this.#byHolder.delete(holder);
        else this.#byHolder.set(holder, left);
      },
    };
  }
}
