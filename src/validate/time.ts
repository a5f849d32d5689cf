/**
 * Instants, read one way everywhere (event time, counter query bounds,
 * webhook replay): epoch milliseconds or ISO-8601 text. Text without an
 * offset is UTC: `Date.parse` would read it in the server's time zone, so an
 * event and a query for the same wall-clock time could disagree.
 */

import { endsUtcDay } from "./_leap_second.ts";

/** The largest distance (ms) from the epoch a `Date` can hold. */
export const MAX_EPOCH_MS = 8.64e15;

// A year of four digits, or six with a sign (ISO 8601's expanded years, as `toISOString` writes the
// years before 0 and after 9999: a window's `start` there is `-271821-04-20T00:00:00.000Z`).
const ISO_8601 =
  /^(\d{4}|[+-]\d{6})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(?:Z|([+-])(\d{2}):?(\d{2}))?)?$/i;

/**
 * Reads ISO-8601 text (`2026-01-01T10:15:00Z`, `…+01:00`, `2026-01-01`,
 * `-000001-01-01`; UTC when it has no offset) as epoch ms, or null when it is not such text
 * or names a day or time that does not exist (`2026-02-30`, `24:00`, `:60` but at the end of
 * a UTC day), which `Date.parse` would roll over.
 */
function parseIso(text: string, rounding: Rounding = "floor"): number | null {
  const match = ISO_8601.exec(text);
  if (match === null) return null;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map((part) =>
    Number(part ?? 0)
  );
  // The whole milliseconds, and one more when rounding up an instant past them (`.0001`).
  const fraction = Number((match[7] ?? "").padEnd(3, "0").slice(0, 3)) +
    (rounding === "ceil" && /[1-9]/.test((match[7] ?? "").slice(3)) ? 1 : 0);
  const offsetMinutes = match[8] === undefined
    ? 0
    : (match[8] === "-" ? -1 : 1) * (Number(match[9]) * 60 + Number(match[10]));
  if (hour > 23 || minute > 59 || second > 60) return null;
  if (match[8] !== undefined && (Number(match[9]) > 23 || Number(match[10]) > 59)) return null;
  // A leap second (RFC 3339's `:60`) is the last second of a UTC day, in any offset: it falls
  // between `23:59:59.999` and the next day's `00:00:00.000`, which epoch milliseconds have no
  // room between, so it is read as the one before it (`floor`: an event stays in its day) or the
  // one after it (`ceil`).
  const leap = second === 60;
  if (leap && !endsUtcDay(hour, minute, offsetMinutes)) return null;
  // Year zero has one form, as ECMAScript's (`Date.parse` refuses `-000000`).
  if (match[1] === "-000000") return null;
  // The day is found in the year's place in the 400-year Gregorian cycle (0-399), which a Date
  // holds whole, then moved by whole cycles: a date at the edge of the Date range, or just past it
  // with an offset taking it back in (`-271821-04-19T23:00-01:00`), is read as any other.
  const cycles = Math.floor(year / 400);
  const yearInCycle = year - cycles * 400;
  // setUTCFullYear, unlike Date.UTC, does not map years 0-99 to 1900-1999.
  const date = new Date(0);
  date.setUTCFullYear(yearInCycle, month - 1, day);
  if (
    month < 1 || month > 12 || date.getUTCFullYear() !== yearInCycle ||
    date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day
  ) return null;
  if (leap) date.setUTCHours(hour, minute, 59, rounding === "ceil" ? 1000 : 999);
  else date.setUTCHours(hour, minute, second, fraction);
  return date.getTime() + cycles * MS_PER_CYCLE - offsetMinutes * 60_000;
}

/**
 * What an instant between two milliseconds (ISO-8601 text with more than three digits of
 * fraction) is read as: `floor` the millisecond it falls in (an event's time: the event happened in
 * it), `ceil` the next one (a bound that whole milliseconds are compared with: `from <= start`
 * and `start < to` hold for a window's whole-millisecond `start` exactly when they hold for the
 * next millisecond).
 */
export type Rounding = "floor" | "ceil";

/** Milliseconds in 400 Gregorian years (146,097 days). */
const MS_PER_CYCLE = 146_097 * 86_400_000;

/**
 * Reads an instant from a JSON value: a number is epoch milliseconds
 * (fractions floored), a string ISO-8601 (UTC when it has no offset).
 * Returns epoch ms, or null for anything else, impossible dates and
 * instants outside the `Date` range.
 *
 * @example
 * ```ts
 * import { parseInstant } from "./time.ts";
 *
 * parseInstant("2026-01-01T10:15:00"); // 1767262500000, whatever TZ says
 * parseInstant(1767262500000.7); // 1767262500000
 * parseInstant("2026-02-30"); // null
 * ```
 */
export function parseInstant(value: unknown): number | null {
  let ms: number | null = null;
  if (typeof value === "number" && Number.isFinite(value)) ms = Math.floor(value);
  else if (typeof value === "string") ms = parseIso(value);
  return inDateRange(ms);
}

/** ISO 8601's basic form: `20261207`, `20261207T132021Z`, `20261207T1320+0100` (no `-` or `:`). */
const ISO_8601_BASIC =
  /^(?:\d{8}|[+-]\d{10})(?:T\d{2}(?:\d{2}(?:\d{2})?)?(?:[.,]\d+)?(?:Z|[+-]\d{2}(?:\d{2})?)?)?$/i;

/**
 * The extended form with a comma, not a full stop, before a fraction of a second (of the seconds:
 * a fraction of a minute is not read in either form).
 */
const COMMA_FRACTION = /^(?:\d{4}|[+-]\d{6})-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2},\d/i;

/**
 * Why `text`, which {@linkcode parseInstant} refused, is not read when it is written in a form of
 * ISO 8601 that edgestream does not read (it reads the extended form, RFC 3339's): the basic form
 * (`20261207T132021Z`) or a comma before a fraction of a second (`13:20:21,5Z`). Undefined for
 * any other text.
 *
 * @example
 * ```ts
 * import { unreadIsoForm } from "./time.ts";
 *
 * unreadIsoForm("20261207T132021Z"); // "the basic form, without '-' and ':', is not read"
 * unreadIsoForm("2026-12-07T13:20:21,5Z"); // "a fraction of a second follows '.', not ','"
 * unreadIsoForm("yesterday"); // undefined
 * ```
 */
export function unreadIsoForm(text: string): string | undefined {
  if (ISO_8601_BASIC.test(text)) return "the basic form, without '-' and ':', is not read";
  if (COMMA_FRACTION.test(text)) return "a fraction of a second follows '.', not ','";
  return undefined;
}

/** `ms` when a `Date` can hold it (at most {@linkcode MAX_EPOCH_MS} from the epoch), else null. */
function inDateRange(ms: number | null): number | null {
  return ms !== null && Math.abs(ms) <= MAX_EPOCH_MS ? ms : null;
}

/**
 * Reads an instant from text such as a query parameter, where a number can
 * only be written as digits: digits (`1767262500000`, `-5`) are epoch
 * milliseconds, anything else is read as by {@linkcode parseInstant}, but an instant between two
 * milliseconds is read as `rounding` says ({@linkcode Rounding}; a counter read's `from` and `to`
 * round up).
 */
export function parseInstantText(text: string, rounding: Rounding = "floor"): number | null {
  if (/^-?\d+$/.test(text)) return parseInstant(Number(text));
  return inDateRange(parseIso(text, rounding));
}
