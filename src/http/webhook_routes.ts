/**
 * The webhook endpoints (scope `admin`): register, list, change and delete
 * consumers, rotate their secrets, send a test, read the attempt log, replay
 * and retry deliveries. Secrets appear only in the reply to a registration
 * and to a rotation.
 *
 * @module
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import { createRoute, z } from "@hono/zod-openapi";
import {
  DurationError,
  formatDuration,
  MIN_RATE_PER_SECOND,
  parseDuration,
} from "../config/mod.ts";
import {
  type DeliveryWithAttempts,
  type EndpointInput,
  MAX_HEADER_VALUE_LENGTH,
  MAX_HEADERS,
  MAX_URL_LENGTH,
  type WebhookService,
} from "../fanout/webhooks/mod.ts";
import {
  BATCHABLE_EVENT_TYPES,
  batchedTypes,
  type Endpoint,
  FREE_INTERRUPTIONS,
  MAX_ATTEMPTS_LOGGED,
} from "../store/mod.ts";
import { MAX_EXPRESSION_LENGTH } from "../transform/mod.ts";
import { parseInstantText } from "../validate/mod.ts";
import { type KeyRing, requireScope } from "./auth.ts";
import { jsonBody, noBody } from "./body.ts";
import { ApiError } from "./errors.ts";
import { preconditionOf, STAR } from "./_etag.ts";
import { differentEntries, MAX_ENUM_LIST_ITEMS, repeatsRemoved } from "./_list_bounds.ts";
import {
  countQuery,
  CursorQuery,
  errorsFor,
  headersOf,
  jsonContent,
  nameText,
  NextCursor,
  NO_STORE,
  storedLimitConflict,
} from "./_openapi.ts";

const SUBSCRIBABLE = ["window.closed", "alert.fired", "event.processed", "event.late"] as const;

/** Most different streams an endpoint hears from, as a key's `streams`. */
const MAX_ENDPOINT_STREAMS = 256;

const errors = errorsFor(400, 401, 403, 404, 409, 503);
/** What a route with a JSON body may also answer: over 1 MiB, or not JSON. */
const bodyErrors = errorsFor(413, 415);

/**
 * Grouping of results into deliveries, in the one shape requests send and
 * replies show: the wait is a duration text, as the config file writes
 * durations; replies always name the grouped types.
 */
const BatchSchema = z.strictObject({
  maxEvents: z.int().min(1).max(1000).openapi({
    description:
      "Most results in one delivery. A batch holds results of one dispatched page of the stream's result log (500 entries), so it never holds more than 500",
    example: 100,
  }),
  maxWait: z.string().min(1).max(32).optional().openapi({
    description:
      "Longest wait for a batch of `event.processed` to fill, as a duration (`500ms`, `1s`, `1s500ms`; at most `1m`; default `1s`); `window.closed` and `alert.fired` batches never wait, so an endpoint batching only those needs none. Replies always show it, in its shortest exact form: `1500ms` reads back as `1s500ms`.",
    example: "1s",
  }),
  // Repeats are removed (by the registry), so the types' own number bounds the different ones: the
  // cap counts entries as sent, repeats included (see _list_bounds.ts).
  eventTypes: z.array(z.enum(BATCHABLE_EVENT_TYPES)).min(1).max(MAX_ENUM_LIST_ITEMS)
    .optional().openapi({
      description:
        `Types delivered in batches, each one the endpoint's \`eventTypes\` has; the others go one result per delivery. Default: \`event.processed\` when the endpoint takes it, else its \`window.closed\` and \`alert.fired\`.; ${
          repeatsRemoved({ cap: MAX_ENUM_LIST_ITEMS })
        }`,
      example: ["window.closed"],
    }),
}).openapi("WebhookBatch");

