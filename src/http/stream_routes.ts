/**
 * The stream routes: ingest (`POST /v1/streams/{stream}/events`), streams and
 * their stats, counter windows, the admin sweep, and readiness. Each route's
 * zod definition is followed by its handler; `/openapi.json` is generated
 * from the definitions.
 *
 * @module
 */
import { createRoute, type OpenAPIHono, type RouteHandler, z } from "@hono/zod-openapi";
import { type Context, Hono } from "hono";
import {
  type CompiledStream,
  lookUpStream,
  type StreamCatalog,
  streamDefinitionSchema,
  watermarkAt,
} from "../config/mod.ts";
import type { SweepConsumer } from "../fanout/mod.ts";
import { logSweepError, sweepOnce } from "../fanout/mod.ts";
import {
  idempotencyKeyProblem,
  type IngestContext,
  ingestCountsOf,
  ingestItems,
  type IngestReply,
  MAX_EVENT_ERRORS,
  MAX_STORED_REJECTED_CHARS,
} from "../ingest/mod.ts";
import {
  compactPosition,
  currentWindow,
  currentWindowPage,
  isCompactedStart,
  listTopWindows,
  listWindows,
  listWindowsPage,
  type RowPosition,
} from "../query/mod.ts";
import {
  compareGroupKeys,
  cursorOfText,
  cursorRefused,
  InvalidCursorError,
  type Store,
  StoreUnavailableError,
  StreamChangedError,
  type StreamStats,
  textOfCursor,
} from "../store/mod.ts";
import { traceIngest, withinPeriod } from "../telemetry/mod.ts";
import { parseInstantText, unreadIsoForm } from "../validate/mod.ts";
import {
  aggregateValue,
  assignWindows,
  type CompiledCounter,
  decodeGroup,
  groupKey,
  partialWindow,
  quantileName,
} from "../window/mod.ts";
import {
  countQuery,
  CursorQuery,
  ErrorSchema,
  errorsFor,
  headersOf,
  nameText,
  NextCursor,
} from "./_openapi.ts";
import {
  grantOfRequest,
  type KeyGrant,
  type KeyRing,
  listedTo,
  rememberGrant,
  requireScope,
  requireScopeForOtherMethods,
} from "./auth.ts";
import {
  type BodyLimits,
  decodeUtf8,
  isEnvelopeBody,
  noBody,
  parseEvents,
  readLimitedBody,
} from "./body.ts";
import {
  addIngestCorsHeaders,
  ingestBodyFormat,
  ingestCors,
  ingestGrant,
  isIngestRequest,
  rateLimitsFor,
  requireIngestKey,
} from "./browser.ts";
import {
  ApiError,
  type ErrorCode,
  errorResponse,
  noEventsAccepted,
  STORE_RETRY_AFTER_SECONDS,
  streamMissing,
  toApiError,
  unservableProblem,
} from "./errors.ts";
import { guardOrigin, type OriginPolicy } from "./origin.ts";
import { groupFilterField, groupFilterParameter, refuseRepeatedQuery } from "./query.ts";
import { jsonWithRequestId, madeJsonWithRequestId, requestIdOf } from "./request_id.ts";
import { annotateRequest, logRequest, type RequestLogOptions } from "./request_log.ts";
import { causeText, listNames, quoteInput } from "../telemetry/logging.ts";

/** What the stream routes need. */
export interface StreamRouteDeps {
  /**
   * Compiled streams by name (a `StreamRegistry` also finds streams created meanwhile), and those
   * stored that this instance cannot serve, when it reports them.
   */
  streams: StreamCatalog;
  /** Where state lives. */
  store: Store;
  /** API keys; an empty ring means open development mode. */
  keys: KeyRing;
  /** Clock (ms). */
  now: () => number;
  /** Body limits. */
  limits: Required<BodyLimits>;
  /** Ingest options for a stream (what the fan-out consumers want logged, observers). */
  ingestOptions: (stream: string) => IngestContext;
  /**
   * Run by the admin sweep after windows are closed: the webhook service,
   * whose queued deliveries the reply reports as `webhooks.queued`, and a stream's dispatch that
   * failed (`error`) as `webhooks.error`.
   */
  sweepConsumers: readonly SweepConsumer<{ queued: number; error?: unknown }>[];
  /**
   * Whether this instance began to stop: `/readyz` then answers 503 so that a load balancer
   * sends the rest of its traffic elsewhere while the stop finishes what it holds.
   * @default {never}
   */
  stopping?: () => boolean;
  /**
   * Whether this instance is still starting (loading its webhook endpoints, which requests other
   * than `/healthz` and `/readyz` wait for): `/readyz` then answers 503 `starting`.
   * @default {never}
   */
  starting?: () => boolean;
}

/** The stream called `name`, or 404 `stream_not_found`. */
export function findStream(
  streams: ReadonlyMap<string, CompiledStream>,
  name: string,
): CompiledStream {
  const stream = streams.get(name);
  if (!stream) throw streamMissing(streams, name);
  return stream;
}

/** Options for {@linkcode findServedStream}. */
export interface FindServedStreamOptions {
  /**
   * The caller's key: the 404 of a misspelled `name` names the stream meant if `GET /v1/streams`
   * shows it to this key. @default {none is named}
   */
  grant?: KeyGrant;
}

/**
 * As {@linkcode findStream}, looking an unknown name up in the store (streams created at run time).
 * Its 404 names the stream meant by a misspelled `name` to a `grant` shown it by `GET /v1/streams`.
 */
export async function findServedStream(
  streams: ReadonlyMap<string, CompiledStream>,
  name: string,
  options: FindServedStreamOptions = {},
): Promise<CompiledStream> {
  const { grant } = options;
  const stream = streams.get(name) ?? await lookUpStream(streams, name);
  if (!stream) throw streamMissing(streams, name, { listed: listedTo(grant) });
  return stream;
}

/** Where the counter name came from: the path (404) or a query parameter (400). */
export type CounterSource = "path" | "query";

/** The counter called `name`, or an error that lists the stream's counters. */
export function findCounter(
  stream: CompiledStream,
  name: string,
  source: CounterSource = "path",
): CompiledCounter {
  const counter = stream.counters.find((item) => item.name === name);
  if (counter) return counter;
  const message = `Stream '${stream.name}' has no counter '${quoteInput(name)}'; it has: ${
    listNames(stream.counters.map((item) => item.name)) || "(none)"
  }`;
  throw source === "path"
    ? new ApiError(404, "counter_not_found", message)
    : new ApiError(400, "invalid_query", message);
}

const FieldErrorSchema = z.object({ path: z.string(), message: z.string() });
const RejectedSchema = z.array(z.object({
  index: z.int().openapi({ description: "The event's place among the request's events, from 0" }),
  line: z.int().optional().openapi({
    description:
      "Only for an NDJSON body: the event's line in it, from 1, blank lines counted (which `index` skips)",
  }),
  errors: z.array(FieldErrorSchema).max(MAX_EVENT_ERRORS + 1).openapi({
    description:
      `At most the first ${MAX_EVENT_ERRORS} errors; an event with more has one more entry, \`{"path": "", "message": "and N more errors not listed"}\``,
  }),
}));

/** Reply to an ingest request. */
const IngestReplySchema = z.object({
  accepted: z.int().openapi({
    description: "Events acknowledged (incl. duplicates, late, filtered)",
  }),
  duplicates: z.int(),
  late: z.int(),
  filtered: z.int(),
  rejected: RejectedSchema,
  rejectedOmitted: z.int().optional().openapi({
    description:
      `Only on a replay whose \`rejected\` was shortened when stored (it lists the first rejected events, as many as fit in ${MAX_STORED_REJECTED_CHARS} characters of JSON, the first always): how many it leaves out`,
  }),
  replayed: z.literal(true).optional().openapi({
    description:
      "Only on the stored reply to an earlier request with the same `Idempotency-Key` and body (header `Idempotent-Replayed: true`): nothing was applied again",
  }),
}).openapi("IngestReply");

/**
 * The ingest route's 400: an error, and for `no_events_accepted` (every event refused) the
 * reply's counts with each event's reasons in `rejected`.
 */
const IngestRefusedSchema = z.object({
  error: ErrorSchema.shape.error,
  accepted: z.int().optional().openapi({ description: "With `no_events_accepted`: 0" }),
  duplicates: z.int().optional(),
  late: z.int().optional(),
  filtered: z.int().optional(),
  rejected: RejectedSchema.optional().openapi({
    description: "With `no_events_accepted`: why each event was refused",
  }),
}).openapi("IngestRefused");

const StreamParams = z.object({
  stream: nameText.openapi({
    param: { name: "stream", in: "path" },
    example: "orders",
  }),
});

const CounterParams = StreamParams.extend({
  counter: nameText.openapi({
    param: { name: "counter", in: "path" },
    example: "orders_per_minute",
  }),
});

