/**
 * Durations written as text in stream definitions: `"500ms"`, `"30s"`, `"5m"`,
 * `"1h"`, `"7d"`, `"2w"`, or a combination such as `"1h30m"`: each unit at most
 * once, and a whole number of milliseconds.
 *
 * @module
 */

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/y;

/** Error thrown by {@linkcode parseDuration} for text that is not a duration. */
export class DurationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DurationError";
  }
}

/** Options for {@linkcode parseDuration}. */
export interface ParseDurationOptions {
  /**
   * Take a fraction of a millisecond (rounded to the nearest: `0.6ms` is 1 ms) and a unit given
   * twice (the parts added: `1m1m` is 2 minutes), as releases before those checks did, so that a
   * definition stored or deployed then is read as it was. @default {false: refused}
   */
  lenient?: boolean;
}

/**
 * Parses a duration such as `"1h30m"` into milliseconds. Each unit comes at most once, and each
 * part is a whole number of milliseconds (`1.5s`, not `0.6ms`): otherwise a
 * {@linkcode DurationError} names the problem (unless {@linkcode ParseDurationOptions.lenient}).
 *
 * @example
 * ```ts
 * parseDuration("5m"); // 300000
 * ```
 */
export function parseDuration(text: string, options: ParseDurationOptions = {}): number {
  const trimmed = text.trim();
  if (trimmed === "") throw new DurationError("Duration is empty");
  // Positions count in `text` as the message quotes it, leading whitespace included.
  const lead = text.length - text.trimStart().length;
  let total = 0;
  const seen = new Set<string>();
  PART.lastIndex = 0;
  while (PART.lastIndex < trimmed.length) {
    const start = PART.lastIndex;
    const position = lead + start;
    const match = PART.exec(trimmed);
    if (!match) {
      throw new DurationError(
        `Cannot read duration '${text}' at position ${position}: expected a number and a unit (ms, s, m, h, d, w)`,
      );
    }
    const [part, number, unit] = match;
    if (!options.lenient) {
      if (seen.has(unit)) {
        throw new DurationError(
          `Cannot read duration '${text}' at position ${position}: unit '${unit}' is given twice; give each unit once`,
        );
      }
      if (!wholeMilliseconds(number, UNIT_MS[unit])) {
        throw new DurationError(
          `Cannot read duration '${text}': '${part}' is not a whole number of milliseconds; a duration is counted in whole ms`,
        );
      }
    }
    seen.add(unit);
    total += Number(number) * UNIT_MS[unit];
  }
  if (!Number.isFinite(total)) throw new DurationError(`Duration '${text}' is too large`);
  return Math.round(total);
}

/** Whether `number` (decimal text, `1.25`) times `unitMs` is whole, computed exactly. */
function wholeMilliseconds(number: string, unitMs: number): boolean {
  const fraction = number.split(".")[1];
  if (fraction === undefined) return true;
  return BigInt(fraction) * BigInt(unitMs) % 10n ** BigInt(fraction.length) === 0n;
}

/** Formats milliseconds as the shortest exact duration text, e.g. `90000` → `"1m30s"`. */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) {
    throw new RangeError(`Cannot format ${ms} ms as a duration: expected a whole number >= 0`);
  }
  if (ms === 0) return "0s";
  let rest = ms;
  let out = "";
  for (const unit of ["w", "d", "h", "m", "s", "ms"]) {
    const size = UNIT_MS[unit];
    const whole = Math.floor(rest / size);
    if (whole > 0) {
      out += `${whole}${unit}`;
      rest -= whole * size;
    }
  }
  return out;
}

/**
 * Milliseconds as a message says a duration, as the README writes one: in the largest unit that
 * holds it whole (`"5 days"`, `"2 h"`, `"5 min"`, `"90 s"`, `"500 ms"`), or, past a second and
 * not whole seconds, as a setting is written ({@linkcode formatDuration}: `"1s500ms"`).
 *
 * @example
 * ```ts
 * import { describeDuration } from "./duration.ts";
 *
 * describeDuration(15_000); // "15 s"
 * describeDuration(1_500); // "1s500ms"
 * describeDuration(432_000_000); // "5 days"
 * ```
 */
export function describeDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) return formatDuration(ms);
  if (ms < UNIT_MS.s) return `${ms} ms`;
  if (ms % UNIT_MS.d === 0) return `${ms / UNIT_MS.d} day${ms === UNIT_MS.d ? "" : "s"}`;
  if (ms % UNIT_MS.h === 0) return `${ms / UNIT_MS.h} h`;
  if (ms % UNIT_MS.m === 0) return `${ms / UNIT_MS.m} min`;
  if (ms % UNIT_MS.s === 0) return `${ms / UNIT_MS.s} s`;
  return formatDuration(ms);
}