const endpointFields = {
  // The length bound is checked by EndpointRegistry with the encoded length, so that both are one
  // 400 invalid_webhook; the document still states it.
  url: z.string().min(1).openapi({
    maxLength: MAX_URL_LENGTH,
    description:
      `https URL (http only when allowed by config); must not reach internal addresses. Stored and shown as fetch requests it (WHATWG \`new URL(url).href\`: spaces and \`<>\` percent-encoded, the host in lower case, no \`#\` fragment, which no request carries), at most ${MAX_URL_LENGTH} characters as sent and so encoded; a longer one is 400 invalid_webhook`,
    example: "https://example.com/hooks/edgestream",
  }),
  // Repeats are removed (EndpointRegistry stores each once), so bounds count different entries,
  // as a key's, and each list has a raw cap as sent: see _list_bounds.ts.
  eventTypes: z.array(z.enum(SUBSCRIBABLE)).min(1).max(MAX_ENUM_LIST_ITEMS).openapi({
    description: `Types delivered (default: window.closed, alert.fired).; ${
      repeatsRemoved({ cap: MAX_ENUM_LIST_ITEMS })
    }`,
  }),
  // An empty list would hear from no stream: at least one, or null (or left out) for all.
  streams: differentEntries(nameText, {
    max: MAX_ENDPOINT_STREAMS,
    field: "streams",
    identity: (name) => name,
  }).nullable().openapi({
    description: `Streams heard from (at least one; ${
      repeatsRemoved({ different: MAX_ENDPOINT_STREAMS })
    }); null for all`,
  }),
  filter: z.string().min(1).max(MAX_EXPRESSION_LENGTH).nullable().openapi({
    description: "CEL over `payload` and `data`; only payloads for which it is true are sent",
    example: "payload.type != 'window.closed' || data.value > 100.0",
  }),
  description: z.string().max(1024).nullable(),
  // The bounds are checked with the other header rules (EndpointRegistry), so that every header
  // problem is one 400 invalid_webhook; the document still states them.
  headers: z.record(z.string(), z.string().openapi({ maxLength: MAX_HEADER_VALUE_LENGTH }))
    .openapi({
      description:
        `Extra request headers (values are never shown again): at most ${MAX_HEADERS}, names of at most 128 characters, values of at most ${MAX_HEADER_VALUE_LENGTH}; a header past these or that no delivery could send is 400 invalid_webhook`,
      maxProperties: MAX_HEADERS,
    }),
  rateLimit: z.number().min(MIN_RATE_PER_SECOND).max(100_000).nullable().openapi({
    description: "Most deliveries per second (at least 0.001: one in 1,000 s; at most 100,000)",
  }),
  batch: BatchSchema.nullable().openapi({
    description:
      "Several results of one type to a delivery (the types `batch.eventTypes` names, of `window.closed`, `alert.fired`, `event.processed`; without it `event.processed`, else the other two): `data` is an array of up to `maxEvents` results",
  }),
  disabled: z.boolean(),
};

const CreateBody = z.strictObject({
  url: endpointFields.url,
  eventTypes: endpointFields.eventTypes.optional(),
  streams: endpointFields.streams.optional(),
  filter: endpointFields.filter.optional(),
  description: endpointFields.description.optional(),
  headers: endpointFields.headers.optional(),
  rateLimit: endpointFields.rateLimit.optional(),
  batch: endpointFields.batch.optional(),
  disabled: endpointFields.disabled.optional(),
}).openapi("WebhookInput", {
  // One example of the whole body, so that the docs page's "Try it out" sends a registration the
  // quick start's server takes (built from the fields alone it named a random stream, headers
  // `additionalProp1`… and `"disabled": true`: 400 invalid_webhook).
  example: {
    url: "https://example.com/hooks/edgestream",
    eventTypes: ["window.closed", "alert.fired"],
    streams: ["orders"],
    filter: "payload.type != 'window.closed' || data.value > 100.0",
    description: "Busy minutes and alerts of the shop's orders",
    headers: { "X-Team": "shop" },
    rateLimit: 10,
    disabled: false,
  },
});

// Its own example, of a few fields: built from the fields, "Try it out" would also disable the
// endpoint (`"disabled": true`) and set headers `additionalProp1`….
const PatchBody = CreateBody.partial().openapi("WebhookPatch", {
  example: { description: "Busy minutes of the shop's orders, at most 5 a second", rateLimit: 5 },
});

