/**
 * Every HTTP route with its zod request and response schemas, in one place;
 * the OpenAPI document at `/openapi.json` is generated from them.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** The error envelope. */
export const ErrorSchema = z.object({
  error: z.object({
    code: z.string().openapi({ example: "stream_not_found" }),
    message: z.string().openapi({ example: "Stream 'orders' is not configured" }),
  }),
}).openapi("Error");

const FieldErrorSchema = z.object({ path: z.string(), message: z.string() });

/** Reply to an ingest request. */
export const IngestReplySchema = z.object({
  accepted: z.int().openapi({
    description: "Events acknowledged (incl. duplicates, late, filtered)",
  }),
  duplicates: z.int(),
  late: z.int(),
  filtered: z.int(),
  rejected: z.array(z.object({ index: z.int(), errors: z.array(FieldErrorSchema) })),
}).openapi("IngestReply");

const StreamParams = z.object({
  stream: z.string().regex(NAME).openapi({
    param: { name: "stream", in: "path" },
    example: "orders",
  }),
});

const CounterParams = StreamParams.extend({
  counter: z.string().regex(NAME).openapi({
    param: { name: "counter", in: "path" },
    example: "revenue_per_minute",
  }),
});

const StatsSchema = z.object({
  watermark: z.string().nullable(),
  accepted: z.int(),
  applied: z.int(),
  duplicates: z.int(),
  late: z.int(),
  filtered: z.int(),
  overflow: z.record(z.string(), z.int()),
}).openapi("StreamStats");

/** A stream as listed. */
export const StreamSchema = z.object({
  name: z.string(),
  description: z.string().optional(),
  definition: z.unknown(),
  counters: z.array(z.string()),
  stats: StatsSchema,
}).openapi("Stream");

const WindowRowSchema = z.object({
  start: z.string(),
  end: z.string(),
  group: z.record(z.string(), z.unknown()),
  value: z.number().nullable(),
  final: z.boolean(),
  approximate: z.boolean().optional(),
}).openapi("WindowRow");

const TimeParam = z.string().regex(
  /^-?\d+$|^\d{4}-/,
  "Expected ISO-8601 time or epoch milliseconds",
)
  .optional();

const errors = {
  400: { description: "Bad request", content: { "application/json": { schema: ErrorSchema } } },
  401: {
    description: "Missing or invalid key",
    content: { "application/json": { schema: ErrorSchema } },
  },
  403: {
    description: "Key lacks the scope",
    content: { "application/json": { schema: ErrorSchema } },
  },
  404: { description: "Not found", content: { "application/json": { schema: ErrorSchema } } },
  503: {
    description: "Store unavailable",
    content: { "application/json": { schema: ErrorSchema } },
  },
} as const;

/** JSON Schema of an ingest body, for the document only: bodies are read by hand to enforce limits. */
const ingestBodyDoc = {
  oneOf: [
    { type: "object" as const, description: "One event" },
    {
      type: "array" as const,
      items: { type: "object" as const },
      maxItems: 1000,
      description: "A batch",
    },
  ],
};

/** `POST /v1/streams/{stream}/events`. */
export const ingestRoute = createRoute({
  method: "post",
  path: "/v1/streams/{stream}/events",
  summary: "Send events",
  description:
    "One event object, an array of up to 1000 events, or NDJSON (one event per line). The reply is sent after the store applied the batch. Scope: ingest.",
  request: {
    params: StreamParams,
    body: {
      required: false,
      content: {
        "application/json": { schema: ingestBodyDoc },
        "application/x-ndjson": { schema: { type: "string" as const } },
      },
    },
  },
  responses: {
    202: {
      description: "Accepted",
      content: { "application/json": { schema: IngestReplySchema } },
    },
    ...errors,
    413: { description: "Too large", content: { "application/json": { schema: ErrorSchema } } },
    415: {
      description: "Unsupported media type",
      content: { "application/json": { schema: ErrorSchema } },
    },
  },
});

/** `GET /v1/streams`. */
export const listStreamsRoute = createRoute({
  method: "get",
  path: "/v1/streams",
  summary: "List streams with stats. Scope: read.",
  responses: {
    200: {
      description: "Streams",
      content: { "application/json": { schema: z.object({ streams: z.array(StreamSchema) }) } },
    },
    401: errors[401],
    403: errors[403],
    503: errors[503],
  },
});

/** `GET /v1/streams/{stream}`. */
export const getStreamRoute = createRoute({
  method: "get",
  path: "/v1/streams/{stream}",
  summary: "A stream's definition and stats. Scope: read.",
  request: { params: StreamParams },
  responses: {
    200: { description: "Stream", content: { "application/json": { schema: StreamSchema } } },
    ...errors,
  },
});

/** `GET /v1/streams/{stream}/counters/{counter}`. */
export const listWindowsRoute = createRoute({
  method: "get",
  path: "/v1/streams/{stream}/counters/{counter}",
  summary: "Windows of a counter, newest first",
  description:
    "Filter groups with `group.<field>=<value>` (repeatable per field; `null` matches a missing value). Scope: read.",
  request: {
    params: CounterParams,
    query: z.object({
      from: TimeParam.openapi({ description: "Earliest window start (ISO-8601 or epoch ms)" }),
      to: TimeParam.openapi({ description: "Windows start before this" }),
      limit: z.coerce.number().int().min(1).max(1000).optional().openapi({
        description: "Most rows (default 100)",
      }),
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
          }),
        },
      },
    },
    ...errors,
  },
});

/** `GET /v1/streams/{stream}/counters/{counter}/current`. */
export const currentWindowRoute = createRoute({
  method: "get",
  path: "/v1/streams/{stream}/counters/{counter}/current",
  summary: "The window containing now, per group",
  description: "For sliding windows: the last `size` up to now. Scope: read.",
  request: { params: CounterParams },
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
          }),
        },
      },
    },
    ...errors,
  },
});

/** `GET /readyz`. */
export const readyRoute = createRoute({
  method: "get",
  path: "/readyz",
  summary: "Readiness: the store is reachable",
  responses: {
    200: {
      description: "Ready",
      content: {
        "application/json": { schema: z.object({ status: z.string(), store: z.string() }) },
      },
    },
    503: {
      description: "Store unavailable",
      content: {
        "application/json": {
          schema: z.object({ status: z.string(), store: z.string(), error: z.string() }),
        },
      },
    },
  },
});

/** `POST /v1/admin/sweep`. */
export const sweepRoute = createRoute({
  method: "post",
  path: "/v1/admin/sweep",
  summary:
    "Run one sweep now: close windows that became final, fire alerts on their final values, dispatch and send webhook deliveries. Scope: admin.",
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
              groups: z.array(z.object({
                group: z.record(z.string(), z.unknown()),
                value: z.number().nullable(),
              })),
            })),
            fired: z.array(z.object({
              stream: z.string(),
              alert: z.string(),
              counter: z.string(),
              start: z.string(),
              end: z.string(),
              group: z.record(z.string(), z.unknown()),
              value: z.number().nullable(),
            })).openapi({ description: "Alerts the final values fired (new firings only)" }),
          }),
        },
      },
    },
    401: errors[401],
    403: errors[403],
    503: errors[503],
  },
});
