/**
 * edgestream's OpenTelemetry instruments and the small functions the stages
 * call to record them. Deno registers the meter provider itself when
 * `OTEL_DENO=true` (no SDK is bundled); without it the API hands out no-op
 * instruments and every call here does nothing.
 *
 * Attributes stay low-cardinality: stream, counter and alert names are those
 * of served streams (the config file's, and those an admin created through the
 * API, whose series stay until the process restarts), never taken from a
 * request that names an unknown stream.
 *
 * @module
 */
import { createNoopMeter, type Histogram, metrics } from "@opentelemetry/api";

/** Instrumentation scope name of every instrument and span. */
export const SCOPE_NAME = "edgestream";
/** Instrumentation scope version. */
export const SCOPE_VERSION = "0.1.0";

/** How an ingest request arrived. */
export type IngestTransport = "http" | "ws";
/** What became of one event of an ingest request; each event has exactly one. */
export type EventOutcomeName = "accepted" | "duplicate" | "late" | "filtered" | "rejected";
/** How a store call ended: answered, store unreachable (503), or failed otherwise (500). */
export type StoreResult = "ok" | "unavailable" | "refused";
/**
 * How one webhook attempt ended: sent, failed with a retry planned, failed for good, or cut off
 * by its instance stopping (sent again at once, elsewhere).
 */
export type DeliveryOutcome = "succeeded" | "failed" | "dead" | "interrupted";
/** How a live subscriber is connected. */
export type LiveTransport = "ws" | "sse";

// Seconds, from a fast memory-store apply up to the webhook request timeout.
const SECONDS_BUCKETS = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.075,
  0.1,
  0.25,
  0.5,
  0.75,
  1,
  2.5,
  5,
  7.5,
  10,
  15,
];

const meter = metrics.getMeter(SCOPE_NAME, SCOPE_VERSION);

/** Whether the instruments record; without a meter provider they are all the no-op ones. */
const metered = meter !== createNoopMeter();

/**
 * Whether metrics are recorded: a meter provider was registered before this module ran (Deno
 * registers one with `OTEL_DENO=true`, before any module). Without one every instrument here is a
 * no-op, so callers may skip measuring what they would record.
 */
export function metering(): boolean {
  return metered;
}

/** A histogram of durations in seconds, on the buckets every duration here shares. */
function secondsHistogram(name: string, description: string): Histogram {
  return meter.createHistogram(name, {
    description,
    unit: "s",
    advice: { explicitBucketBoundaries: SECONDS_BUCKETS },
  });
}

const events = meter.createCounter("edgestream.events", {
  description: "Events received by ingest, by what became of them",
  unit: "{event}",
});
const ingestDuration = secondsHistogram(
  "edgestream.ingest.duration",
  "Time to answer one ingest request (HTTP) or frame (WebSocket)",
);
const storeCalls = meter.createCounter("edgestream.store.calls", {
  description: "Calls to the stream store",
  unit: "{call}",
});
const storeDuration = secondsHistogram(
  "edgestream.store.duration",
  "Duration of calls to the stream store",
);
const windowsClosed = meter.createCounter("edgestream.windows.closed", {
  description: "Windows closed with their final values (once across instances)",
  unit: "{window}",
});
const alertsFired = meter.createCounter("edgestream.alerts.fired", {
  description: "Alerts fired (once per window and group across instances)",
  unit: "{alert}",
});
const webhookDeliveries = meter.createCounter("edgestream.webhook.deliveries", {
  description: "Webhook delivery attempts, by outcome",
  unit: "{attempt}",
});
const webhookDeliveryDuration = secondsHistogram(
  "edgestream.webhook.delivery.duration",
  "Duration of webhook delivery attempts",
);
const logTrimmed = meter.createCounter("edgestream.log.trimmed", {
  description:
    "Results a stream's result log trimmed at its hard bound before they were dispatched to webhooks",
  unit: "{result}",
});
const webhookUnstorable = meter.createCounter("edgestream.webhook.unstorable", {
  description:
    "Webhook deliveries dropped at dispatch as larger than the store takes in one call, by stream",
  unit: "{delivery}",
});
const liveSubscribers = meter.createUpDownCounter("edgestream.live.subscribers", {
  description: "Live subscribers connected to this instance",
  unit: "{subscriber}",
});

const liveRefused = meter.createCounter("edgestream.live.refused", {
  description: "Live subscriptions refused by a bound: a key's (429) or this instance's (503)",
  unit: "{subscription}",
});

const ingestSocketsRefused = meter.createCounter("edgestream.ingest.sockets.refused", {
  description:
    "WebSocket ingest connections refused by a bound: a key's (429) or this instance's (503)",
  unit: "{connection}",
});

const storedRefused = meter.createCounter("edgestream.stored.refused", {
  description:
    "Creations refused by a deployment's bound (409): run-time API keys, webhook endpoints, API streams",
  unit: "{creation}",
});