/** An endpoint as the API shows it: no secrets, no header values. */
export const EndpointSchema = z.object({
  id: z.string().openapi({ example: "ep_4f1c0a9e2b7d4c3a8e6f5d2c1b0a9e8d" }),
  url: z.string(),
  description: z.string().nullable(),
  eventTypes: z.array(z.string()),
  streams: z.array(z.string()).nullable(),
  filter: z.string().nullable(),
  headerNames: z.array(z.string()),
  rateLimit: z.number().nullable(),
  batch: BatchSchema.nullable(),
  disabled: z.boolean(),
  disabledReason: z.string().nullable(),
  failingSince: z.string().nullable(),
  previousSecretExpiresAt: z.string().nullable().openapi({
    description: "While a rotated-out secret still signs: when it stops",
  }),
  createdAt: z.string(),
  updatedAt: z.string().openapi({
    description: "Last change: by the API, or a disable by a 410 or by failing for too long",
  }),
}).openapi("Webhook");

const CreatedSchema = EndpointSchema.extend({
  secret: z.string().openapi({
    description: "Signing secret; shown only now",
    example: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  }),
}).openapi("WebhookCreated");

const AttemptSchema = z.object({
  attempt: z.int(),
  at: z.string(),
  status: z.int().nullable().openapi({ description: "HTTP status; null without a response" }),
  durationMs: z.int(),
  error: z.string().nullable(),
  responseExcerpt: z.string().openapi({ description: "Start of the response body, ≤ 2 KB" }),
  outcome: z.enum(["succeeded", "retrying", "dead", "interrupted"]).openapi({
    description:
      `\`retrying\`: a retry is planned; \`dead\`: none is; \`interrupted\`: the sending instance stopped before the receiver answered (it may have got this attempt). The first ${FREE_INTERRUPTIONS} interruptions in a row use no retry: the delivery is sent again at once, its status and retry schedule unchanged. Each later one uses a retry as a failure does: \`nextAttemptAt\` is the retry's time, or null when none is left (the delivery is dead)`,
  }),
  nextAttemptAt: z.string().nullable(),
}).openapi("DeliveryAttempt");

const DeliverySchema = z.object({
  id: z.string(),
  messageId: z.string().openapi({
    description: "The webhook-id header, the same on every attempt",
  }),
  endpointId: z.string(),
  stream: z.string().nullable(),
  eventType: z.string(),
  status: z.enum(["pending", "retrying", "succeeded", "dead"]),
  attempts: z.int().openapi({
    description: "Attempts made, over every replay, `interrupted` ones included",
  }),
  firstAttemptAt: z.string().nullable().openapi({
    description:
      "When the first attempt started, over every replay; null before one. Kept when that attempt leaves `attemptLog`",
  }),
  interruptions: z.int().openapi({
    description:
      `\`interrupted\` attempts in a row since the last that was not (or since a replay); past ${FREE_INTERRUPTIONS}, each uses a retry`,
  }),
  nextAttemptAt: z.string().nullable(),
  lastStatus: z.int().nullable().openapi({
    description: "HTTP status of the last attempt not `interrupted`; null without a response",
  }),
  lastError: z.string().nullable().openapi({
    description:
      "Why the last attempt not `interrupted` failed (an interruption is in `attemptLog` only); null after a success",
  }),
  createdAt: z.string(),
  updatedAt: z.string(),
  payload: z.unknown(),
  attemptLog: z.array(AttemptSchema).openapi({
    description:
      `The newest ${MAX_ATTEMPTS_LOGGED} attempts, newest first (older ones are dropped)`,
  }),
}).openapi("Delivery");

/** An endpoint's `ETag`: its version, quoted, as a stream's is. */
const ETAG = {
  ETag: {
    description:
      'The version of the endpoint, quoted (`"3"`): send it back in `If-Match` to change, rotate or delete that version only. Every change by the API (a `PATCH`, a rotation of its secret) moves it; a disable by a 410, no change of its settings, does not',
    required: true,
    schema: { type: "string" as const },
    example: '"3"',
  },
};

