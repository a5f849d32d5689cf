/**
 * Wires the stages into one Hono app. The only module (with `main.ts`) that
 * knows the concrete pieces.
 *
 * @module
 */
import { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { CompiledStream } from "./config/mod.ts";
import { requireScope } from "./http/auth.ts";
import type { KeyRing } from "./http/auth.ts";
import { ApiError, errorResponse } from "./http/errors.ts";
import { findCounter, findStream } from "./http/lookup.ts";
import { type LiveRouteOptions, registerLiveRoutes } from "./http/live_routes.ts";
import { LiveHub } from "./fanout/live.ts";
import {
  currentWindowRoute,
  getStreamRoute,
  ingestRoute,
  listStreamsRoute,
  listWindowsRoute,
  readyRoute,
  sweepRoute,
} from "./http/routes.ts";
import {
  bodyFormat,
  type BodyLimits,
  decodeUtf8,
  DEFAULT_LIMITS,
  parseEvents,
  readLimitedBody,
} from "./http/body.ts";
import { ingestItems, type IngestOptions, type IngestReply } from "./ingest/mod.ts";
import { currentWindow, listWindows } from "./query/mod.ts";
import { type IngestObserver, type LogDemand, sweepOnce } from "./fanout/mod.ts";
import type { WebhookService } from "./fanout/webhooks/mod.ts";
import { registerWebhookRoutes } from "./http/webhook_routes.ts";
import { aggregateValue, decodeGroup } from "./window/mod.ts";
import type { Store, StreamStats } from "./store/types.ts";
import { StoreUnavailableError } from "./store/types.ts";

/** What {@linkcode createApp} wires together. */
export interface AppOptions {
  /** Compiled streams by name. */
  streams: Map<string, CompiledStream>;
  /** Where state lives. */
  store: Store;
  /** API keys; an empty ring means open development mode. */
  keys: KeyRing;
  /** Clock (ms). @default {Date.now} */
  now?: () => number;
  /** Body limits. @default {DEFAULT_LIMITS} */
  limits?: BodyLimits;
  /** Fan-out consumers that ask for events in the result log. */
  logDemand?: readonly LogDemand[];
  /** Told about every applied batch (live subscriptions). */
  observers?: readonly IngestObserver[];
  /** Live subscriptions; its observer and log demand are added. @default {a LiveHub, not shared} */
  live?: LiveHub;
  /** WebSocket ingest and subscription settings. */
  liveRoutes?: LiveRouteOptions;
  /** Webhook fan-out: its routes, log demand and observer are added, and the sweep runs it. */
  webhooks?: WebhookService;
}

/** Ingest options for a stream given what the fan-out consumers want. */
export function ingestOptionsFor(
  stream: string,
  demand: readonly LogDemand[],
  observers: readonly IngestObserver[],
): IngestOptions {
  const processed = demand.some((item) => item.wants(stream, "event.processed"));
  const late = demand.some((item) => item.wants(stream, "event.late"));
  return { log: processed || late ? { processed, late } : undefined, observers };
}

function parseTime(text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined;
  const ms = /^-?\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(ms)) {
    throw new ApiError(400, "invalid_query", `Query parameter '${name}' is not a time: ${text}`);
  }
  return ms;
}

function groupFilters(c: Context): Record<string, string> {
  const filters: Record<string, string> = {};
  for (const [key, values] of Object.entries(c.req.queries())) {
    if (key.startsWith("group.") && key.length > 6) {
      filters[key.slice(6)] = values[values.length - 1];
    }
  }
  return filters;
}

function statsJson(stats: StreamStats) {
  return {
    ...stats,
    watermark: stats.watermark === null ? null : new Date(stats.watermark).toISOString(),
  };
}

/**
 * Builds the HTTP app.
 *
 * @example
 * ```ts
 * const app = createApp({ streams, store: new MemoryStore(), keys: await KeyRing.parse("") });
 * const res = await app.request("/v1/streams/orders/events", {
 *   method: "POST",
 *   headers: { "Content-Type": "application/json" },
 *   body: JSON.stringify({ amount: 5 }),
 * });
 * ```
 */