const StatsSchema = z.object({
  watermark: z.string().nullable(),
  accepted: z.int(),
  applied: z.int(),
  duplicates: z.int(),
  late: z.int(),
  filtered: z.int(),
  rejected: z.int().openapi({
    description:
      "Events refused (schema, time, transform errors), those of a 400 no_events_accepted too; an Idempotency-Key replay counts none",
  }),
  overflow: z.record(z.string(), z.int()),
  dedupeForgotten: z.int().openapi({
    description: "Dedupe ids the memory store forgot before their TTL (its maxDedupeIds bound)",
  }),
  repliesForgotten: z.int().openapi({
    description:
      "Idempotency-Key replies the store forgot before their idempotencyTtl (its 128 MiB a stream bound): a request sent again with one applies again",
  }),
}).openapi("StreamStats");

/**
 * A stream definition as `PUT /v1/streams/{stream}` takes it (and a config file's
 * `streams.<name>`), in JSON Schema made from the zod schema that checks it, so the two cannot
 * drift: durations are text (`"30s"`); the checks a schema cannot state (CEL expressions, field
 * paths, a `groupBy` field named twice) are the server's `400 invalid_definition`.
 */
const { $schema: _dialect, ...definitionJsonSchema } = z.toJSONSchema(streamDefinitionSchema, {
  io: "input",
  unrepresentable: "any",
});
export const StreamDefinitionSchema = z.unknown().openapi("StreamDefinition", {
  ...definitionJsonSchema,
  description:
    "A stream definition, as a config file's `streams.<name>` holds it (README, Configuration)",
  example: {
    counters: {
      per_minute: { window: { tumbling: "1m" }, groupBy: ["plan"], aggregate: "count" },
    },
  },
} as Record<string, unknown>);

/** A stream as listed. */
export const StreamSchema = z.object({
  name: z.string(),
  description: z.string().optional(),
  source: z.enum(["config", "api"]).openapi({
    description:
      "`config`: from the config file (read-only through the API); `api`: created with `PUT /v1/streams/{stream}`",
  }),
  version: z.int().openapi({
    description:
      "Rises on every change of the stream's stored definition; 0 for a config stream not recorded in the store",
  }),
  servable: z.literal(true).openapi({
    description: "This instance serves the stream (see `UnservableStream` for one it does not)",
  }),
  definition: StreamDefinitionSchema,
  counters: z.array(z.string()),
  stats: StatsSchema,
}).openapi("Stream");

/**
 * A stream stored through the API whose stored definition this release cannot compile, as
 * `GET /v1/streams` lists it: its definition, counters and stats cannot be read, so it has only
 * what the store's record says, and why it is not served.
 */
export const UnservableStreamSchema = z.object({
  name: z.string(),
  source: z.literal("api"),
  version: z.int().openapi({ description: "The stored definition's version" }),
  servable: z.literal(false).openapi({
    description:
      "Not served by this instance: its ingest, reads and subscriptions answer `409 stream_not_servable`; replace it with `PUT /v1/streams/{stream}` or delete it",
  }),
  problem: z.string().openapi({
    description: "Why it is not served, as its `409 stream_not_servable` says",
  }),
}).openapi("UnservableStream");

/** A counter's value: a number, null, or a quantiles counter's summary object. */
export const CounterValueSchema = z.union([
  z.number(),
  z.record(z.string(), z.union([z.number(), z.boolean(), z.null()])).openapi({
    description:
      "A quantiles counter: `count`, exact `min` and `max`, one estimate per quantile (`p50`, `p90`, `p95`, `p99` or those of `q`), and `approximate: true`",
  }),
]).nullable().openapi("CounterValue");

/** What `partial` on a window says. */
const PARTIAL_DESCRIPTION =
  "Present and true when the window misses events: its counter was added to the stream (or added back) once events had been applied, and the window (a session: the session, or the gap before it) starts before the stream's watermark then. Absent otherwise";

const WindowRowSchema = z.object({
  start: z.string(),
  end: z.string(),
  group: z.record(z.string(), z.unknown()),
  value: CounterValueSchema,
  final: z.boolean(),
  approximate: z.boolean().optional(),
  partial: z.boolean().optional().openapi({ description: PARTIAL_DESCRIPTION }),
}).openapi("WindowRow");

// Read by the handler (parseTime), which gives each bad time one message: a pattern here would word
// a time it does not match otherwise than one it matches that is no time (`2026-02-30`).
const TimeParam = z.string().optional();

/** JSON Schema of an ingest body, for the document only: bodies are read by hand to enforce limits. */
const ingestBodyDoc = {
  example: [
    { id: "o-1", country: "DE", amount: 12.5, customer: "c-1" },
    { id: "o-2", country: "FR", amount: 150, customer: "c-2" },
  ],
  // Any fields (the stream's own schema checks them): said outright, as generators read a bare
  // object as one with no fields.
  oneOf: [
    { type: "object" as const, additionalProperties: true, description: "One event" },
    {
      type: "array" as const,
      items: { type: "object" as const, additionalProperties: true },
      maxItems: 1000,
      description: "A batch",
    },
  ],
};

/** `POST /v1/streams/{stream}/events`. */
const ingestRoute = createRoute({
  method: "post",
  path: "/v1/streams/{stream}/events",
  operationId: "ingestEvents",
  tags: ["ingest"],
  summary: "Send events",
  description:
    "One event object, an array of up to 1000 events, or NDJSON (one event per line). The reply is sent after the store applied the batch. With an `Idempotency-Key`, the same key and body within the stream's `idempotencyTtl` (24 h by default) get the first reply again (header `Idempotent-Replayed: true`) and apply nothing. Over the stream's `limits` or the key's `rateLimit`: 429 `rate_limited`, nothing applied, with `Retry-After`, `RateLimit-Policy` and `RateLimit` (and `error.details.retryAfterMs`: the wait in whole ms, rounded up). A publishable key (`pk_…`) may come as `?key=` and its body as `text/plain` holding JSON (beacons); pages on the key's `origins` (or the stream's) get CORS headers; a preflight (`OPTIONS`, keyless) grants any origin and answers alike whether the stream exists. Scope: ingest.",
  request: {
    params: StreamParams,
    query: z.object({
      key: z.string().optional().openapi({
        description:
          "A publishable key (`pk_…`) for clients that cannot set headers (`navigator.sendBeacon`); secret keys are refused here, and an `Authorization` header holding another key is 400 `invalid_request`",
      }),
      idempotencyKey: z.string().min(1).max(255).optional().openapi({
        description:
          "The `Idempotency-Key` for clients that cannot set headers (`navigator.sendBeacon`); sent with a header that differs, 400 `invalid_idempotency_key` (nothing applied)",
      }),
    }),
    headers: z.object({
      "idempotency-key": z.string().min(1).max(255).optional().openapi({
        description:
          "Makes a retry safe: 422 when reused with another body, 409 while the first is in progress",
        example: "order-batch-2026-01-01-0001",
      }),
    }),
    body: {
      required: true,
      content: {
        "application/json": { schema: ingestBodyDoc },
        // Examples of their own, of other ids than the JSON one's (the quick start dedupes by id):
        // "Try it out" would otherwise send the text "string".
        "application/x-ndjson": {
          schema: {
            type: "string" as const,
            example: '{"id":"o-3","country":"DE","amount":40,"customer":"c-3"}\n' +
              '{"id":"o-4","country":"IT","amount":7.5,"customer":"c-1"}\n',
          },
        },
        "application/ndjson": {
          schema: {
            type: "string" as const,
            example: '{"id":"o-5","country":"FR","amount":19,"customer":"c-2"}\n',
          },
        },
        "text/plain": {
          schema: {
            type: "string" as const,
            description:
              "JSON, as `navigator.sendBeacon` sends it: taken with a publishable key (`pk_…`, as `?key=`) from a page on one of the key's `origins`, or with no API keys configured (open mode) from any page the server answers. \"Try it out\" on `/docs` sends the docs page's origin, this server's, which the `POST /v1/keys` example's key (`https://shop.example`) does not list: it gets 403 `origin_not_allowed` unless the key lists this server's origin too.",
            example: '{"id":"o-6","country":"DE","amount":3.2,"customer":"c-4"}',
          },
        },
      },
    },
  },
  responses: {
    202: {
      description: "Accepted",
      headers: headersOf("Idempotent-Replayed"),
      content: { "application/json": { schema: IngestReplySchema } },
    },
    ...errorsFor(401, 403, 404, 408, 409, 413, 415, 422, 429, 503),
    400: {
      description:
        "Bad request; `no_events_accepted` when no event was accepted, with the reply's counts and `rejected`",
      content: { "application/json": { schema: IngestRefusedSchema } },
    },
  },
});

/**
 * What an ingest 400 adds when its body was one object shaped as the WebSocket envelope: HTTP took
 * it as one event (as it takes any object), so its `events` were never read as events.
 */
const ENVELOPE_HINT =
  " (the body is one object with 'events', which HTTP takes as one event: {\"events\": [...]} is the WebSocket envelope; send the events as a JSON array, or as NDJSON, one a line)";