/** `If-Match` and `If-None-Match` on a change or deletion of an endpoint (or of its secret). */
const PreconditionHeaders = z.object({
  "if-match": z.string().optional().openapi({
    description:
      'Entity tags (`"3"`, the `ETag` of `GET /v1/webhooks/{id}`) of the versions this write changes, comma-separated (empty elements ignored), or `*`; compared strongly (RFC 9110): a weak tag (`W/"3"`), or one that is no version (`"x"`), matches none (412 `precondition_failed`, nothing changed; an unknown id too); a header that is not entity tags is 400',
  }),
  // Checked by the handler (`preconditionOf`), to be refused in the words a stream's is; the
  // pattern documents what it takes.
  "if-none-match": z.string().optional().openapi({
    pattern: STAR.source,
    description:
      "`*`: only an endpoint that does not exist, so never (412 `precondition_failed` when it exists, nothing changed; 404 when not), as RFC 9110 evaluates it and as a stream's `DELETE` takes it (empty list elements beside it are ignored: `*,` is `*`); anything else is 400",
  }),
});

const EndpointParams = z.object({
  id: z.string().min(1).max(256).openapi({ param: { name: "id", in: "path" } }),
});

const DeliveryParams = z.object({
  deliveryId: z.string().min(1).max(512).openapi({ param: { name: "deliveryId", in: "path" } }),
});

/** `POST /v1/webhooks`. */
export const createWebhookRoute = createRoute({
  method: "post",
  path: "/v1/webhooks",
  operationId: "createWebhook",
  tags: ["webhooks"],
  summary: "Register a webhook endpoint. Scope: admin.",
  description:
    "The URL is checked now and before every attempt: it must be https (http only when allowed) and resolve to at least one address outside loopback, private, link-local, CGNAT, unique-local and other non-public ranges (or one EDGESTREAM_WEBHOOK_ALLOW allows); deliveries connect only to such an address. The reply holds the signing secret, shown only once.",
  request: { body: { required: true, content: { "application/json": { schema: CreateBody } } } },
  middleware: jsonBody(),
  responses: {
    201: {
      ...jsonContent(CreatedSchema, "Registered"),
      headers: { ...headersOf("Location"), ...NO_STORE, ...ETAG },
    },
    400: errors[400],
    401: errors[401],
    403: errors[403],
    ...storedLimitConflict("webhooks"),
    503: errors[503],
    ...bodyErrors,
  },
});

/** `GET /v1/webhooks`. */
export const listWebhooksRoute = createRoute({
  method: "get",
  path: "/v1/webhooks",
  operationId: "listWebhooks",
  tags: ["webhooks"],
  summary:
    "List webhook endpoints (without secrets), oldest first, a page at a time. Scope: admin.",
  request: {
    query: z.object({
      limit: countQuery(1000, "Most endpoints on the page (default 100)"),
      cursor: CursorQuery,
      stream: nameText.optional().openapi({
        description:
          "Only the endpoints that hear from this stream: those listing it in `streams`, and those of every stream (`streams: null`). The page is filtered after it is read: it may hold fewer than `limit` endpoints, even none, before the end",
        example: "orders",
      }),
    }),
  },
  responses: {
    200: jsonContent(
      z.object({ webhooks: z.array(EndpointSchema), nextCursor: NextCursor }).openapi(
        "WebhookPage",
      ),
      "Endpoints",
    ),
    400: errors[400],
    401: errors[401],
    403: errors[403],
    503: errors[503],
  },
});

/** `GET /v1/webhooks/{id}`. */
export const getWebhookRoute = createRoute({
  method: "get",
  path: "/v1/webhooks/{id}",
  operationId: "getWebhook",
  tags: ["webhooks"],
  summary: "A webhook endpoint (without secrets). Scope: admin.",
  request: { params: EndpointParams },
  responses: {
    200: { ...jsonContent(EndpointSchema, "Endpoint"), headers: ETAG },
    401: errors[401],
    403: errors[403],
    404: errors[404],
    503: errors[503],
  },
});