export function createApp(options: AppOptions): OpenAPIHono {
  const { streams, store, keys } = options;
  const now = options.now ?? Date.now;
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const live = options.live ?? new LiveHub(streams, store);
  const logDemand = [...(options.logDemand ?? []), live];
  const observers = [...(options.observers ?? []), live.observer];
  if (options.webhooks) {
    logDemand.push(options.webhooks);
    observers.push(options.webhooks.observer);
  }

  const app = new OpenAPIHono({
    defaultHook(result) {
      if (!result.success) {
        const issue = result.error.issues[0];
        throw new ApiError(
          400,
          "invalid_request",
          `Invalid ${result.target} ${issue.path.join(".")}: ${issue.message}`.replace(/\s+:/, ":"),
        );
      }
    },
  });
  app.onError(errorResponse);
  app.notFound((c) =>
    c.json(
      { error: { code: "not_found", message: `No route for ${c.req.method} ${c.req.path}` } },
      404,
    )
  );

  const ingestScope = requireScope(keys, "ingest");
  const readScope = requireScope(keys, "read");

  app.get("/healthz", (c) => c.json({ status: "ok" }));

  app.openapi(readyRoute, async (c) => {
    try {
      await store.ping();
      return c.json({ status: "ready", store: store.kind }, 200);
    } catch (error) {
      const message = error instanceof StoreUnavailableError ? error.message : String(error);
      return c.json({ status: "unavailable", store: store.kind, error: message }, 503);
    }
  });

  // The hot path: documented from its schemas like every route, but served by
  // a plain handler. Its body is read by hand (limits, UTF-8, NDJSON) and an
  // unknown stream name is a 404 either way, so the async zod validation of
  // the path would only add cost to every ingest request.
  app.openAPIRegistry.registerPath(ingestRoute);
  app.post(ingestRoute.getRoutingPath(), ingestScope, async (c) => {
    const stream = findStream(streams, c.req.param("stream"));
    const format = bodyFormat(c.req.header("Content-Type"));
    const bytes = await readLimitedBody(c.req.raw, limits.maxBodyBytes);
    const items = parseEvents(decodeUtf8(bytes), format, limits);
    const reply: IngestReply = await ingestItems(
      stream,
      items,
      store,
      now(),
      ingestOptionsFor(stream.name, logDemand, observers),
    );
    if (reply.accepted === 0) {
      throw new ApiError(400, "no_events_accepted", "No event was accepted; see 'rejected'", {
        extra: { ...reply },
      });
    }
    return c.json(reply, 202);
  });

  app.use("/v1/streams", readScope);
  app.use("/v1/streams/:stream", readScope);
  app.use("/v1/streams/:stream/counters/*", readScope);

  app.openapi(listStreamsRoute, async (c) => {
    const list = await Promise.all([...streams.values()].map(async (stream) => ({
      name: stream.name,
      description: stream.parsed.description,
      definition: stream.definition,
      counters: stream.counters.map((counter) => counter.name),
      stats: statsJson(await store.stats(stream.name, stream.counterMetas)),
    })));
    return c.json({ streams: list }, 200);
  });

  app.openapi(getStreamRoute, async (c) => {
    const stream = findStream(streams, c.req.valid("param").stream);
    return c.json({
      name: stream.name,
      description: stream.parsed.description,
      definition: stream.definition,
      counters: stream.counters.map((counter) => counter.name),
      stats: statsJson(await store.stats(stream.name, stream.counterMetas)),
    }, 200);
  });

  app.openapi(listWindowsRoute, async (c) => {
    const params = c.req.valid("param");
    const query = c.req.valid("query");
    const stream = findStream(streams, params.stream);
    const counter = findCounter(stream, params.counter);
    const windows = await listWindows(stream, counter, { store, nowMs: now() }, {
      fromMs: parseTime(query.from, "from"),
      toMs: parseTime(query.to, "to"),
      limit: query.limit,
      groups: groupFilters(c),
    });
    return c.json({
      stream: stream.name,
      counter: counter.name,
      aggregate: counter.aggregate.kind,
      windows,
    }, 200);
  });

  app.openapi(currentWindowRoute, async (c) => {
    const params = c.req.valid("param");
    const stream = findStream(streams, params.stream);
    const counter = findCounter(stream, params.counter);
    const current = await currentWindow(stream, counter, { store, nowMs: now() }, groupFilters(c));
    return c.json({
      stream: stream.name,
      counter: counter.name,
      aggregate: counter.aggregate.kind,
      start: current.start,
      end: current.end,
      windows: current.rows,
    }, 200);
  });

  app.use("/v1/admin/*", requireScope(keys, "admin"));
  app.openapi(sweepRoute, async (c) => {
    const report = await sweepOnce(streams.values(), store, {
      consumers: options.webhooks ? [options.webhooks] : [],
    });
    return c.json({
      closed: report.closed.map((window) => {
        const counter = findCounter(findStream(streams, window.stream), window.counter);
        return {
          stream: window.stream,
          counter: window.counter,
          start: new Date(window.start).toISOString(),
          end: new Date(window.end).toISOString(),
          groups: window.groups.map((item) => ({
            group: decodeGroup(counter.groupBy, item.group),
            value: aggregateValue(counter.aggregate, item.state),
          })),
        };
      }),
      fired: report.fired.map((firing) => {
        const counter = findCounter(findStream(streams, firing.stream), firing.counter);
        return {
          stream: firing.stream,
          alert: firing.alert,
          counter: firing.counter,
          start: new Date(firing.start).toISOString(),
          end: new Date(firing.end).toISOString(),
          group: decodeGroup(counter.groupBy, firing.group),
          value: firing.value,
        };
      }),
    }, 200);
  });

  if (options.webhooks) registerWebhookRoutes(app, { webhooks: options.webhooks, keys, now });

  registerLiveRoutes(app, {
    streams,
    store,
    keys,
    now,
    limits,
    live,
    ingestOptions: (name) => ingestOptionsFor(name, logDemand, observers),
    options: options.liveRoutes,
  });

  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "edgestream",
      version: "0.1.0",
      description: "Real-time event stream processor: ingest, windowed counters, fan-out.",
    },
    security: [{ bearer: [] }],
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
  });

  return app;
}
