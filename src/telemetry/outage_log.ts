/**
 * The log of a background task (a poll, a sweep) that fails while the store is unavailable:
 * every try fails alike, every few seconds, for as long as the outage lasts. It is said when
 * it starts, then at most once per period with how long it has lasted, and once more when the
 * task works again; the error as one line of text (its causes included), without the stacks
 * that told nothing an operator can act on and made each line ~2 KB.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { isStoreDown } from "../store/types.ts";
import { causeText } from "./logging.ts";
import { withinPeriod } from "./clock.ts";

/** How often a lasting outage is said again. */
export const OUTAGE_LOG_EVERY_MS = 60_000;

/** Options for {@linkcode OutageLog}. */
export interface OutageLogOptions {
  /** What a failure says: a message template with `{error}`. */
  failed: string;
  /**
   * What the first success after an outage says, e.g. `Stream definitions polled again`.
   * @default {nothing: the caller says it}
   */
  recovered?: string;
  /** How often a lasting outage is said again. @default {60000} */
  everyMs?: number;
  /** The clock (ms). @default {Date.now} */
  now?: () => number;
}

/**
 * One task's failures, logged so that an outage of the store is a few lines however long it
 * lasts. A failure other than the store's unavailability (a defect, bad data, a call the store
 * refused as too large: `StoreRequestTooLargeError`, the same call refused again each time) is
 * logged at `error`, each time, with its stack.
 *
 * @example
 * ```ts
 * import { getLogger } from "@logtape/logtape";
 * import { OutageLog } from "./outage_log.ts";
 *
 * const outage = new OutageLog(getLogger(["edgestream", "streams"]), {
 *   failed: "Cannot poll stream definitions: {error}",
 *   recovered: "Stream definitions polled again",
 * });
 * outage.failure(new Error("boom")); // logged at error
 * outage.success(); // nothing to say: no outage was logged
 * ```
 */
export class OutageLog {
  #logger: Logger;
  #failed: string;
  #recovered: string | undefined;
  #everyMs: number;
  #now: () => number;
  /** The outage going on: when its first failure was, how many, when last said. */
  #outage: { since: number; failures: number; saidAt: number } | undefined;

  constructor(logger: Logger, options: OutageLogOptions) {
    this.#logger = logger;
    this.#failed = options.failed;
    this.#recovered = options.recovered;
    this.#everyMs = options.everyMs ?? OUTAGE_LOG_EVERY_MS;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Logs a failure of the task: the store unavailable at `warning`, the first of an outage at
   * once and then at most once per period (with how many failed since when); anything else at
   * `error`, a call refused as too large included (the store answered: no outage, and the same
   * call is refused again each time until someone acts).
   */
  failure(error: unknown, properties: Record<string, unknown> = {}): void {
    if (!isStoreDown(error)) {
      this.#logger.error(this.#failed, { ...properties, error });
      return;
    }
    const now = this.#now();
    const text = causeText(error);
    const outage = this.#outage;
    if (outage === undefined) {
      this.#outage = { since: now, failures: 1, saidAt: now };
      this.#logger.warn(this.#failed, { ...properties, error: text });
      return;
    }
    outage.failures += 1;
    // A clock before the last line's time (the wall clock stepped back) counts as due.
    if (withinPeriod(now, outage.saidAt, this.#everyMs)) return;
    outage.saidAt = now;
    this.#logger.warn(`${this.#failed} ({failures} failures since {failingSince})`, {
      ...properties,
      error: text,
      failures: outage.failures,
      failingSince: new Date(outage.since).toISOString(),
    });
  }

  /** The task worked: ends an outage, saying so when one was logged. */
  success(properties: Record<string, unknown> = {}): void {
    const outage = this.#outage;
    if (outage === undefined) return;
    this.#outage = undefined;
    if (this.#recovered === undefined) return;
    const noun = outage.failures === 1 ? "failure" : "failures";
    this.#logger.info(`${this.#recovered} after {failures} ${noun} since {failingSince}`, {
      ...properties,
      failures: outage.failures,
      failingSince: new Date(outage.since).toISOString(),
    });
  }
}