/** `PATCH /v1/webhooks/{id}`. */
export const updateWebhookRoute = createRoute({
  method: "patch",
  path: "/v1/webhooks/{id}",
  operationId: "updateWebhook",
  tags: ["webhooks"],
  summary: "Change a webhook endpoint; `disabled: false` re-enables it. Scope: admin.",
  description:
    'The body is checked before the id is looked up: a body it refuses is 400 (invalid_request, or invalid_webhook for a field no endpoint can have) whatever the id, and a body that passes is 404 for an unknown id. `batch` is checked against the endpoint\'s `eventTypes`, so with an unknown id it is 404 first. `If-Match: "<version>"` (the `ETag` of `GET /v1/webhooks/{id}`) changes only that version: otherwise 412 `precondition_failed`, nothing changed; so is `If-None-Match: *`, the endpoint existing.',
  request: {
    params: EndpointParams,
    headers: PreconditionHeaders,
    body: { required: true, content: { "application/json": { schema: PatchBody } } },
  },
  middleware: jsonBody(),
  responses: {
    200: { ...jsonContent(EndpointSchema, "Changed"), headers: ETAG },
    ...errors,
    ...errorsFor(412),
    ...bodyErrors,
  },
});

/** `DELETE /v1/webhooks/{id}`. */
export const deleteWebhookRoute = createRoute({
  method: "delete",
  path: "/v1/webhooks/{id}",
  operationId: "deleteWebhook",
  tags: ["webhooks"],
  summary: "Delete a webhook endpoint and its queue. Scope: admin.",
  description:
    '`If-Match: "<version>"` (the `ETag` of `GET /v1/webhooks/{id}`) deletes only that version: otherwise 412 `precondition_failed`, nothing deleted; so is `If-None-Match: *`, the endpoint existing.',
  request: { params: EndpointParams, headers: PreconditionHeaders },
  responses: {
    204: { description: "Deleted" },
    400: errors[400],
    401: errors[401],
    403: errors[403],
    404: errors[404],
    ...errorsFor(412),
    503: errors[503],
  },
});

/** `POST /v1/webhooks/{id}/rotate-secret`. */
export const rotateSecretRoute = createRoute({
  method: "post",
  path: "/v1/webhooks/{id}/rotate-secret",
  operationId: "rotateWebhookSecret",
  tags: ["webhooks"],
  summary: "New signing secret; the old one keeps signing alongside it for 24 h. Scope: admin.",
  description:
    'A rotation is a change of the endpoint: it moves its version, answered as `ETag`. `If-Match: "<version>"` (the `ETag` of `GET /v1/webhooks/{id}`) rotates only that version: otherwise 412 `precondition_failed`, nothing rotated; so is `If-None-Match: *`, the endpoint existing.',
  request: { params: EndpointParams, headers: PreconditionHeaders },
  responses: {
    200: {
      ...jsonContent(
        z.object({
          id: z.string(),
          secret: z.string().openapi({ description: "The new secret; shown only now" }),
          previousSecretExpiresAt: z.string(),
        }).openapi("RotatedSecret"),
        "Rotated",
      ),
      headers: { ...NO_STORE, ...ETAG },
    },
    ...errors,
    // A body (it takes none, or {}) in a Content-Encoding other than gzip or deflate.
    ...errorsFor(412, 415),
  },
});

/** `POST /v1/webhooks/{id}/test`. */
export const testWebhookRoute = createRoute({
  method: "post",
  path: "/v1/webhooks/{id}/test",
  operationId: "testWebhook",
  tags: ["webhooks"],
  summary: "Send a webhook.test delivery now (in the background). Scope: admin.",
  request: { params: EndpointParams },
  responses: {
    202: jsonContent(z.object({ delivery: DeliverySchema }), "Queued"),
    ...errors,
    // A body (it takes none, or {}) in a Content-Encoding other than gzip or deflate.
    ...errorsFor(415),
  },
});

