/** Reading fields of events by name or dotted path, and event time. */
import { type Event, parseInstant } from "../validate/mod.ts";

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

/** Result of {@linkcode readEventTime}: time in ms, or why it is unusable. */
export type EventTime = { ok: true; timeMs: number } | { ok: false; message: string };

/**
 * Reads event time from an ISO-8601 string (UTC when it has no offset) or
 * epoch milliseconds, as {@linkcode parseInstant} does. An absent (or null)
 * field means `receivedMs`.
 */
export function readEventTime(value: unknown, receivedMs: number): EventTime {
  if (value === undefined || value === null) return { ok: true, timeMs: receivedMs };
  const timeMs = parseInstant(value);
  if (timeMs !== null) return { ok: true, timeMs };
  if (typeof value === "number") {
    return { ok: false, message: `Event time ${value} is not a valid epoch millisecond value` };
  }
  return {
    ok: false,
    message: `Event time must be an ISO-8601 string or epoch milliseconds, got ${
      JSON.stringify(value)?.slice(0, 64)
    }`,
  };
}
