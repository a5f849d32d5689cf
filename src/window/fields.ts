/** Reading fields of events by name or dotted path, and event time. */
import { type Event, parseInstant, unreadIsoForm } from "../validate/mod.ts";

/**
 * Reads a field: the key itself if the event has it, else a dotted path
 * (`"user.country"`). Returns undefined when absent.
 */
export function readField(event: Event, path: string): unknown {
  // Hot path without Object.hasOwn: JSON holds no functions, so a function
  // here is an inherited Object.prototype member, i.e. the field is absent.
  const value = event[path];
  if (value !== undefined) return typeof value === "function" ? undefined : value;
  // The dotted path in a function of its own: this one stays small enough for V8 to inline at
  // every hot call (7 an event), within the inlining budget of its callers.
  return path.includes(".") ? readPath(event, path) : undefined;
}

/** {@linkcode readField} of a dotted path the event does not hold as a key. */
function readPath(event: Event, path: string): unknown {
  let node: unknown = event;
  for (const key of path.split(".")) {
    if (typeof node !== "object" || node === null || !Object.hasOwn(node, key)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/**
 * Event time in epoch ms from an ISO-8601 string (UTC when it has no offset) or epoch
 * milliseconds, as {@linkcode parseInstant} reads them; an absent (or null) field means
 * `receivedMs`. Null when the value is no time ({@linkcode eventTimeError} says why).
 */
export function eventTimeMs(value: unknown, receivedMs: number): number | null {
  return value === undefined || value === null ? receivedMs : parseInstant(value);
}

/** Why `value` is no event time, for a value {@linkcode eventTimeMs} refused. */
export function eventTimeError(value: unknown): string {
  if (typeof value === "number") {
    return `Event time ${value} is not a valid epoch millisecond value`;
  }
  const why = typeof value === "string" ? unreadIsoForm(value) : undefined;
  return `Event time must be ISO-8601 in its extended form (2026-01-01T10:15:00.5Z, 2026-01-01) or epoch milliseconds, got ${
    JSON.stringify(value)?.slice(0, 64)
  }${why === undefined ? "" : `: ${why}`}`;
}