// The hot path: documented from its schemas like every route, but served by a
// plain handler. Its body is read by hand (limits, UTF-8, NDJSON) and an
// unknown stream name is a 404 either way, so the async zod validation of the
// path would only add cost to every ingest request.
function ingest(deps: StreamRouteDeps, options: { unprepared?: boolean } = {}) {
  const bodyOptions = { timeoutMs: deps.limits.bodyTimeoutMs };
  // Without middleware around it (`ingestApp`) no header was prepared with `c.header` before the
  // reply: it is made without Hono's merge of them.
  const replyWithId = options.unprepared ? madeJsonWithRequestId : jsonWithRequestId;
  return async (c: Context) => {
    const name = c.req.param("stream") ?? "";
    const stream = deps.streams.get(name) ??
      await findServedStream(deps.streams, name, { grant: grantOfRequest(c) });
    // Whether the body is one object shaped as the WebSocket envelope (`{"events": [...]}`).
    let enveloped = false;
    const reply = await traceIngest({ stream: stream.name, transport: "http" }, async (scope) => {
      const grant = grantOfRequest(c);
      // Lower case: see the note in `_header_list.ts`.
      const format = ingestBodyFormat(c.req.header("content-type"), {
        grant,
        origin: c.req.header("origin"),
      });
      const bytes = await readLimitedBody(c.req.raw, deps.limits.maxBodyBytes, bodyOptions);
      const text = decodeUtf8(bytes);
      const items = parseEvents(text, format, deps.limits);
      // Read before the pipeline, whose transforms write into the events.
      enveloped = isEnvelopeBody(text, items);
      // A beacon cannot set headers: it may send the key as `?idempotencyKey=`.
      const key = idempotencyKeyOf(c);
      if (key !== undefined) {
        const problem = idempotencyKeyProblem(key);
        if (problem) {
          throw new ApiError(
            400,
            "invalid_idempotency_key",
            repeatedHeaderProblem(c, key) ?? problem,
          );
        }
      }
      const ingest = (target: CompiledStream, events: typeof items) =>
        ingestItems(target, events, {
          ...deps.ingestOptions(target.name),
          store: deps.store,
          nowMs: deps.now(),
          idempotency: key === undefined ? undefined : { key, body: bytes },
          rateLimits: rateLimitsFor(target, grant),
        });
      // A `try` rather than `.catch`, which makes one more promise and closure a request.
      let reply: IngestReply;
      try {
        reply = await ingest(stream, items);
      } catch (error) {
        if (!(error instanceof StreamChangedError)) throw error;
        // Deleted, created again or given new counters meanwhile, nothing applied: once more on
        // the stream served now (404 when deleted), from the body as it came: decoded again, so
        // that the text is not kept through every apply for this rare case.
        const current = await findServedStream(deps.streams, name, { grant });
        reply = await ingest(current, parseEvents(decodeUtf8(bytes), format, deps.limits));
      }
      // One object for the span and the log line.
      const counts = ingestCountsOf(reply);
      scope.answered(counts);
      annotateRequest(c, counts);
      return reply;
    });
    if (reply.replayed) c.header("Idempotent-Replayed", "true");
    if (reply.accepted === 0) {
      throw noEventsAccepted({ hint: enveloped ? ENVELOPE_HINT : "", extra: { ...reply } });
    }
    // A replay's header was set with `c.header`, which `c.json` adds.
    return reply.replayed ? c.json(reply, 202) : replyWithId(c, reply, 202);
  };
}

/** What an ingest request passes through before its route in the app's middleware chain. */
export interface IngestFront {
  /** The app's Origin policy (its `originGuard`). */
  origins: OriginPolicy;
  /** The app's request log options (its `requestLog`). */
  log?: RequestLogOptions;
}

/**
 * `POST /v1/streams/{stream}/events` for stream names of the ingest path (`isIngestRequest`)
 * answered by one handler instead of the app's middleware chain: the hot path, where the chain's
 * five async layers cost more than some of the steps they run. It runs the same steps in the same
 * order with the same functions — the request log (`logRequest`), the Origin policy
 * (`guardOrigin`, deferred for ingest), the key (`ingestGrant`), the route, the CORS headers
 * (`addIngestCorsHeaders`, by the stream as held then) — and turns an error into
 * its answer where the chain would (`errorResponse`, with `c.error` set for the log line); every
 * answer gets the CORS headers `addIngestCorsHeaders` decides, errors before the key too. The app sends these requests here (`app.ts`); a
 * test checks the chain still holds exactly these layers for them.
 */
export function ingestApp(deps: StreamRouteDeps, front: IngestFront): Hono {
  // Its steps set no header before the route's reply (CORS headers are added after it).
  const route = ingest(deps, { unprepared: true });
  const guard = { defer: isIngestRequest };
  async function steps(c: Context): Promise<void> {
    const origin = c.req.header("Origin");
    const name = c.req.param("stream") ?? "";
    try {
      guardOrigin(front.origins, c.req.raw, guard);
      refuseRepeatedQuery(c.req.url);
      rememberGrant(c, await ingestGrant(deps, c));
      c.res = await route(c);
    } catch (error) {
      answerError(c, error);
    }
    // The stream as this instance holds it: the key's check or the route looked it up (a name it
    // does not hold costs a store call, which a request without a valid key must not spend).
    if (origin !== undefined) addIngestCorsHeaders(c, { origin, stream: deps.streams.get(name) });
  }
  const app = new Hono();
  app.onError(errorResponse);
  app.post(ingestRoute.getRoutingPath(), (c) => logRequest(c, () => steps(c), front.log));
  return app;
}

/** An error thrown by a step, answered as the middleware chain answers it. */
function answerError(c: Context, error: unknown): void {
  if (!(error instanceof Error)) throw error;
  c.error = error;
  c.res = errorResponse(error, c);
}

/**
 * A stream's stats as answered: the documented fields ({@linkcode StatsSchema}) taken one by one,
 * so a field the store adds to `StreamStats` for its own use (`closedThrough` and
 * `definitionVersion`, for reads' `final`) is not answered.
 */
function statsJson(
  stream: CompiledStream,
  stats: StreamStats,
  nowMs: number,
): z.infer<typeof StatsSchema> {
  // An idle stream's follows the clock (a Redis sweep skips a stream with nothing due, so the
  // stored one may be older).
  const watermark = watermarkAt(stream, stats.watermark, nowMs);
  return {
    watermark: watermark === null ? null : new Date(watermark).toISOString(),
    accepted: stats.accepted,
    applied: stats.applied,
    duplicates: stats.duplicates,
    late: stats.late,
    filtered: stats.filtered,
    rejected: stats.rejected,
    overflow: stats.overflow,
    dedupeForgotten: stats.dedupeForgotten,
    repliesForgotten: stats.repliesForgotten,
  };
}

/** A stream as `GET /v1/streams/{stream}` answers it. */
export async function streamJson(
  stream: CompiledStream,
  deps: { streams: StreamCatalog; store: Store; now: () => number },
) {
  return {
    ...streamFields(stream, deps),
    stats: statsJson(
      stream,
      await deps.store.stats(stream.name, stream.counterMetas),
      deps.now(),
    ),
  };
}

/** A served stream's JSON but its stats: what is known without reading the store. */
export function streamFields(stream: CompiledStream, deps: { streams: StreamCatalog }) {
  const registered = deps.streams.describe?.(stream.name);
  return {
    name: stream.name,
    description: stream.parsed.description,
    source: registered?.source ?? "config" as const,
    version: registered?.version ?? 0,
    servable: true as const,
    definition: stream.definition,
    counters: stream.counters.map((counter) => counter.name),
  };
}

/** `GET /v1/streams`. */
const listStreamsRoute = createRoute({
  method: "get",
  path: "/v1/streams",
  operationId: "listStreams",
  tags: ["streams"],
  summary: "List streams with stats, by name, a page at a time. Scope: read.",
  description:
    "The streams this instance serves, and those stored through the API whose definition this release cannot compile (`servable: false`, with the `problem`; fix them with `PUT` or `DELETE`), in code point order of their names; a key limited to `streams` is answered only those of them it may read (none: an empty list).",
  request: {
    query: z.object({
      limit: countQuery(1000, "Most streams on the page (default 100)"),
      cursor: CursorQuery,
    }),
  },
  responses: {
    200: {
      description: "Streams",
      content: {
        "application/json": {
          schema: z.object({
            streams: z.array(z.union([StreamSchema, UnservableStreamSchema])),
            nextCursor: NextCursor,
          }),
        },
      },
    },
    ...errorsFor(400, 401, 403, 503),
  },
});

