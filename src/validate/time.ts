/**
 * Instants, read one way everywhere (event time, counter query bounds,
 * webhook replay): epoch milliseconds or ISO-8601 text. Text without an
 * offset is UTC: `Date.parse` would read it in the server's time zone, so an
 * event and a query for the same wall-clock time could disagree.
 */

/** The largest distance (ms) from the epoch a `Date` can hold. */
const MAX_EPOCH_MS = 8.64e15;

const ISO_8601 =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(?:Z|([+-])(\d{2}):?(\d{2}))?)?$/i;

/**
 * Reads ISO-8601 text (`2026-01-01T10:15:00Z`, `…+01:00`, `2026-01-01`;
 * UTC when it has no offset) as epoch ms, or null when it is not such text
 * or names a day or time that does not exist (`2026-02-30`, `24:00`), which
 * `Date.parse` would roll over.
 */
function parseIso(text: string): number | null {
  const match = ISO_8601.exec(text);
  if (match === null) return null;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map((part) =>
    Number(part ?? 0)
  );
  const fraction = Number((match[7] ?? "").padEnd(3, "0").slice(0, 3));
  const offsetMinutes = match[8] === undefined
    ? 0
    : (match[8] === "-" ? -1 : 1) * (Number(match[9]) * 60 + Number(match[10]));
  if (hour > 23 || minute > 59 || second > 59) return null;
  if (match[8] !== undefined && (Number(match[9]) > 23 || Number(match[10]) > 59)) return null;
  // setUTCFullYear, unlike Date.UTC, does not map years 0-99 to 1900-1999.
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  if (
    month < 1 || month > 12 || date.getUTCFullYear() !== year ||
    date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day
  ) return null;
  date.setUTCHours(hour, minute, second, fraction);
  return date.getTime() - offsetMinutes * 60_000;
}

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
  return ms !== null && Math.abs(ms) <= MAX_EPOCH_MS ? ms : null;
}

/**
 * Reads an instant from text such as a query parameter, where a number can
 * only be written as digits: digits (`1767262500000`, `-5`) are epoch
 * milliseconds, anything else is read as by {@linkcode parseInstant}.
 */
export function parseInstantText(text: string): number | null {
  return parseInstant(/^-?\d+$/.test(text) ? Number(text) : text);
}
