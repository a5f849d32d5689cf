/**
 * Spans: one `edgestream.ingest` span per ingest request (an HTTP request or
 * a WebSocket frame) and, beneath it, one `edgestream.store.applyBatch` span
 * per store apply (made by the instrumented store, `store.ts`). Deno traces
 * `Deno.serve` and `fetch` itself and carries the active span across `await`,
 * so an HTTP ingest span sits under Deno's request span and the Upstash
 * `fetch` of the Redis store under the apply span.
 *
 * One apply may serve several requests (a store batch carries `requests`;
 * group commit merges concurrent requests into one batch). Each request
 * is tied to its own ingest span with {@linkcode attachIngestSpan} when it is
 * built, in that span's context; the apply span is a child of the span it
 * runs in and links to the ingest span of every other request it carries, so
 * each request's trace reaches the apply that served it.
 *
 * @module
 */
import { getConfig } from "@logtape/logtape";
import { AsyncLocalStorage } from "node:async_hooks";
import {
  context,
  type Link,
  propagation,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import {
  type IngestAttributes,
  type IngestCounts,
  metering,
  recordEvents,
  recordIngestDuration,
  SCOPE_NAME,
  SCOPE_VERSION,
} from "./metrics.ts";

const tracer = trace.getTracer(SCOPE_NAME, SCOPE_VERSION);

/** What the API's tracer provider hands over to while no provider is registered. */
const NO_PROVIDER = new ProxyTracerProvider().getDelegate();

/**
 * Whether a tracer provider is registered (Deno registers one with `OTEL_DENO=true`). Without
 * one, every span is a no-op that still costs its span, context and closures on every request.
 */
export function tracing(): boolean {
  const provider = trace.getTracerProvider();
  const delegate = provider instanceof ProxyTracerProvider ? provider.getDelegate() : provider;
  return delegate !== NO_PROVIDER;
}

/**
 * Runs `run` without the W3C `baggage` a request brought (Deno's server reads it from the
 * request): what a caller sends, unsigned, is not passed on to the store and webhook receivers
 * by Deno's `fetch`, which sends the active context's baggage along. The trace itself stays.
 */
export function withoutInboundBaggage<T>(run: () => T): T {
  if (!tracing()) return run();
  const active = context.active();
  if (propagation.getBaggage(active) === undefined) return run();
  return context.with(propagation.deleteBaggage(active), run);
}

/**
 * Runs `run` outside the active trace and the request's log context: background work it starts
 * (timers, webhook sends, alert evaluation after an ingest) starts traces of its own instead of
 * growing the request's after it was answered, carries none of its context to the hosts it
 * calls, and logs without the request's `requestId` (a timer started here serves the batches of
 * later requests too, and its failures are no part of a request answered already).
 *
 * With LogTape's `AsyncLocalStorage`, `run` runs in the async context of this module's loading:
 * that resets every `AsyncLocalStorage` (every async context), not only LogTape's, so a
 * per-request context added later (in any storage) does not reach the work run here either.
 */
export function detached<T>(run: () => T): T {
  const logContext = getConfig()?.contextLocalStorage;
  const outsideRequest = logContext?.getStore() === undefined
    ? run
    : loadedOutside(logContext)
    ? () => loadContext(run)
    : () => logContext.run({}, run);
  if (!tracing()) return outsideRequest();
  return context.with(ROOT_CONTEXT, outsideRequest);
}

/**
 * The async context of this module's loading, before any request: a function running another
 * in it. Entering it sets the context saved here back, where `run({}, …)` copies the request's
 * context with one more entry (twice the cost, more with more of them, on every ingest).
 */
const loadContext = AsyncLocalStorage.snapshot();

/** LogTape's log context storage (ours is an `AsyncLocalStorage`; another may not be one). */
type LogContextStorage = { getStore(): unknown };

/** The log context storage {@linkcode loadContext} was checked against, and its verdict. */
let checked: { storage: LogContextStorage; outside: boolean } | undefined;

/**
 * Whether `storage` holds nothing in {@linkcode loadContext}, so that running there is running
 * outside every request: false for a storage that is no `AsyncLocalStorage` (called from a
 * request, which it holds) or when this module was loaded inside a log context.
 */
function loadedOutside(storage: LogContextStorage): boolean {
  if (checked?.storage !== storage) {
    checked = { storage, outside: loadContext(() => storage.getStore()) === undefined };
  }
  return checked.outside;
}

/**
 * The active trace context, kept for work run later on its behalf from another context (a
 * grouped store apply, run when the apply before it ends): call the answer with that work.
 */
export function keepTraceContext(): <T>(run: () => T) => T {
  if (!tracing()) return runAsIs;
  const kept = context.active();
  return (run) => context.with(kept, run);
}

function runAsIs<T>(run: () => T): T {
  return run();
}

/** Options for {@linkcode traceIngest}. */
export interface IngestSpanOptions {
  /** Start a trace of its own rather than a child of the active span. @default {false} */
  root?: boolean;
  /** Links to other spans (a WebSocket frame's to its upgrade request's). @default {none} */
  links?: Link[];
}

/** A link to the active span when it records (else none): for work that gets a trace of its own. */
export function activeSpanLinks(): Link[] {
  const span = trace.getActiveSpan();
  return span && span.isRecording() ? [{ context: span.spanContext() }] : [];
}

/** What an ingest request's code tells its span. */
export interface IngestScope {
  /**
   * The request was answered with these counts: they go on the span and,
   * unless the reply is a replay (nothing was applied now), into
   * `edgestream.events`.
   */
  answered(reply: IngestCounts & { replayed?: boolean }): void;
  /** The request failed with `error`, turned into an answer rather than thrown. */
  failed(error: unknown): void;
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** Marks a span as failed by `error`. */
function fail(span: Span, error: unknown): void {
  if (error instanceof Error) span.recordException(error);
  span.setStatus({ code: SpanStatusCode.ERROR, message: describe(error) });
}

/**
 * Runs one ingest request (or WebSocket frame) inside its span
 * `edgestream.ingest`, the active span while `run` runs, and records its
 * duration in `edgestream.ingest.duration`. A thrown error marks the span
 * failed and is rethrown.
 *
 * @example
 * ```ts
 * import { traceIngest } from "./tracing.ts";
 *
 * const reply = await traceIngest({ stream: "orders", transport: "http" }, async (scope) => {
 *   const reply = { accepted: 1, duplicates: 0, late: 0, filtered: 0, rejected: 0 };
 *   scope.answered(reply);
 *   return reply;
 * });
 * ```
 */
export function traceIngest<T>(
  attributes: IngestAttributes,
  run: (scope: IngestScope) => Promise<T>,
  options: IngestSpanOptions = {},
): Promise<T> {
  // Neither a tracer nor a meter (no OTEL_DENO): nothing to record, no frame of its own.
  if (!metering() && !tracing()) return run(UNRECORDED);
  const started = performance.now();
  if (!tracing()) return untracedIngest(attributes, run, started);
  const spanOptions = {
    attributes: {
      "edgestream.stream": attributes.stream,
      "edgestream.transport": attributes.transport,
    },
    links: options.links,
  };
  const parent = options.root ? ROOT_CONTEXT : context.active();
  return tracer.startActiveSpan("edgestream.ingest", spanOptions, parent, async (span) => {
    const scope: IngestScope = {
      answered(reply) {
        // Without a tracer (no OTEL_DENO) the span records nothing: no attributes to build.
        if (span.isRecording()) {
          span.setAttributes({
            "edgestream.events.accepted": reply.accepted,
            "edgestream.events.duplicates": reply.duplicates,
            "edgestream.events.late": reply.late,
            "edgestream.events.filtered": reply.filtered,
            "edgestream.events.rejected": reply.rejected,
            "edgestream.replayed": reply.replayed === true,
          });
        }
        if (!reply.replayed) recordEvents(reply, attributes);
      },
      failed(error) {
        fail(span, error);
      },
    };
    try {
      return await run(scope);
    } catch (error) {
      fail(span, error);
      throw error;
    } finally {
      span.end();
      recordIngestDuration((performance.now() - started) / 1000, attributes);
    }
  });
}

/** {@linkcode traceIngest} without a tracer: the metrics alone. */
async function untracedIngest<T>(
  attributes: IngestAttributes,
  run: (scope: IngestScope) => Promise<T>,
  started: number,
): Promise<T> {
  try {
    return await run(new MetricsScope(attributes));
  } finally {
    recordIngestDuration((performance.now() - started) / 1000, attributes);
  }
}

/** The scope of an ingest request with neither a span nor metrics. */
const UNRECORDED: IngestScope = { answered() {}, failed() {} };

/** The scope of an ingest request without a span: one object, no closures per request. */
class MetricsScope implements IngestScope {
  #attributes: IngestAttributes;

  constructor(attributes: IngestAttributes) {
    this.#attributes = attributes;
  }

  answered(reply: IngestCounts & { replayed?: boolean }): void {
    if (!reply.replayed) recordEvents(reply, this.#attributes);
  }

  failed(): void {}
}

/** The ingest span each store batch request was built in. */
const requestSpans = new WeakMap<object, SpanContext>();

/**
 * Ties a store batch request to the active ingest span. Call it where the
 * request is built, inside its {@linkcode traceIngest}: an apply that
 * carries the request then links to that span (see the module doc).
 */
export function attachIngestSpan(request: object): void {
  const span = trace.getActiveSpan();
  if (span && span.isRecording()) requestSpans.set(request, span.spanContext());
}

/**
 * Links to the ingest spans of `requests` other than the active span: the
 * links an apply serving them carries.
 */
export function requestLinks(requests: readonly object[] | undefined): Link[] {
  const active = trace.getActiveSpan()?.spanContext().spanId;
  const links: Link[] = [];
  const seen = new Set<string>();
  for (const request of requests ?? []) {
    const context = requestSpans.get(request);
    if (!context || context.spanId === active || seen.has(context.spanId)) continue;
    seen.add(context.spanId);
    links.push({ context });
  }
  return links;
}

/** Options for {@linkcode traceStoreCall}. */
export interface StoreSpanOptions {
  /** More span attributes. @default {none} */
  attributes?: Record<string, string | number>;
  /** Links to other spans (see {@linkcode requestLinks}). @default {none} */
  links?: Link[];
}

/**
 * Runs a store call inside a child span named `edgestream.store.<operation>`
 * with these attributes and links; a thrown error marks it failed.
 */
export function traceStoreCall<T>(
  operation: string,
  run: () => Promise<T>,
  options: StoreSpanOptions = {},
): Promise<T> {
  if (!tracing()) return run();
  return tracer.startActiveSpan(`edgestream.store.${operation}`, {
    attributes: { "edgestream.store.operation": operation, ...options.attributes },
    links: options.links,
  }, async (span) => {
    try {
      return await run();
    } catch (error) {
      fail(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}
