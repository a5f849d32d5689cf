/**
 * Periods on the wall clock, which can step back (an NTP correction).
 *
 * @module
 */

/**
 * Whether `now` is within `periodMs` of `since`: at or after it, by less than
 * the period. A clock before `since` (the wall clock stepped back) is not
 * within: else what is kept or put off until the period passes would be kept
 * until the clock passed `since` again, an hour for a step of an hour.
 *
 * @example
 * ```ts
 * import { withinPeriod } from "./clock.ts";
 *
 * withinPeriod(1_500, 1_000, 2_000); // true
 * withinPeriod(3_000, 1_000, 2_000); // false: the period passed
 * withinPeriod(500, 1_000, 2_000); // false: the clock went back
 * ```
 */
export function withinPeriod(now: number, since: number, periodMs: number): boolean {
  return now >= since && now - since < periodMs;
}
