/**
 * A warning said at most once per period about one thing (an alert's
 * condition, an endpoint's filter): a condition that fails on every batch
 * must not flood the log, nor go unsaid.
 *
 * @module
 */

import { withinPeriod } from "./clock.ts";

/**
 * Decides, per key, whether a warning is due: the first time, then once
 * `everyMs` passed since the last one said, or the clock is before its time. Keys are held weakly, so a key
 * replaced (a stream defined again, a filter changed) warns anew.
 *
 * @example
 * ```ts
 * import { WarningLimit } from "./warning_limit.ts";
 *
 * const limit = new WarningLimit<object>(60_000);
 * const alert = {};
 * limit.due(alert); // true
 * limit.due(alert); // false, for a minute
 * ```
 */
export class WarningLimit<K extends object> {
  #last = new WeakMap<K, number>();
  #everyMs: number;
  #now: () => number;

  constructor(everyMs: number, now: () => number = () => performance.now()) {
    this.#everyMs = everyMs;
    this.#now = now;
  }

  /** Whether a warning about `key` is due now; when it is, it counts as said. */
  due(key: K): boolean {
    const now = this.#now();
    const last = this.#last.get(key);
    // A clock before the last warning's time (a wall clock stepped back) counts as due.
    if (last !== undefined && withinPeriod(now, last, this.#everyMs)) return false;
    this.#last.set(key, now);
    return true;
  }
}