function listStreams(deps: StreamRouteDeps): RouteHandler<typeof listStreamsRoute> {
  return async (c) => {
    const { limit = 100, cursor } = c.req.valid("query");
    const after = cursor === undefined ? undefined : readStreamCursor(cursor);
    const only = grantOfRequest(c)?.streams;
    // A stream stored with a definition this release cannot compile is listed too (with what its
    // record says): else an operator could not find it to replace or delete it.
    const unservable = new Map(deps.streams.unservableStreams?.() ?? []);
    const names = [...deps.streams.keys(), ...unservable.keys()]
      .filter((name) =>
        (only === undefined || only.has(name)) &&
        (after === undefined || compareGroupKeys(name, after) > 0)
      )
      .sort(compareGroupKeys);
    const page = names.slice(0, limit);
    const list = await Promise.all(page.map((name) => {
      const stream = deps.streams.get(name);
      if (stream) return streamJson(stream, deps);
      const found = unservable.get(name)!;
      return {
        name,
        source: "api" as const,
        version: found.version,
        servable: false as const,
        problem: unservableProblem(name, found),
      };
    }));
    const nextCursor = names.length > limit ? streamCursor(page.at(-1)!) : null;
    return c.json({ streams: list, nextCursor }, 200);
  };
}

/**
 * The JSON value a cursor of these routes holds (undefined when its text is not JSON), or 400
 * `invalid_cursor` when it is no cursor at all.
 */
function cursorJson(cursor: string): unknown {
  try {
    return JSON.parse(textOfCursor(cursor));
  } catch (error) {
    if (error instanceof InvalidCursorError) throw error;
    return undefined;
  }
}

/** The cursor of the streams after `name` in `GET /v1/streams`: `["streams", name]` as text. */
function streamCursor(name: string): string {
  return cursorOfText(JSON.stringify(["streams", name]));
}

/** The stream name a cursor {@linkcode streamCursor} made holds, or 400 `invalid_cursor`. */
function readStreamCursor(cursor: string): string {
  const value = cursorJson(cursor);
  if (
    Array.isArray(value) && value.length === 2 && value[0] === "streams" &&
    typeof value[1] === "string"
  ) {
    return value[1];
  }
  throw cursorRefused(cursor, "not a cursor this list gave out");
}

/** `GET /v1/streams/{stream}`. */
const getStreamRoute = createRoute({
  method: "get",
  path: "/v1/streams/{stream}",
  operationId: "getStream",
  tags: ["streams"],
  summary: "A stream's definition and stats. Scope: read.",
  request: { params: StreamParams },
  responses: {
    200: {
      description: "Stream",
      headers: headersOf("ETag"),
      content: { "application/json": { schema: StreamSchema } },
    },
    ...errorsFor(400, 401, 403, 404, 409, 503),
  },
});

function getStream(deps: StreamRouteDeps): RouteHandler<typeof getStreamRoute> {
  return async (c) => {
    const stream = await findServedStream(
      deps.streams,
      c.req.valid("param").stream,
      { grant: grantOfRequest(c) },
    );
    const body = await streamJson(stream, deps);
    // What PUT and DELETE take in If-Match (the version this instance serves).
    c.header("ETag", `"${body.version}"`);
    return c.json(body, 200);
  };
}

/**
 * What a 400 about the query value `text` adds when its spaces were `+` signs a URL query read as
 * spaces: `; a '+' in a URL query reads as a space, so write it as %2B (<shown>)`, `shown` being
 * `text` (as `name=…` when `name` is given) with `%2B` for each space. Said only when `readable`
 * takes `text` with `+` for each space: a space no `+` explains gets no such hint.
 */
function plusHint(
  text: string,
  readable: (text: string) => boolean,
  name?: string,
): string {
  if (!text.includes(" ") || !readable(text.replaceAll(" ", "+"))) return "";
  const shown = quoteInput(text.replaceAll(" ", "%2B"));
  return `; a '+' in a URL query reads as a space, so write it as %2B (${
    name === undefined ? shown : `${name}=${shown}`
  })`;
}

function parseTime(text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined;
  // Rounded up: `from <= start < to` compares whole-millisecond starts with the instant written.
  const ms = parseInstantText(text, "ceil");
  if (ms === null) {
    // A URL query reads `+` as a space, so the offset of `…T10:00:00+01:00` (or the sign of
    // `+010000-01-01`), written as the README writes it, arrives as a space: say so, as the
    // text quoted back shows only the space.
    const plus = plusHint(text, (fixed) => parseInstantText(fixed, "ceil") !== null, name);
    // ISO 8601's basic form or a comma fraction: said, as for an event time.
    const form = unreadIsoForm(text);
    // Worded as the query parameters the schema refuses (`limit`) are.
    throw new ApiError(
      400,
      "invalid_query",
      `Invalid query parameter ${name}: expected a time (ISO-8601, UTC when it has no offset, or epoch milliseconds), received '${
        quoteInput(text)
      }'${plus || (form === undefined ? "" : `: ${form}`)}`,
    );
  }
  return ms;
}

/** Most quantiles one read may ask for with `q`. */
const MAX_QUANTILES = 20;

const QuantilesParam = z.string().optional().openapi({
  description:
    "Quantiles counters: the quantiles to report instead of p50, p90, p95, p99, comma separated, each from 0 to 1 and none twice (e.g. `0.5,0.999` gives `p50` and `p99.9`), no spaces: a `+` is written `%2B`, as a URL query reads `+` as a space",
});

/**
 * A quantile as `q` writes it: a decimal fraction (`0.5`, `.999`, `1`, `1e-3`), a `+` sign
 * allowed, no space: a URL query reads `+` as a space, so a space in a part (`q=+0.5` arrives as
 * ` 0.5`, `q=1e+0` as `1e 0`) is refused alike, saying to write `%2B`. The fraction's
 * digits come only after a point: `\d+\.?\d*` could split one run of digits between its two
 * `\d`s every way, quadratic in a long one that fails (`q=` 40,000 ones and an `x` held the event
 * loop 4 s).
 */
const QUANTILE_TEXT = /^\+?(\d+(?:\.\d*)?|\.\d+)(e[+-]?\d+)?$/i;

/** The number a part of `q` writes ({@linkcode QUANTILE_TEXT}), or NaN. */
function quantileOf(part: string): number {
  return QUANTILE_TEXT.test(part) ? Number(part) : NaN;
}

/** The quantiles of `?q=0.5,0.999`, or undefined for the defaults; a clear 400 otherwise. */
function parseQuantiles(counter: CompiledCounter, text: string | undefined): number[] | undefined {
  if (text === undefined) return undefined;
  if (counter.aggregate.kind !== "quantiles") {
    throw new ApiError(
      400,
      "invalid_query",
      `Query parameter 'q' applies to quantiles counters; '${counter.name}' is ${counter.aggregate.kind}`,
    );
  }
  const parts = text.split(",");
  if (parts.length > MAX_QUANTILES) {
    throw new ApiError(
      400,
      "invalid_query",
      `Query parameter 'q' names ${parts.length} quantiles; at most ${MAX_QUANTILES} are allowed`,
    );
  }
  const named = new Set<string>();
  return parts.map((part) => {
    const q = quantileOf(part);
    if (!(q >= 0 && q <= 1)) {
      // `1e+0` arrives as `1e 0` and `+0.5` as ` 0.5`: a sign read as a space. No space is
      // taken, so the two are refused alike, each with the hint.
      const plus = plusHint(part, (fixed) => {
        const value = quantileOf(fixed);
        return value >= 0 && value <= 1;
      });
      throw new ApiError(
        400,
        "invalid_query",
        `Query parameter 'q' must list numbers from 0 to 1, got '${quoteInput(part)}'${plus}`,
      );
    }
    // `1e-400` reads as 0: it would be answered as p0, which it did not ask for.
    if (q === 0 && /[1-9]/.test(part.replace(/e.*$/i, ""))) {
      throw new ApiError(
        400,
        "invalid_query",
        `Query parameter 'q' lists '${quoteInput(part)}', too small to tell from 0 (ask for 0)`,
      );
    }
    // `0.99999999999999999` reads as 1: the same, answered as p100.
    if (q === 1 && !isOne(part)) {
      throw new ApiError(
        400,
        "invalid_query",
        `Query parameter 'q' lists '${
          quoteInput(part)
        }', too close to 1 to tell from it (ask for 1)`,
      );
    }
    // `0.2999999999999999999` reads as 0.3: it would be answered as p30, at the rank of 0.3
    // (30 of 101 values, where the decimal it names is rank 29), which it did not ask for.
    const name = quantileName(q);
    if (!sameDecimal(part, String(q))) {
      throw new ApiError(
        400,
        "invalid_query",
        `Query parameter 'q' lists '${
          quoteInput(part)
        }', more digits than a number keeps: it reads as ${q} (${name}; ask for that)`,
      );
    }
    // Two that name one value field (`0.5,0.50`) would be one field in the reply.
    if (named.has(name)) {
      throw new ApiError(400, "invalid_query", `Query parameter 'q' names ${name} twice`);
    }
    named.add(name);
    return q;
  });
}

/**
 * The decimal a number's text (one `QUANTILE_TEXT` takes, or one JavaScript prints) names, as
 * `<digits>e<exponent>` without leading or trailing zeros: `0.50`, `5e-1` and `50e-2` are `5e-1`.
 */
