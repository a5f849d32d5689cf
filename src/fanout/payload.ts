/**
 * The public form of a result: what live subscribers (and webhook receivers)
 * get for an entry of a stream's result log. Pure functions, no I/O.
 *
 * @module
 */
import type { CompiledStream } from "../config/mod.ts";
import type { LogEntry, LogRecord } from "../store/types.ts";
import { aggregateValue, decodeGroup, partialWindow } from "../window/mod.ts";

/** Every kind of result a stream publishes. */
export type PayloadType = LogRecord["type"];

/** The kinds of result, in documentation order. */
export const PAYLOAD_TYPES: readonly PayloadType[] = [
  "window.updated",
  "window.closed",
  "alert.fired",
  "event.processed",
  "event.late",
];

/**
 * A result as published, in the shape Standard Webhooks recommends:
 * `{"type": "window.closed", "timestamp": "<ISO>", "data": {…}}`.
 */
export interface PublicPayload {
  /** What happened. */
  type: PayloadType;
  /** When the result was logged, ISO-8601. */
  timestamp: string;
  /**
   * For `window.*`: `stream`, `counter`, `aggregate`, `group` (field →
   * value), `start`, `end` (ISO-8601), `value` and, for estimates,
   * `approximate`; `partial: true` for a window that misses events applied
   * before its counter was added to the stream (or added back), see
   * `partialWindow`. For `alert.fired` also `alert`. For `event.*`: `stream`,
   * `time` (event time, ISO-8601) and `event` (after transforms).
   */
  data: Record<string, unknown>;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * Converts an entry of `stream`'s result log into its public payload; null
 * when it names a counter the stream does not know (neither has nor had, as its definition
 * record says: one written by another release).
 *
 * @example
 * ```ts
 * import { compileConfig } from "../config/mod.ts";
 * import { MemoryStore } from "../store/mod.ts";
 * import { publicPayload } from "./payload.ts";
 *
 * const stream = compileConfig({
 *   streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
 * }).get("orders")!;
 * const store = new MemoryStore();
 * for (const entry of await store.readLog("orders", null, 10)) {
 *   console.log(publicPayload(stream, entry));
 * }
 * // {type: "window.closed", timestamp: "2026-01-01T00:01:05.000Z",
 * //  data: {stream: "orders", counter: "count_1m", aggregate: "count",
 * //         group: {country: "DE"}, start: "…", end: "…", value: 3}}
 * ```
 */
export function publicPayload(stream: CompiledStream, entry: LogEntry): PublicPayload | null {
  const record = entry.record;
  const timestamp = iso(entry.timeMs);
  if ("event" in record) {
    return {
      type: record.type,
      timestamp,
      data: { stream: stream.name, time: iso(record.timeMs), event: record.event },
    };
  }
  // A counter removed since the entry was logged reads back as it was (its record keeps it).
  const counter = stream.counters.find((item) => item.name === record.counter) ??
    stream.formerCounters?.find((item) => item.name === record.counter);
  if (!counter) return null;
  const base = {
    stream: stream.name,
    counter: counter.name,
    aggregate: counter.aggregate.kind,
    group: decodeGroup(counter.groupBy, record.group),
    start: iso(record.start),
    end: iso(record.end),
  };
  const partial = partialWindow(counter, record.start);
  if (record.type === "alert.fired") {
    const fired: Record<string, unknown> = { alert: record.alert, ...base, value: record.value };
    if (record.approximate) fired.approximate = true;
    if (partial) fired.partial = true;
    return { type: record.type, timestamp, data: fired };
  }
  const data: Record<string, unknown> = {
    ...base,
    value: aggregateValue(counter.aggregate, record.state),
  };
  if (record.state.approximate) data.approximate = true;
  if (partial) data.partial = true;
  return { type: record.type, timestamp, data };
}
