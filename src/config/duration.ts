/**
 * Durations written as text in stream definitions: `"500ms"`, `"30s"`, `"5m"`,
 * `"1h"`, `"7d"`, `"2w"`, or a combination such as `"1h30m"`.
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

/**
 * Parses a duration such as `"1h30m"` into milliseconds.
 *
 * @example
 * ```ts
 * parseDuration("5m"); // 300000
 * ```
 */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (trimmed === "") throw new DurationError("Duration is empty");
  let total = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < trimmed.length) {
    const start = PART.lastIndex;
    const match = PART.exec(trimmed);
    if (!match) {
      throw new DurationError(
        `Cannot read duration '${text}' at position ${start}: expected a number and a unit (ms, s, m, h, d, w)`,
      );
    }
    total += Number(match[1]) * UNIT_MS[match[2]];
  }
  if (!Number.isFinite(total)) throw new DurationError(`Duration '${text}' is too large`);
  return Math.round(total);
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