function decimalOf(text: string): string {
  const [mantissa, exponent = "0"] = text.toLowerCase().replace(/^\+/, "").split("e");
  const [whole, fraction = ""] = mantissa.split(".");
  const digits = `${whole}${fraction}`.replace(/^0+/, "");
  // Not `/0+$/`: it tries every zero of a run as the start of the trailing ones, each to the end
  // of the run (`1.000…001` with 60,000 zeros held the event loop about 2 s).
  let end = digits.length;
  while (end > 0 && digits.charCodeAt(end - 1) === 48) end--;
  if (end === 0) return "0";
  return `${digits.slice(0, end)}e${Number(exponent) - fraction.length + digits.length - end}`;
}

/** Whether two numbers' texts name the same decimal (`0.30` and `3e-1`; not `0.29999999999999999999` and `0.3`). */
function sameDecimal(text: string, other: string): boolean {
  return decimalOf(text) === decimalOf(other);
}

/** Whether `text` (a number `QUANTILE_TEXT` takes) is the decimal 1 exactly: `1`, `1.00`, `10e-1`. */
function isOne(text: string): boolean {
  return decimalOf(text) === "1e0";
}

/**
 * Most rows a counter read answers: `limit`'s bound, which `top` groups of each of `limit` windows
 * keep to as well (`top=1000&limit=1000` would be a million rows).
 */
const MAX_ROWS = 1000;

/** Windows a read with `top` takes when `limit` is not given, unless `top` asks for fewer. */
const DEFAULT_TOP_WINDOWS = 100;

/**
 * How many windows a read with `top` takes: `limit`, when its `top` groups each stay within
 * {@linkcode MAX_ROWS} rows (else a 400 naming both); without `limit`, the default 100, or as
 * many as keep within it (`top=50`: 20).
 */
function topWindows(top: number, limit: number | undefined): number {
  if (limit === undefined) {
    return Math.max(1, Math.min(DEFAULT_TOP_WINDOWS, Math.floor(MAX_ROWS / top)));
  }
  if (top * limit > MAX_ROWS) {
    throw new ApiError(
      400,
      "invalid_query",
      `Query parameters 'top' (${top}) and 'limit' (${limit}) ask for up to ${
        top * limit
      } rows (the top groups of each of 'limit' windows); at most ${MAX_ROWS}: lower one of them`,
    );
  }
  return limit;
}

const TopParam = countQuery(
  1000,
  "Only this many groups with the highest value per window (ties by group key), the rest merged into `others`; not with `group.*` filters",
);

const ByParam = z.string().optional().openapi({
  description:
    "Quantiles counters with `top`: the quantile groups are ranked by, as `p<percent>` (`p99`, `p99.9`; default `p50`)",
});

const OthersSchema = z.object({
  start: z.string(),
  end: z.string(),
  groups: z.int().openapi({ description: "Groups in the window, top ones included" }),
  value: CounterValueSchema.openapi({
    description:
      "The groups beyond the top merged: count and sum added, min/max the extreme, avg of the merged sum and count, distinct of the union (HyperLogLog on Redis), quantiles of the merged sketch; null when there are none",
  }),
  final: z.boolean(),
  approximate: z.boolean().optional(),
  partial: z.boolean().optional().openapi({ description: PARTIAL_DESCRIPTION }),
}).openapi("OtherGroups");

/** The top-groups options of `?top=&by=`, checked against the counter and the group filters. */
function parseTop(
  counter: CompiledCounter,
  query: { top?: number; by?: string },
  filters: Record<string, string>,
): { top: number; by?: number } | undefined {
  if (query.top === undefined) {
    if (query.by !== undefined) {
      throw new ApiError(400, "invalid_query", "Query parameter 'by' needs 'top'");
    }
    return undefined;
  }
  if (counter.window.kind === "session") {
    throw new ApiError(
      400,
      "invalid_query",
      `Query parameter 'top' ranks the groups of a window; counter '${counter.name}' has session windows, listed by start`,
    );
  }
  if (Object.keys(filters).length > 0) {
    throw new ApiError(
      400,
      "invalid_query",
      `Query parameter 'top' ranks all groups and cannot be combined with group filters: ${
        Object.keys(filters).map((field) => `group.${field}`).join(", ")
      }`,
    );
  }
  if (query.by === undefined) return { top: query.top };
  const percent = /^p(\d+(\.\d+)?)$/.exec(query.by);
  // The decimal the percentage names (`p0.7` is 0.007, where 0.7 / 100 is 0.006999999999999999).
  const by = percent ? Number(`${percent[1]}e-2`) : NaN;
  if (counter.aggregate.kind !== "quantiles" || !(by >= 0 && by <= 1)) {
    throw new ApiError(
      400,
      "invalid_query",
      counter.aggregate.kind === "quantiles"
        ? `Query parameter 'by' must be p0 to p100, got '${quoteInput(query.by)}'`
        : `Query parameter 'by' applies to quantiles counters; '${counter.name}' is ${counter.aggregate.kind}`,
    );
  }
  // As with `q`: `p99.99999999999999999` reads as 1 and a p0 with 400 zeros as 0, and would be
  // ranked by p100 or p0, which they do not name.
  const digits = percent?.[1] ?? "";
  const bound = by === 1 && !isOne(`${digits}e-2`)
    ? "p100"
    : by === 0 && /[1-9]/.test(digits)
    ? "p0"
    : undefined;
  if (bound !== undefined) {
    throw new ApiError(
      400,
      "invalid_query",
      `Query parameter 'by' names '${
        quoteInput(query.by)
      }', too close to ${bound} to tell from it (ask for ${bound})`,
    );
  }
  // So with others: `p29.99999999999999999` reads as 0.3 and would rank by p30.
  if (!sameDecimal(`${digits}e-2`, String(by))) {
    const name = quantileName(by);
    throw new ApiError(
      400,
      "invalid_query",
      `Query parameter 'by' names '${
        quoteInput(query.by)
      }', more digits than a number keeps: it reads as ${name} (ask for ${name})`,
    );
  }
  return { top: query.top, by };
}

function groupFilters(c: Context, counter: CompiledCounter): Record<string, string> {
  const filters: Record<string, string> = {};
  // In URL order, not by name: `group.f=a&group[f]=b&group.f=c` names one field three ways, and
  // the value given last (`c`) is the one that counts.
  for (const [key, value] of new URL(c.req.url).searchParams) {
    const field = groupFilterField(key);
    // `group[country=DE` (the bracket left open) filters nothing: the whole window would be
    // answered as if it were the group asked for. Nor does `group` itself, the name of the
    // OpenAPI document's parameter, sent unexploded (`group=group.country,DE`) or bare.
    if (field === undefined && (key.startsWith("group[") || key === "group")) {
      throw new ApiError(
        400,
        "invalid_query",
        `Query parameter '${
          quoteInput(key)
        }' is no group filter: write group.<field>=<value> or group[<field>]=<value>`,
      );
    }
    if (field === undefined) continue;
    // A field the counter does not group by would match nothing, silently.
    if (!counter.groupBy.includes(field)) {
      throw new ApiError(
        400,
        "invalid_query",
        `Query parameter '${quoteInput(key)}' names no field counter '${counter.name}' groups by (${
          counter.groupBy.length === 0 ? "it has no groupBy" : counter.groupBy.join(", ")
        })`,
      );
    }
    filters[field] = value;
  }
  return filters;
}

/** What the windows operations say about filtering groups. */
const GROUP_FILTER_TEXT =
  'Filter groups with `group.<field>=<value>` (e.g. `group.country=DE`; `null` matches a missing value; a value in double quotes, `group.g="1"`, only that string; several fields must all match). A query parameter other than those listed here, `group.<field>` and the cache-buster `_` (ignored) is a 400 `invalid_query` naming it (names are case-sensitive: `Group.country` filters nothing).';

/** `GET /v1/streams/{stream}/counters/{counter}`. */
const listWindowsRoute = createRoute({
  method: "get",
  path: "/v1/streams/{stream}/counters/{counter}",
  operationId: "listWindows",
  tags: ["streams"],
  summary: "Windows of a counter, newest first",
  description:
    `Newest window first, each window's groups in code point order of their group key (the JSON array of their values in \`groupBy\` order). A page reads windows only until it is full and merges only its own groups (finding them is a pass over the group keys of the windows read); with a group filter each window read is merged whole. For a session counter: its sessions (open, and closed within retention) by start, each \`end\` the time of its last event. ${GROUP_FILTER_TEXT} Scope: read.`,
  parameters: [groupFilterParameter],
  request: {
    params: CounterParams,
    query: z.object({
      from: TimeParam.openapi({
        description: "Earliest window start (ISO-8601, UTC when it has no offset, or epoch ms)",
      }),
      to: TimeParam.openapi({ description: "Windows start before this (same forms as from)" }),
      limit: countQuery(
        MAX_ROWS,
        "Most rows (default 100); with `top`, most windows (default 100, fewer when `top` is over 10), `top` × `limit` at most 1000",
      ),
      // No bound of its own: a cursor holds its last row's group, whose values may be long.
      cursor: z.string().optional().openapi({
        description:
          "The `nextCursor` of the previous page, as it was (a window counter's rows without `top`); omit for the first page. A cursor that cannot be read is a 400 `invalid_cursor`; one of a release that ordered groups by their object's JSON text goes on after its group in today's order.",
      }),
      q: QuantilesParam,
      top: TopParam,
      by: ByParam,
    }),
  },
  responses: {
    200: {
      description: "Windows",
      content: {
        "application/json": {
          schema: z.object({
            stream: z.string(),
            counter: z.string(),
            aggregate: z.string(),
            windows: z.array(WindowRowSchema),
            others: z.array(OthersSchema).optional().openapi({
              description: "With `top`: per window, newest first, the groups beyond the top",
            }),
            nextCursor: z.string().nullable().optional().openapi({
              description:
                "A window counter's rows without `top`: pass as `cursor` for the rows after these; null when none are left",
            }),
          }),
        },
      },
    },
    ...errorsFor(400, 401, 403, 404, 409, 503),
  },
});