/** `GET /v1/webhooks/{id}/deliveries`. */
export const listDeliveriesRoute = createRoute({
  method: "get",
  path: "/v1/webhooks/{id}/deliveries",
  operationId: "listDeliveries",
  tags: ["webhooks"],
  summary:
    "An endpoint's deliveries with their attempt logs, newest first, a page at a time. Scope: admin.",
  request: {
    params: EndpointParams,
    query: z.object({
      status: z.enum(["pending", "retrying", "succeeded", "dead"]).optional(),
      // Lower than the endpoint list's: each delivery carries up to 50 attempts.
      limit: countQuery(200, "Most deliveries on the page (default 20)"),
      cursor: CursorQuery,
    }),
  },
  responses: {
    200: jsonContent(
      z.object({ deliveries: z.array(DeliverySchema), nextCursor: NextCursor }).openapi(
        "DeliveryPage",
      ),
      "Deliveries",
    ),
    ...errors,
  },
});

/** `POST /v1/webhooks/{id}/replay`. */
export const replayRoute = createRoute({
  method: "post",
  path: "/v1/webhooks/{id}/replay",
  operationId: "replayDeliveries",
  tags: ["webhooks"],
  summary: "Re-send failed and dead deliveries created since a time. Scope: admin.",
  request: {
    params: EndpointParams,
    body: {
      required: true,
      content: {
        "application/json": {
          schema: z.strictObject({
            since: z.union([z.string().min(1).max(64), z.number().int()]).openapi({
              description:
                "ISO-8601 (UTC when it has no offset), or epoch milliseconds as an integer or its text",
              example: "2026-01-01T00:00:00Z",
            }),
          }).openapi({ example: { since: "2026-01-01T00:00:00Z" } }),
        },
      },
    },
  },
  middleware: jsonBody(),
  responses: {
    202: jsonContent(z.object({ requeued: z.int() }), "Requeued"),
    ...errors,
    ...bodyErrors,
  },
});

/** `POST /v1/deliveries/{deliveryId}/retry`. */
export const retryDeliveryRoute = createRoute({
  method: "post",
  path: "/v1/deliveries/{deliveryId}/retry",
  operationId: "retryDelivery",
  tags: ["webhooks"],
  summary: "Re-send one delivery now, with a fresh retry schedule. Scope: admin.",
  request: { params: DeliveryParams },
  responses: {
    202: jsonContent(z.object({ delivery: DeliverySchema }), "Requeued"),
    ...errors,
    // A body (it takes none, or {}) in a Content-Encoding other than gzip or deflate.
    ...errorsFor(415),
  },
});

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** The public view of an endpoint: no secret, no header value. */
export function endpointView(endpoint: Endpoint, nowMs: number): z.infer<typeof EndpointSchema> {
  const expiring = endpoint.secrets
    .map((item) => item.expiresMs)
    .filter((ms): ms is number => ms !== null && ms > nowMs);
  return {
    id: endpoint.id,
    url: endpoint.url,
    description: endpoint.description,
    eventTypes: endpoint.eventTypes,
    streams: endpoint.streams,
    filter: endpoint.filter,
    headerNames: Object.keys(endpoint.headers),
    rateLimit: endpoint.rateLimit,
    batch: endpoint.batch === null ? null : {
      maxEvents: endpoint.batch.maxEvents,
      maxWait: formatDuration(endpoint.batch.maxWaitMs),
      eventTypes: [...batchedTypes(endpoint.batch)],
    },
    disabled: endpoint.disabled,
    disabledReason: endpoint.disabledReason,
    failingSince: iso(endpoint.failingSinceMs),
    previousSecretExpiresAt: expiring.length > 0 ? iso(Math.max(...expiring)) : null,
    createdAt: iso(endpoint.createdMs)!,
    updatedAt: iso(endpoint.updatedMs)!,
  };
}