/** Attributes of the ingest instruments. */
export interface IngestAttributes {
  /** Name of a served stream. */
  stream: string;
  /** How the request arrived. */
  transport: IngestTransport;
}

/** The event counts of one answered ingest request. */
export interface IngestCounts {
  /** Events acknowledged (the reply's `accepted`: applied, duplicates, late and filtered). */
  accepted: number;
  /** Of those, duplicates. */
  duplicates: number;
  /** Of those, late events. */
  late: number;
  /** Of those, events a filter dropped. */
  filtered: number;
  /** Events refused. */
  rejected: number;
}

/**
 * Counts the events of one answered ingest request in `edgestream.events`.
 * Outcomes do not overlap, so their sum is the events received: `accepted`
 * counts the events applied to the counters (the reply's `accepted` minus
 * its duplicates, late and filtered events).
 *
 * @example
 * ```ts
 * import { recordEvents } from "./metrics.ts";
 *
 * const counts = { accepted: 3, duplicates: 1, late: 0, filtered: 0, rejected: 1 };
 * recordEvents(counts, { stream: "orders", transport: "http" });
 * ```
 */
export function recordEvents(counts: IngestCounts, attributes: IngestAttributes): void {
  if (!metered) return;
  // Outcome by outcome rather than a list of them: this runs for every ingest request.
  const applied = counts.accepted - counts.duplicates - counts.late - counts.filtered;
  countEvents(applied, "accepted", attributes);
  countEvents(counts.duplicates, "duplicate", attributes);
  countEvents(counts.late, "late", attributes);
  countEvents(counts.filtered, "filtered", attributes);
  countEvents(counts.rejected, "rejected", attributes);
}

function countEvents(count: number, outcome: EventOutcomeName, attributes: IngestAttributes): void {
  if (count > 0) {
    events.add(count, { stream: attributes.stream, outcome, transport: attributes.transport });
  }
}

/** Records how long (seconds) one ingest request or frame took to answer. */
export function recordIngestDuration(seconds: number, attributes: IngestAttributes): void {
  if (!metered) return;
  ingestDuration.record(seconds, { stream: attributes.stream, transport: attributes.transport });
}

/** Attributes of the store instruments. */
export interface StoreCallAttributes {
  /** The `Store` method called (`applyBatch`, `readWindows`, …). */
  operation: string;
  /** How it ended. */
  result: StoreResult;
}

/** Records one call to the stream store and how long (seconds) it took. */
export function recordStoreCall(seconds: number, attributes: StoreCallAttributes): void {
  if (!metered) return;
  const { operation, result } = attributes;
  storeCalls.add(1, { operation, result });
  storeDuration.record(seconds, { operation, result });
}

/** Counts `count` windows of one counter that closed. */
export function recordWindowsClosed(
  count: number,
  attributes: { stream: string; counter: string },
): void {
  if (count > 0) {
    windowsClosed.add(count, { stream: attributes.stream, counter: attributes.counter });
  }
}

/** Counts `count` firings of one alert. */
export function recordAlertsFired(
  count: number,
  attributes: { stream: string; alert: string },
): void {
  if (count > 0) alertsFired.add(count, { stream: attributes.stream, alert: attributes.alert });
}

/** Records one webhook delivery attempt and how long (seconds) it took. */
export function recordWebhookDelivery(outcome: DeliveryOutcome, seconds: number): void {
  webhookDeliveries.add(1, { outcome });
  webhookDeliveryDuration.record(seconds, { outcome });
}

/** Counts a live subscription refused by the bound of its key (`key`) or of the process (`process`). */
export function recordLiveRefused(limit: "key" | "process"): void {
  liveRefused.add(1, { limit });
}

/**
 * Counts a WebSocket ingest connection refused by the bound of its key (`key`) or of the process
 * (`process`).
 */
export function recordIngestSocketRefused(limit: "key" | "process"): void {
  ingestSocketsRefused.add(1, { limit });
}

/**
 * Counts a creation refused by the deployment's bound of its kind: `keys` (run-time API keys),
 * `webhooks` (endpoints) or `streams` (created through the API).
 */
export function recordStoredRefused(kind: "keys" | "webhooks" | "streams"): void {
  storedRefused.add(1, { kind });
}

/** Counts a webhook delivery of `stream` dropped at dispatch as too large for one store call. */
export function recordWebhookUnstorable(stream: string): void {
  if (!metered) return;
  webhookUnstorable.add(1, { stream });
}

/** Adds `delta` (1 on subscribe, -1 on leave) to the live subscribers of a transport. */
export function recordLiveSubscribers(transport: LiveTransport, delta: number): void {
  liveSubscribers.add(delta, { transport });
}

/** Counts results a stream's result log trimmed at its hard bound before webhook dispatch. */
export function recordLogTrimmed(stream: string, count: number): void {
  if (!metered || count <= 0) return;
  logTrimmed.add(count, { stream });
}
