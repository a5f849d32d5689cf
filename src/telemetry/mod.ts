/**
 * Telemetry: OpenTelemetry metrics and traces through `@opentelemetry/api`,
 * which Deno connects to its built-in exporter when `OTEL_DENO=true` (no SDK
 * is bundled; without it every instrument is a no-op). The stages record
 * through the functions of `metrics.ts` and `tracing.ts`; the wiring wraps
 * the store in an {@linkcode InstrumentedStore} and, where the sweep runs,
 * reports the webhook backlog with {@linkcode WebhookBacklogGauges}.
 *
 * @example
 * ```ts
 * import { MemoryStore } from "../store/mod.ts";
 * import { InstrumentedStore, recordWindowsClosed } from "./mod.ts";
 *
 * const store = new InstrumentedStore(new MemoryStore());
 * recordWindowsClosed(1, { stream: "orders", counter: "per_minute" });
 * await store.ping();
 * ```
 *
 * @module
 */
export * from "./metrics.ts";
export * from "./tracing.ts";
export * from "./store.ts";
export * from "./backlog.ts";
export * from "./warning_limit.ts";
export * from "./outage_log.ts";
export * from "./clock.ts";