function parsePayload(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function deliveryView(delivery: DeliveryWithAttempts): z.infer<typeof DeliverySchema> {
  return {
    id: delivery.id,
    messageId: delivery.messageId,
    endpointId: delivery.endpointId,
    stream: delivery.stream,
    eventType: delivery.eventType,
    status: delivery.status,
    attempts: delivery.attempts,
    firstAttemptAt: iso(delivery.firstAttemptMs),
    interruptions: delivery.interruptions,
    nextAttemptAt: iso(delivery.nextAttemptMs),
    lastStatus: delivery.lastStatus,
    lastError: delivery.lastError,
    createdAt: iso(delivery.createdMs)!,
    updatedAt: iso(delivery.updatedMs)!,
    payload: parsePayload(delivery.payload),
    attemptLog: delivery.attemptLog.map((attempt) => ({
      attempt: attempt.attempt,
      at: iso(attempt.timeMs)!,
      status: attempt.status,
      durationMs: attempt.durationMs,
      error: attempt.error,
      responseExcerpt: attempt.responseExcerpt,
      outcome: attempt.outcome,
      nextAttemptAt: iso(attempt.nextAttemptMs),
    })),
  };
}

type BodyInput = z.infer<typeof PatchBody>;

/** A batch's `maxWait` when the request gives none: it holds only `event.processed`. */
const DEFAULT_BATCH_MAX_WAIT_MS = 1_000;

/** Converts a request body to service input: durations parsed, absent fields left out. */
function toInput(body: BodyInput): Partial<EndpointInput> {
  const { batch, ...rest } = body;
  const input: Partial<EndpointInput> = { ...rest };
  if (batch === null) input.batch = null;
  else if (batch !== undefined) {
    let maxWaitMs = DEFAULT_BATCH_MAX_WAIT_MS;
    try {
      if (batch.maxWait !== undefined) maxWaitMs = parseDuration(batch.maxWait);
    } catch (error) {
      if (!(error instanceof DurationError)) throw error;
      throw new ApiError(
        400,
        "invalid_request",
        `Invalid request body batch.maxWait: ${error.message}`,
      );
    }
    if (maxWaitMs > 60_000) {
      throw new ApiError(
        400,
        "invalid_request",
        `Invalid request body batch.maxWait: at most 1m, got ${batch.maxWait}`,
      );
    }
    input.batch = { maxEvents: batch.maxEvents, maxWaitMs };
    if (batch.eventTypes !== undefined) input.batch.eventTypes = batch.eventTypes;
  }
  return input;
}

/** What {@linkcode registerWebhookRoutes} needs. */
export interface WebhookRouteDeps {
  /** The service behind the routes. */
  webhooks: WebhookService;
  /** API keys; every route needs the `admin` scope. */
  keys: KeyRing;
  /** Clock (ms). @default {Date.now} */
  now?: () => number;
}

/**
 * Adds the webhook endpoints to `app`.
 *
 * @example
 * ```ts
 * import { OpenAPIHono } from "@hono/zod-openapi";
 * import { compileConfig } from "../config/mod.ts";
 * import { UrlPolicy, WebhookService } from "../fanout/webhooks/mod.ts";
 * import { MemoryDeliveryStore, MemoryStore } from "../store/mod.ts";
 * import { KeyRing } from "./auth.ts";
 * import { registerWebhookRoutes } from "./webhook_routes.ts";
 *
 * const webhooks = new WebhookService({
 *   store: new MemoryStore(),
 *   streams: compileConfig({
 *     streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
 *   }),
 *   deliveries: new MemoryDeliveryStore(),
 *   policy: new UrlPolicy(),
 * });
 * const app = new OpenAPIHono();
 * registerWebhookRoutes(app, { webhooks, keys: await KeyRing.parse("") });
 * ```
 */
export function registerWebhookRoutes(app: OpenAPIHono, deps: WebhookRouteDeps): void {
  const { webhooks } = deps;
  const now = deps.now ?? Date.now;
  const view = (endpoint: Endpoint) => endpointView(endpoint, now());
  const admin = requireScope(deps.keys, "admin");
  app.use("/v1/webhooks", admin);
  app.use("/v1/webhooks/*", admin);
  app.use("/v1/deliveries/*", admin);
  for (const route of [rotateSecretRoute, testWebhookRoute, retryDeliveryRoute]) {
    app.use(route.getRoutingPath(), noBody(route.method));
  }

  app.openapi(createWebhookRoute, async (c) => {
    const body = c.req.valid("json");
    const { endpoint, secret } = await webhooks.createEndpoint({ ...toInput(body), url: body.url });
    c.header("Location", `/v1/webhooks/${endpoint.id}`);
    c.header("ETag", `"${endpoint.version}"`);
    // The one answer, with the rotation's, that holds the secret: no cache may keep it.
    c.header("Cache-Control", "no-store");
    return c.json({ ...view(endpoint), secret }, 201);
  });

  app.openapi(listWebhooksRoute, async (c) => {
    const { limit, cursor, stream } = c.req.valid("query");
    const page = await webhooks.pageEndpoints({ limit: limit ?? 100, cursor });
    const items = stream === undefined
      ? page.items
      : page.items.filter((endpoint) => endpoint.streams?.includes(stream) ?? true);
    return c.json({ webhooks: items.map(view), nextCursor: page.nextCursor }, 200);
  });

  app.openapi(getWebhookRoute, async (c) => {
    const endpoint = await webhooks.getEndpoint(c.req.valid("param").id);
    // What PATCH and DELETE take in If-Match.
    c.header("ETag", `"${endpoint.version}"`);
    return c.json(view(endpoint), 200);
  });

  app.openapi(updateWebhookRoute, async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    const expected = preconditionOf(c.req.valid("header"), "endpoint");
    const endpoint = await webhooks.updateEndpoint(id, toInput(body), expected);
    c.header("ETag", `"${endpoint.version}"`);
    return c.json(view(endpoint), 200);
  });

  app.openapi(deleteWebhookRoute, async (c) => {
    const expected = preconditionOf(c.req.valid("header"), "endpoint");
    await webhooks.deleteEndpoint(c.req.valid("param").id, expected);
    return c.body(null, 204);
  });

  app.openapi(rotateSecretRoute, async (c) => {
    const { id } = c.req.valid("param");
    const expected = preconditionOf(c.req.valid("header"), "endpoint");
    const { secret, previousExpiresMs, version } = await webhooks.rotateSecret(id, expected);
    c.header("ETag", `"${version}"`);
    c.header("Cache-Control", "no-store");
    return c.json({ id, secret, previousSecretExpiresAt: iso(previousExpiresMs)! }, 200);
  });

  app.openapi(testWebhookRoute, async (c) => {
    const delivery = await webhooks.sendTest(c.req.valid("param").id);
    return c.json({ delivery: deliveryView({ ...delivery, attemptLog: [] }) }, 202);
  });

  app.openapi(listDeliveriesRoute, async (c) => {
    const { id } = c.req.valid("param");
    const query = c.req.valid("query");
    const page = await webhooks.listDeliveries(id, {
      limit: query.limit ?? 20,
      status: query.status,
      cursor: query.cursor,
    });
    return c.json({ deliveries: page.items.map(deliveryView), nextCursor: page.nextCursor }, 200);
  });

  app.openapi(replayRoute, async (c) => {
    const { id } = c.req.valid("param");
    const { since } = c.req.valid("json");
    const sinceMs = typeof since === "number"
      ? (Math.abs(since) <= 8.64e15 ? since : null)
      // Compared with whole-millisecond creation times: a time past a millisecond is after it
      // (`…00.0001Z` does not replay a delivery created at `…00.000Z`), as for a counter bound.
      : parseInstantText(since, "ceil");
    if (sinceMs === null) {
      throw new ApiError(
        400,
        "invalid_request",
        `Invalid request body since: not a time: ${since}`,
      );
    }
    const requeued = await webhooks.replay(id, sinceMs);
    return c.json({ requeued }, 202);
  });

  app.openapi(retryDeliveryRoute, async (c) => {
    const delivery = await webhooks.retryDelivery(c.req.valid("param").deliveryId);
    return c.json({ delivery: deliveryView(delivery) }, 202);
  });
}
