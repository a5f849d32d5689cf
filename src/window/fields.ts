/** Reading fields of events by name or dotted path, and event time. */
import type { Event } from "../validate/mod.ts";

/**
 * Reads a field: the key itself if the event has it, else a dotted path
 * (`"user.country"`). Returns undefined when absent.
 */
export function readField(event: Event, path: string): unknown {
  // Hot path without Object.hasOwn: JSON holds no functions, so a function
  // here is an inherited Object.prototype member, i.e. the field is absent.
  const value = event[path];
  if (value !== undefined) return typeof value === "function" ? undefined : value;
  if (!path.includes(".")) return undefined;
  let node: unknown = event;
  for (const key of path.split(".")) {
    if (typeof node !== "object" || node === null || !Object.hasOwn(node, key)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

const ISO_8601 =
  /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;

/** Result of {@linkcode readEventTime}: time in ms, or why it is unusable. */
export type EventTime = { ok: true; timeMs: number } | { ok: false; message: string };

/**
 * Reads event time from an ISO-8601 string (UTC when it has no offset) or
 * epoch milliseconds. An absent (or null) field means `receivedMs`.
 */
export function readEventTime(value: unknown, receivedMs: number): EventTime {
  if (value === undefined || value === null) return { ok: true, timeMs: receivedMs };
  if (typeof value === "number") {
    if (!Number.isFinite(value) || Math.abs(value) > 8.64e15) {
      return { ok: false, message: `Event time ${value} is not a valid epoch millisecond value` };
    }
    return { ok: true, timeMs: Math.floor(value) };
  }
  const match = typeof value === "string" ? ISO_8601.exec(value) : null;
  if (match) {
    // Date.parse reads a date-time without an offset as local time; event
    // time must not depend on the server's time zone, so read it as UTC.
    const text = match[0];
    const utc = text.length > 10 && match[1] === undefined ? `${text}Z` : text;
    const timeMs = Date.parse(utc);
    // Date.parse rolls impossible days over ("02-30" becomes March 2nd): refuse them.
    if (Number.isFinite(timeMs) && isCalendarDate(text)) return { ok: true, timeMs };
  }
  return {
    ok: false,
    message: `Event time must be an ISO-8601 string or epoch milliseconds, got ${
      JSON.stringify(value)?.slice(0, 64)
    }`,
  };
}

/** Whether the `YYYY-MM-DD` that starts `text` is a real calendar day. */
function isCalendarDate(text: string): boolean {
  const year = Number(text.slice(0, 4));
  const month = Number(text.slice(5, 7));
  const day = Number(text.slice(8, 10));
  if (month < 1 || month > 12 || day < 1) return false;
  const date = new Date(Date.UTC(year, month - 1, day));
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 &&
    date.getUTCDate() === day;
}