function listCounterWindows(deps: StreamRouteDeps): RouteHandler<typeof listWindowsRoute> {
  return async (c) => {
    const params = c.req.valid("param");
    const query = c.req.valid("query");
    const stream = await findServedStream(deps.streams, params.stream, {
      grant: grantOfRequest(c),
    });
    const counter = findCounter(stream, params.counter);
    const filters = groupFilters(c, counter);
    const top = parseTop(counter, query, filters);
    const context = { store: deps.store, nowMs: deps.now() };
    const options = {
      fromMs: parseTime(query.from, "from"),
      toMs: parseTime(query.to, "to"),
      limit: query.limit,
      quantiles: parseQuantiles(counter, query.q),
    };
    if (top) {
      if (query.cursor !== undefined) throw cursorNotTaken("with 'top'");
      const limit = topWindows(top.top, query.limit);
      const ranked = await listTopWindows(stream, counter, context, { ...options, ...top, limit });
      return c.json({
        stream: stream.name,
        counter: counter.name,
        aggregate: counter.aggregate.kind,
        windows: ranked.windows,
        others: ranked.others,
      }, 200);
    }
    if (counter.window.kind === "session") {
      if (query.cursor !== undefined) throw cursorNotTaken("a session counter");
      const windows = await listWindows(stream, counter, context, { ...options, groups: filters });
      return c.json({
        stream: stream.name,
        counter: counter.name,
        aggregate: counter.aggregate.kind,
        windows,
      }, 200);
    }
    const page = await listWindowsPage(stream, counter, context, {
      ...options,
      groups: filters,
      after: query.cursor === undefined ? undefined : readRowCursor(query.cursor, counter),
    });
    return c.json({
      stream: stream.name,
      counter: counter.name,
      aggregate: counter.aggregate.kind,
      windows: page.rows,
      nextCursor: page.next && rowCursor(page.next),
    }, 200);
  };
}

/**
 * Why the refused idempotency key `key` is refused, when it is a header sent more than once: the
 * fetch API joins their values with `", "`, which no key holds (it has no space), so the
 * message would otherwise say it is not printable ASCII. Asked only of a refused key.
 */
function repeatedHeaderProblem(c: Context, key: string): string | undefined {
  if (!key.includes(", ") || c.req.header("Idempotency-Key") !== key) return undefined;
  return `Idempotency-Key was sent more than once (its values joined: '${
    quoteInput(key)
  }'): send the header once`;
}

/**
 * A request's idempotency key: its `Idempotency-Key` header or `?idempotencyKey=` (beacons cannot
 * set headers). Two that differ are a 400: which one the client meant cannot be told.
 */
function idempotencyKeyOf(c: Context): string | undefined {
  const header = c.req.header("Idempotency-Key");
  // Given once: a request that repeats a query parameter was refused before. Read by its decoded
  // name (`%69dempotencyKey=` is the same parameter), as the repeat check reads names.
  const query = c.req.url.includes("?") ? c.req.query("idempotencyKey") : undefined;
  if (header !== undefined && query !== undefined && header !== query) {
    throw new ApiError(
      400,
      "invalid_idempotency_key",
      "Two different idempotency keys (the Idempotency-Key header and ?idempotencyKey=): send one",
    );
  }
  return header ?? query;
}

/**
 * Throws the 400 of `from` or `to` on `…/current`, which bound the windows listing: the words for
 * them, ahead of the untaken parameters' (`apiQueryChecks`, by {@linkcode queryExplainers}).
 */
function refuseWindowBounds(c: Context): void {
  // Read by decoded name (`%66rom` is `from`), as the repeat check reads names.
  for (const name of ["from", "to"]) {
    if (c.req.query(name) === undefined) continue;
    throw new ApiError(
      400,
      "invalid_query",
      `Query parameter '${name}' bounds the windows of GET /v1/streams/{stream}/counters/{counter}, not the current window: leave it out, or read that listing`,
    );
  }
}

function pageNotTaken(what: string): ApiError {
  return new ApiError(
    400,
    "invalid_query",
    `Query parameters 'limit' and 'cursor' page the groups of a window counter's current window, not ${what}`,
  );
}

function cursorNotTaken(what: string): ApiError {
  return new ApiError(
    400,
    "invalid_query",
    `Query parameter 'cursor' pages a window counter's rows without 'top', not ${what}`,
  );
}

/**
 * A row position as an opaque cursor: `[startMs, groupKey, 2]` (group key null: past the
 * window's groups) as {@linkcode cursorOfText} text.
 */
function rowCursor(position: RowPosition): string {
  // A long group key (a group value of thousands of characters) as its start and its digest:
  // whole, the cursor could pass the longest URL the server takes.
  const { startMs, group, groupDigest } = compactPosition(position);
  return cursorOfText(
    JSON.stringify(
      groupDigest === undefined ? [startMs, group, 2] : [startMs, group, 3, groupDigest],
    ),
  );
}

/**
 * The position of a cursor {@linkcode rowCursor} made, or 400 `invalid_cursor`. A cursor of a
 * release that ordered a window's groups by the JSON text of their object (`[startMs, group]`,
 * `"|"` past the window) still reads: its group, in today's order, is where the page starts.
 */
function readRowCursor(cursor: string, counter: CompiledCounter): RowPosition {
  const value = cursorJson(cursor);
  if (Array.isArray(value) && Number.isSafeInteger(value[0])) {
    if (
      value.length === 3 && value[2] === 2 && (value[1] === null || typeof value[1] === "string")
    ) {
      return { startMs: value[0], group: value[1] };
    }
    if (
      value.length === 4 && value[2] === 3 && typeof value[1] === "string" &&
      typeof value[3] === "string"
    ) {
      // A key named by its digest is searched among the keys starting with its start: only the
      // start a long key is cut to, not a shorter one (an empty one starts every key).
      if (!isCompactedStart(value[1])) {
        throw cursorRefused(cursor, "its group's start is not one a cursor holds");
      }
      return { startMs: value[0], group: value[1], groupDigest: value[3] };
    }
    if (value.length === 2 && typeof value[1] === "string") {
      if (value[1] === "|") return { startMs: value[0], group: null };
      const group = jsonObject(value[1]);
      const key = group && legacyGroupKey(counter, group);
      if (key !== undefined) return { startMs: value[0], group: key };
    }
  }
  throw cursorRefused(cursor, "not a cursor this API gave out");
}

/**
 * The group key of a legacy cursor's group object, or undefined for one no group can have: a value
 * nested thousands deep (written by hand; the cursor's 64 KiB hold some 20,000 levels) overflows
 * the stack of the key's JSON, which was a 500.
 */
function legacyGroupKey(
  counter: CompiledCounter,
  group: Record<string, unknown>,
): string | undefined {
  try {
    return groupKey(counter.groupBy.map((field) => group[field] ?? null));
  } catch (error) {
    if (error instanceof RangeError) return undefined;
    throw error;
  }
}

/** The object a JSON text holds, or undefined. */
function jsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** `GET /v1/streams/{stream}/counters/{counter}/current`. */
const currentWindowRoute = createRoute({
  method: "get",
  path: "/v1/streams/{stream}/counters/{counter}/current",
  operationId: "getCurrentWindow",
  tags: ["streams"],
  summary: "The window containing now, per group",
  description:
    `For sliding windows: the last \`size\` up to now; for a session counter its open sessions. Every group of the window, unless \`limit\` or \`cursor\` asks for a page of them (a window counter without \`top\`), as the windows listing pages its rows: then the reply has \`nextCursor\`, and a cursor reads on in the window of the page that gave it, also once another window contains now. \`from\` and \`to\`, which bound the windows listing, are a 400 \`invalid_query\` here. ${GROUP_FILTER_TEXT} Scope: read.`,
  parameters: [groupFilterParameter],
  request: {
    params: CounterParams,
    query: z.object({
      q: QuantilesParam,
      top: TopParam,
      by: ByParam,
      limit: countQuery(
        1000,
        "Most rows: a page of the window's groups (a window counter without `top`); absent with no `cursor`: every group",
      ),
      cursor: z.string().optional().openapi({
        description:
          "The `nextCursor` of the previous page (default `limit` 100 then); a cursor that cannot be read is a 400 `invalid_cursor`",
      }),
    }),
  },
  responses: {
    200: {
      description: "Current window",
      content: {
        "application/json": {
          schema: z.object({
            stream: z.string(),
            counter: z.string(),
            aggregate: z.string(),
            start: z.string(),
            end: z.string(),
            windows: z.array(WindowRowSchema),
            others: OthersSchema.optional().openapi({
              description: "With `top`: the groups beyond the top",
            }),
            nextCursor: z.string().nullable().optional().openapi({
              description:
                "With `limit` or `cursor`: pass as `cursor` for the window's rows after these; null when none are left",
            }),
          }),
        },
      },
    },
    ...errorsFor(400, 401, 403, 404, 409, 503),
  },
});

