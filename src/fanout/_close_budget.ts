/**
 * What a sweep may still close of one stream: the `limit` of its next close call.
 *
 * @module
 */
import { SESSIONS_PER_WINDOW } from "../store/types.ts";

/**
 * Counts what one sweep closed of each counter of a stream and says the `limit` of its next
 * close call (`CloseOptions.limit`: windows per counter, and {@linkcode SESSIONS_PER_WINDOW}
 * times as many sessions of a session counter), so that no counter closes more than `windows`
 * windows, or `windows` × {@linkcode SESSIONS_PER_WINDOW} sessions, in the sweep.
 *
 * A counter's closes are counted in sessions, a window as {@linkcode SESSIONS_PER_WINDOW} of
 * them (as many as a close may take of a session counter for the same limit). One limit goes for
 * every counter of the call: what the busiest counter left, in whole windows, rounded down.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CloseBudget } from "./_close_budget.ts";
 *
 * const budget = new CloseBudget(100);
 * for (let i = 0; i < 30; i++) budget.take("per_minute", false);
 * for (let i = 0; i < 15; i++) budget.take("visits", true);
 * assert.equal(budget.limit, 70); // per_minute's 30 windows; visits' 15 sessions are 2 windows
 * ```
 */
export class CloseBudget {
  #windows: number;
  /** Counter → what it closed this sweep, in sessions. */
  #taken = new Map<string, number>();

  /** A budget of `windows` windows per counter (of sessions, ten times as many). */
  constructor(windows: number) {
    this.#windows = windows;
  }

  /** Counts a window of `counter` closed, or a session when `session`. */
  take(counter: string, session: boolean): void {
    const sessions = session ? 1 : SESSIONS_PER_WINDOW;
    this.#taken.set(counter, (this.#taken.get(counter) ?? 0) + sessions);
  }

  /** The `limit` of the next close call: what is left of the busiest counter, in windows. */
  get limit(): number {
    const busiest = Math.max(0, ...this.#taken.values());
    return this.#windows - Math.ceil(busiest / SESSIONS_PER_WINDOW);
  }

  /**
   * The `limit` of a close call of only `counters`: what is left of the busiest of them, in
   * windows (a counter that used its budget is left out of the call, so it holds up no other).
   */
  limitOf(counters: readonly string[]): number {
    const busiest = Math.max(0, ...counters.map((counter) => this.#taken.get(counter) ?? 0));
    return this.#windows - Math.ceil(busiest / SESSIONS_PER_WINDOW);
  }
}
