/**
 * How many store look-ups of names (streams, API keys) not known yet an
 * instance makes a second: a bucket of `perSecond` turns that refills
 * evenly, so that requests naming made-up things cannot make each of them a
 * store call.
 *
 * @example
 * ```ts
 * const budget = new LookupBudget(20);
 * if (!budget.take()) console.log("busy: try again in a second");
 * ```
 *
 * @module
 */

/** A per-second budget of look-ups (a token bucket of `perSecond` turns). */
export class LookupBudget {
  /** Turns a second, and the most held at once. */
  readonly perSecond: number;
  #now: () => number;
  #turns: number;
  #atMs: number;

  constructor(perSecond: number, now: () => number = Date.now) {
    this.perSecond = Math.max(1, perSecond);
    this.#now = now;
    this.#turns = this.perSecond;
    this.#atMs = now();
  }

  /** Takes a turn; false when none is left now. */
  take(): boolean {
    const now = this.#now();
    this.#turns = Math.min(
      this.perSecond,
      this.#turns + Math.max(0, now - this.#atMs) * this.perSecond / 1000,
    );
    this.#atMs = now;
    if (this.#turns < 1) return false;
    this.#turns -= 1;
    return true;
  }

  /** Gives a turn back (a look-up that found what it looked for). */
  giveBack(): void {
    this.#turns = Math.min(this.perSecond, this.#turns + 1);
  }
}