/**
 * By route path (Hono's form), the check of a read's own 400 for a query parameter it does not
 * take but that means something elsewhere: `apiQueryChecks`' `explainers`.
 */
export const queryExplainers: ReadonlyMap<string, (c: Context) => void> = new Map([
  [currentWindowRoute.getRoutingPath(), refuseWindowBounds],
]);

function getCurrentWindow(deps: StreamRouteDeps): RouteHandler<typeof currentWindowRoute> {
  return async (c) => {
    const params = c.req.valid("param");
    const stream = await findServedStream(deps.streams, params.stream, {
      grant: grantOfRequest(c),
    });
    const counter = findCounter(stream, params.counter);
    const query = c.req.valid("query");
    const filters = groupFilters(c, counter);
    const top = parseTop(counter, query, filters);
    if (query.limit !== undefined || query.cursor !== undefined) {
      if (top) throw pageNotTaken("with 'top'");
      if (counter.window.kind === "session") throw pageNotTaken("of a session counter");
      const after = query.cursor === undefined ? undefined : readRowCursor(query.cursor, counter);
      if (after && !assignWindows(after.startMs, counter.window).includes(after.startMs)) {
        throw cursorRefused(query.cursor!, "not the start of one of this counter's windows");
      }
      // The reply names the window's start and end as times: a hand-written cursor's must be ones.
      if (
        after &&
        !(Math.abs(after.startMs) <= 8.64e15 && after.startMs + counter.window.sizeMs <= 8.64e15)
      ) {
        throw cursorRefused(query.cursor!, "its window is outside the time range");
      }
      // A cursor reads on in its own window, the one that contained now at the first page.
      const page = await currentWindowPage(stream, counter, {
        store: deps.store,
        nowMs: deps.now(),
      }, {
        limit: query.limit,
        after,
        groups: filters,
        quantiles: parseQuantiles(counter, query.q),
      });
      return c.json({
        stream: stream.name,
        counter: counter.name,
        aggregate: counter.aggregate.kind,
        start: page.start,
        end: page.end,
        windows: page.rows,
        nextCursor: page.next && rowCursor(page.next),
      }, 200);
    }
    const current = await currentWindow(
      stream,
      counter,
      { store: deps.store, nowMs: deps.now() },
      { groups: filters, quantiles: parseQuantiles(counter, query.q), ...top },
    );
    return c.json({
      stream: stream.name,
      counter: counter.name,
      aggregate: counter.aggregate.kind,
      start: current.start,
      end: current.end,
      windows: current.rows,
      ...(current.others ? { others: current.others } : {}),
    }, 200);
  };
}

/** `GET /healthz`. */
const healthRoute = createRoute({
  method: "get",
  path: "/healthz",
  operationId: "getHealth",
  tags: ["health"],
  // No key: probes of a load balancer or orchestrator carry none.
  security: [],
  summary: "Liveness: the process answers",
  responses: {
    200: {
      description: "Alive",
      content: { "application/json": { schema: z.object({ status: z.literal("ok") }) } },
    },
  },
});

/** `GET /readyz`. */
const readyRoute = createRoute({
  method: "get",
  path: "/readyz",
  operationId: "getReadiness",
  tags: ["health"],
  security: [],
  summary: "Readiness: the store is reachable and takes writes",
  responses: {
    200: {
      description: "Ready",
      content: {
        "application/json": { schema: z.object({ status: z.string(), store: z.string() }) },
      },
    },
    503: {
      description:
        "Not ready: the store is unreachable or refuses writes (`status: unavailable`, with `Retry-After`), this instance is starting (`status: starting`, the webhook endpoints loading, with `Retry-After`), or it is stopping (`status: shutting_down`, with `Retry-After`)",
      content: {
        "application/json": {
          schema: z.object({
            status: z.string(),
            store: z.string(),
            error: z.string(),
            requestId: z.string().openapi({
              description: "The request's `X-Request-Id`, as every error reply carries",
            }),
          }),
        },
      },
    },
  },
});

/**
 * The paths of the liveness and readiness probes (`/healthz`, `/readyz`), which `main.ts` answers
 * before the server is ready, as its routes define them.
 */
export const PROBE_PATHS: readonly string[] = [healthRoute.path, readyRoute.path];

/**
 * How long (ms) a store found reachable is answered ready without asking it again: probes of a
 * load balancer (and anyone, it needs no key) would otherwise each cost a store command, billed
 * on Upstash. A failure is not kept: the next probe asks again.
 */
const READY_KEPT_MS = 1_000;

/**
 * How long (ms) a probe waits for the store's answer before answering 503: a hung store answers
 * no ping until the store's own deadline (5 s), past the usual probe timeout (1 s), which would
 * then see no answer at all. The ping goes on, and later probes wait for the same one.
 */
export const READY_WAIT_MS = 500;

/** Why a ping found the store unreachable, with the errors behind it for the request's log line. */
interface ReadyProblem {
  message: string;
  cause?: unknown;
}

function ready(deps: StreamRouteDeps): RouteHandler<typeof readyRoute> {
  // The last probe's answer (null: reachable), shared by the requests that come while it runs,
  // however long that is (a hung store answers at its deadline): one ping in flight at a time.
  let probe: { atMs: number; problem: Promise<ReadyProblem | null>; done: boolean } | undefined;
  const check = (): Promise<ReadyProblem | null> => {
    const now = deps.now();
    // A clock that went back (an NTP step) keeps no answer: it would be kept until the clock
    // passed its time again, an hour for a step of an hour, whatever the store does meanwhile.
    const kept = probe !== undefined && withinPeriod(now, probe.atMs, READY_KEPT_MS);
    if (probe && (!probe.done || kept)) return probe.problem;
    const problem = deps.store.ping().then(
      () => null,
      (error) => ({
        message: error instanceof StoreUnavailableError ? error.message : String(error),
        cause: error,
      }),
    );
    const current = { atMs: now, problem, done: false };
    probe = current;
    // Only a reachable store is kept; a failure is asked again once its probe is done.
    problem.then((found) => {
      current.done = true;
      if (found !== null && probe === current) probe = undefined;
    });
    return problem;
  };
  return async (c) => {
    if (deps.stopping?.()) {
      return notReady(c, deps.store.kind, {
        status: "shutting_down",
        code: "shutting_down",
        message: "The server is shutting down; another instance takes its traffic",
      });
    }
    if (deps.starting?.()) {
      // Not the store's ping: a store that does not answer holds the endpoints' loading up to its
      // deadline, and a probe would wait for it as long.
      return notReady(c, deps.store.kind, {
        status: "starting",
        code: "starting",
        message: "The server is starting: its webhook endpoints are loading",
      });
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waited = new Promise<ReadyProblem>((resolve) => {
      timer = setTimeout(
        () => resolve({ message: `The store did not answer a ping within ${READY_WAIT_MS} ms` }),
        READY_WAIT_MS,
      );
    });
    const problem = await Promise.race([check(), waited]);
    clearTimeout(timer);
    if (problem === null) return c.json({ status: "ready", store: deps.store.kind }, 200);
    return notReady(c, deps.store.kind, {
      status: "unavailable",
      code: "store_unavailable",
      message: problem.message,
      cause: problem.cause,
    });
  };
}

/** Why `/readyz` is not ready: its `status`, and the request log line's error code and message. */
interface NotReady {
  status: "shutting_down" | "starting" | "unavailable";
  /** A code of the one error table, as every error reply's and log line's is. */
  code: ErrorCode;
  message: string;
  /** What the store threw, for the log line's `cause`. */
  cause?: unknown;
}

/**
 * The 503 of `/readyz`, its request log line saying why as an error's does (every branch: a
 * probe's 503 without a reason in the log leaves an operator guessing), with `Retry-After` as a
 * request the store failed answers: a balancer or client told when to ask again, one value
 * whether the instance is stopping, starting or its store is unreachable.
 */
function notReady(c: Context, store: string, reason: NotReady) {
  c.header("Retry-After", String(STORE_RETRY_AFTER_SECONDS));
  annotateRequest(c, {
    error: { code: reason.code, message: reason.message },
    ...(reason.cause === undefined ? {} : { cause: causeText(reason.cause) }),
  });
  return c.json(
    {
      status: reason.status,
      store,
      error: reason.message,
      // As every error reply says it (the request log middleware, first, always sets it).
      requestId: requestIdOf(c) ?? "",
    },
    503,
  );
}

/** `POST /v1/admin/sweep`. */
const sweepRoute = createRoute({
  method: "post",
  path: "/v1/admin/sweep",
  operationId: "runSweep",
  tags: ["admin"],
  summary:
    "Run one sweep now: close windows that became final, fire alerts on their final values, turn result logs into webhook deliveries. Answers once those are stored; the deliveries are sent after the reply. Scope: admin.",
  responses: {
    200: {
      description: "What the sweep did",
      content: {
        "application/json": {
          schema: z.object({
            closed: z.array(z.object({
              stream: z.string(),
              counter: z.string(),
              start: z.string(),
              end: z.string(),
              partial: z.boolean().optional().openapi({ description: PARTIAL_DESCRIPTION }),
              groups: z.array(z.object({
                group: z.record(z.string(), z.unknown()),
                value: CounterValueSchema,
                approximate: z.boolean().optional().openapi({
                  description: "Present and true when the value is an estimate",
                }),
              })),
            })),
            fired: z.array(z.object({
              stream: z.string(),
              alert: z.string(),
              counter: z.string(),
              start: z.string(),
              end: z.string(),
              group: z.record(z.string(), z.unknown()),
              value: CounterValueSchema,
              approximate: z.boolean().optional().openapi({
                description: "Present and true when the value is an estimate (distinct on Redis)",
              }),
              partial: z.boolean().optional().openapi({ description: PARTIAL_DESCRIPTION }),
            })).openapi({ description: "Alerts the final values fired (new firings only)" }),
            webhooks: z.object({
              queued: z.number().int().nonnegative().openapi({
                description:
                  "Deliveries this sweep created from the result logs and stored; they (and due retries) are sent after the reply",
              }),
              error: z.object({ code: z.string(), message: z.string() }).optional().openapi({
                description:
                  "Present when the webhook dispatch failed after the windows closed (a webhook key Redis refuses, say), or a stream's did (the others were dispatched, their deliveries in queued): the windows and alerts above are still this sweep's",
              }),
            }),
            failed: z.array(z.object({
              stream: z.string(),
              error: z.object({ code: z.string(), message: z.string() }),
            })).optional().openapi({
              description:
                "Streams whose sweep failed (the others were swept); absent when none did. An unreachable store fails the whole sweep: 503",
            }),
          }),
        },
      },
    },
    // 415: a body (it takes none, or {}) in a Content-Encoding other than gzip or deflate.
    ...errorsFor(400, 401, 403, 415, 503),
  },
});

/**
 * Orders fired alerts by stream name, alert name, window start, then group key, names and keys in
 * code point order (`compareGroupKeys` compares any two strings so).
 */
function compareFirings(
  a: { stream: string; alert: string; start: number; group: string },
  b: { stream: string; alert: string; start: number; group: string },
): number {
  return compareGroupKeys(a.stream, b.stream) || compareGroupKeys(a.alert, b.alert) ||
    a.start - b.start || compareGroupKeys(a.group, b.group);
}

function sweep(deps: StreamRouteDeps): RouteHandler<typeof sweepRoute> {
  return async (c) => {
    const { store } = deps;
    // The definitions swept, kept for the reply: one may be deleted or changed at run time while
    // the sweep runs, and what it closed must still be reported, not answered with a 404.
    const streams = new Map([...deps.streams.values()].map((stream) => [stream.name, stream]));
    const report = await sweepOnce(streams.values(), store, { consumers: deps.sweepConsumers });
    // The other streams were swept: what they closed is reported, beside what failed.
    for (const { stream, error } of report.failed) logSweepError(error, stream);
    // The whole dispatch failed, or one stream's (the others were dispatched): either way some
    // results of what closed were not made deliveries, which `queued` alone would not say.
    const failedDispatch = report.fanoutFailed?.[0] ??
      report.fanout?.find((item) => item.error !== undefined)?.error;
    const fanoutError = failedDispatch !== undefined ? toApiError(failedDispatch) : undefined;
    return c.json({
      closed: report.closed.map((window) => {
        const counter = findCounter(findStream(streams, window.stream), window.counter);
        return {
          stream: window.stream,
          counter: window.counter,
          start: new Date(window.start).toISOString(),
          end: new Date(window.end).toISOString(),
          // As its `window.closed` payloads and a read say: the counter missed events of it.
          ...(partialWindow(counter, window.start) ? { partial: true } : {}),
          // By group key, as a read lists them: each store gives a window's groups in its own
          // order (Redis a large pane's hash in none), and a close over several calls in parts.
          groups: window.groups.toSorted((a, b) => compareGroupKeys(a.group, b.group)).map((
            item,
          ) => ({
            group: decodeGroup(counter.groupBy, item.group),
            value: aggregateValue(counter.aggregate, item.state),
            ...(item.state.approximate ? { approximate: true } : {}),
          })),
        };
      }),
      // By stream, alert, window start and group key (code point order): the firings come in the
      // order the store gave each window's groups, its own (Redis a large pane's hash in none).
      fired: report.fired.toSorted(compareFirings).map((firing) => {
        const counter = findCounter(findStream(streams, firing.stream), firing.counter);
        return {
          stream: firing.stream,
          alert: firing.alert,
          counter: firing.counter,
          start: new Date(firing.start).toISOString(),
          end: new Date(firing.end).toISOString(),
          group: decodeGroup(counter.groupBy, firing.group),
          value: firing.value,
          ...(firing.approximate ? { approximate: true } : {}),
          ...(partialWindow(counter, firing.start) ? { partial: true } : {}),
        };
      }),
      webhooks: {
        queued: (report.fanout ?? []).reduce((sum, item) => sum + item.queued, 0),
        // The dispatch failed after the windows closed: they are listed above all the same.
        ...(fanoutError ? { error: { code: fanoutError.code, message: fanoutError.message } } : {}),
      },
      ...(report.failed.length > 0
        ? {
          failed: report.failed.map(({ stream, error }) => {
            const api = toApiError(error);
            return { stream, error: { code: api.code, message: api.message } };
          }),
        }
        : {}),
    }, 200);
  };
}

/**
 * Registers the stream routes, with their scopes: `ingest` for sending
 * events, `read` for streams and windows, `admin` for the sweep.
 *
 * @example
 * ```ts
 * import { OpenAPIHono } from "@hono/zod-openapi";
 * import { compileConfig } from "../config/mod.ts";
 * import { MemoryStore } from "../store/mod.ts";
 * import { KeyRing } from "./auth.ts";
 * import { DEFAULT_LIMITS } from "./body.ts";
 * import { registerStreamRoutes } from "./stream_routes.ts";
 *
 * const app = new OpenAPIHono();
 * registerStreamRoutes(app, {
 *   streams: compileConfig({
 *     streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
 *   }),
 *   store: new MemoryStore(),
 *   keys: await KeyRing.parse(""),
 *   now: Date.now,
 *   limits: DEFAULT_LIMITS,
 *   ingestOptions: () => ({}),
 *   sweepConsumers: [],
 * });
 * ```
 */
export function registerStreamRoutes(app: OpenAPIHono, deps: StreamRouteDeps): void {
  const readScope = requireScope(deps.keys, "read");
  app.openapi(healthRoute, (c) => c.json({ status: "ok" as const }, 200));
  app.openapi(readyRoute, ready(deps));

  app.openAPIRegistry.registerPath(ingestRoute);
  app.use(ingestRoute.getRoutingPath(), ingestCors(deps));
  // A preflight (OPTIONS) carries no key; POST checks its own (?key= of a publishable key too).
  app.use(
    ingestRoute.getRoutingPath(),
    requireScopeForOtherMethods(deps.keys, "ingest", ["POST", "OPTIONS"]),
  );
  app.post(ingestRoute.getRoutingPath(), requireIngestKey(deps), ingest(deps));

  // A key limited to streams may list them: it is answered only its own (listStreams).
  app.use("/v1/streams", requireScope(deps.keys, "read", { listsStreams: true }));
  // PUT and DELETE need admin (definition_routes.ts): a key without it is told that, not "read".
  app.use(
    "/v1/streams/:stream",
    (c, next) => c.req.method === "PUT" || c.req.method === "DELETE" ? next() : readScope(c, next),
  );
  app.use("/v1/streams/:stream/counters/*", readScope);
  app.openapi(listStreamsRoute, listStreams(deps));
  app.openapi(getStreamRoute, getStream(deps));
  app.openapi(listWindowsRoute, listCounterWindows(deps));
  app.openapi(currentWindowRoute, getCurrentWindow(deps));

  app.use("/v1/admin/*", requireScope(deps.keys, "admin"));
  app.use(sweepRoute.getRoutingPath(), noBody(sweepRoute.method));
  app.openapi(sweepRoute, sweep(deps));
}
