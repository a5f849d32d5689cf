/**
 * What every route module's OpenAPI definitions share: the error envelope's
 * schema, the one table of error responses, the JSON content helper, and the
 * documented routes (for 405s).
 *
 * @module
 */
import { z } from "@hono/zod-openapi";
import { ERROR_CODES, NAME, nameMessage, STORED_LIMITS } from "./errors.ts";
import type { StoredKind } from "../store/limits.ts";
import { quoteInput } from "../telemetry/logging.ts";

/** The error envelope. */
export const ErrorSchema = z.object({
  error: z.object({
    code: z.string().openapi({
      description: `Machine-readable, one of README's "Error codes": ${
        Object.keys(ERROR_CODES).join(", ")
      } (a later release may add one: treat an unknown one by its status)`,
      example: "stream_not_found",
    }),
    message: z.string().openapi({ example: "Stream 'orders' does not exist" }),
    details: z.record(z.string(), z.unknown()).optional().openapi({
      description:
        "More about some errors: a 503 from the store says `outcome` (`unknown`: a write may have been applied, so resend an ingest request with the same Idempotency-Key, and read the state back before sending another write again, except the admin sweep, always safe to send again; `not_applied`: nothing was applied)",
      example: { outcome: "unknown" },
    }),
    requestId: z.string().openapi({
      description: "The request's id, also in the `X-Request-Id` response header and the logs",
      example: "3f1c9a52-7e0b-4d8e-9a57-1b2f6c0d4e8a",
    }),
  }),
}).openapi("Error");

/** Names of streams, counters and endpoints in paths. */
export { NAME };

/** A name (stream, counter) in a path or a body: {@linkcode NAME}, refused with {@linkcode nameMessage}. */
export const nameText = z.string().regex(NAME, { error: (issue) => nameMessage(issue.input) });

/** The `cursor` query parameter of a list: where the previous page ended. */
// No bounds of its own: what the list did not give out (empty, too long) is its invalid_cursor.
export const CursorQuery = z.string().optional().openapi({
  description:
    "The `nextCursor` of the previous page, as it was; omit for the first page. Opaque (not signed); one not in the form this list gives is a 400 `invalid_cursor`.",
});

/**
 * A count in a query parameter (`limit`, `top`): a whole number from 1 to `max`, in decimal
 * digits alone. `Number` would also take `0x10`, `1e1`, `+5` or ` 5` (`z.coerce` did), and call
 * `abc` NaN: each is refused saying what is taken and what was sent. Documented as the integer it
 * is read as.
 */
export function countQuery(max: number, description: string) {
  const error = (issue: { input?: unknown }) =>
    `expected a whole number from 1 to ${max}, received '${quoteInput(String(issue.input))}'`;
  return z.string().regex(/^[0-9]{1,16}$/, { error })
    .transform(Number)
    .pipe(z.number().int().min(1, { error }).max(max, { error }))
    .optional()
    .openapi({ type: "integer", minimum: 1, maximum: max, description });
}

/** The `nextCursor` of a list reply. */
export const NextCursor = z.string().nullable().openapi({
  description:
    "Pass as `cursor` for the next page; null when the list ended. Following it until null gives every item that exists throughout exactly once, while items are added or removed. A page may hold fewer than `limit` items while it is not null.",
});

const errorContent = { "application/json": { schema: ErrorSchema } };

/** An OpenAPI header object, as the generator passes it through. */
interface ResponseHeader {
  description: string;
  required?: boolean;
  schema: { type: "string" | "integer"; minimum?: number; enum?: string[] };
  example?: unknown;
}

/**
 * The response headers the API sends, as OpenAPI header objects: routes name those they send with
 * {@linkcode headersOf}. `X-Request-Id` (every answer) and `Allow` (405, every route) are added to
 * every operation when the document is generated (`api_document.ts`).
 */
export const RESPONSE_HEADERS = {
  "Retry-After": {
    description: "Whole seconds to wait before sending the request again",
    required: true,
    schema: { type: "integer", minimum: 1 },
    example: 1,
  },
  "RateLimit-Policy": {
    description:
      'The limit that refused the request (IETF draft `ratelimit-headers`): `"<name>";q=<events>;w=<seconds>`, `<name>` being `stream` or `key`. Sent when the limit is known',
    schema: { type: "string" },
    example: '"stream";q=1000;w=2',
  },
  "RateLimit": {
    description:
      'What is left of that limit now: `"<name>";r=<remaining events>;t=<seconds until the request fits>`. Sent with `RateLimit-Policy`',
    schema: { type: "string" },
    example: '"stream";r=3;t=1',
  },
  "ETag": {
    description:
      'The version of the stream definition this instance serves, quoted (`"3"`): send it back in `If-Match` to change or delete that version only',
    required: true,
    schema: { type: "string" },
    example: '"3"',
  },
  "Idempotent-Replayed": {
    description:
      "`true` when this is the stored reply to an earlier request with the same `Idempotency-Key` and body: nothing was applied again. Absent otherwise",
    schema: { type: "string", enum: ["true"] },
  },
  "X-Request-Id": {
    description:
      "The request's id: the request's own `X-Request-Id` when it is 1 to 128 characters of `[A-Za-z0-9._-]`, else a new UUID. An error body repeats it as `error.requestId`",
    required: true,
    schema: { type: "string" },
    example: "3f1c9a52-7e0b-4d8e-9a57-1b2f6c0d4e8a",
  },
  "X-Content-Type-Options": {
    description:
      "`nosniff`: a browser reads the reply only as its `Content-Type` says. On every answer",
    required: true,
    schema: { type: "string", enum: ["nosniff"] },
  },
  "Allow": {
    description: "The methods the path takes",
    required: true,
    schema: { type: "string" },
    example: "GET, HEAD, PUT, DELETE",
  },
  "Upgrade": {
    description: "The protocol the endpoint takes: `websocket`",
    required: true,
    schema: { type: "string", enum: ["websocket"] },
  },
  "Location": {
    description: "The path of what was created, where a `GET` reads it",
    required: true,
    schema: { type: "string" },
    example: "/v1/keys/key_3f1c9a527e0b4d8e",
  },
  "Cache-Control": {
    description: "`no-cache`: a cache may keep the answer but must ask again before using it",
    required: true,
    schema: { type: "string", enum: ["no-cache"] },
  },
  "Vary": {
    description: "The request headers the answer depends on",
    schema: { type: "string" },
    example: "Origin",
  },
  "Access-Control-Allow-Origin": {
    description:
      "To a page whose `Origin` the key's or the stream's `origins` admit (CORS), and on an error to any page (a refused origin's `403 origin_not_allowed` too, so that it reads why): that origin",
    schema: { type: "string" },
    example: "https://shop.example",
  },
  "Access-Control-Expose-Headers": {
    description: "With `Access-Control-Allow-Origin`: the headers a page may read",
    schema: { type: "string" },
  },
} as const satisfies Record<string, ResponseHeader>;

/** The rows of `table` named by `keys`. */
function rowsOf<T, K extends keyof T>(table: T, keys: readonly K[]): Pick<T, K> {
  const picked = {} as Pick<T, K>;
  for (const key of keys) picked[key] = table[key];
  return picked;
}

/** The rows of {@linkcode RESPONSE_HEADERS} named, for a response's `headers`. */
export function headersOf<N extends keyof typeof RESPONSE_HEADERS>(
  ...names: N[]
): Pick<typeof RESPONSE_HEADERS, N> {
  return rowsOf(RESPONSE_HEADERS, names);
}

/** The `Cache-Control` of an answer that holds a secret shown only then (a key's, a webhook's). */
export const NO_STORE = {
  "Cache-Control": {
    description: "`no-store`: the answer holds a secret, shown only now, which no cache may keep",
    required: true,
    schema: { type: "string" as const, enum: ["no-store"] },
  },
};

/** The error responses routes declare, by status: pick the ones a route can give. */
export const errorResponses = {
  400: { description: "Bad request", content: errorContent },
  401: { description: "Missing or invalid key", content: errorContent },
  403: {
    description: "Key lacks the scope, or the request's Origin is not allowed",
    content: errorContent,
  },
  404: { description: "Not found", content: errorContent },
  406: { description: "Not an acceptable representation", content: errorContent },
  408: { description: "Body not received in time", content: errorContent },
  409: {
    description: "Conflicts with the current state (or a request in progress)",
    content: errorContent,
  },
  412: {
    description: "If-Match or If-None-Match does not hold (changed meanwhile)",
    content: errorContent,
  },
  413: { description: "Too large", content: errorContent },
  415: { description: "Unsupported media type", content: errorContent },
  422: { description: "Idempotency-Key reused with another body", content: errorContent },
  426: {
    description: "Not a WebSocket upgrade",
    headers: headersOf("Upgrade"),
    content: errorContent,
  },
  429: {
    description: "Rate limited (see Retry-After)",
    headers: headersOf("Retry-After", "RateLimit-Policy", "RateLimit"),
    content: errorContent,
  },
  503: {
    description: "Store unavailable, or the server is shutting down or full (see Retry-After)",
    headers: headersOf("Retry-After"),
    content: errorContent,
  },
} as const;

/**
 * The 429 of a live subscription refused by its key's bound (`too_many_subscriptions`): only
 * `Retry-After`, no rate-limit policy.
 */
export const subscriptionLimitResponse = {
  429: {
    description: "Too many live subscriptions of this key on this server (see Retry-After)",
    headers: headersOf("Retry-After"),
    content: errorContent,
  },
} as const;

/**
 * The 429 of a WebSocket ingest connection refused by its key's bound
 * (`too_many_ingest_sockets`): only `Retry-After`, no rate-limit policy.
 */
export const ingestSocketLimitResponse = {
  429: {
    description:
      "Too many WebSocket ingest connections of this key on this server (see Retry-After)",
    headers: headersOf("Retry-After"),
    content: errorContent,
  },
} as const;

/**
 * The 409 of a route that creates what a deployment holds a bounded number of: a conflict with
 * what is stored, or the bound held (`too_many_keys`, …, naming its setting).
 */
export function storedLimitConflict(kind: StoredKind) {
  const { code, setting } = STORED_LIMITS[kind];
  return {
    409: {
      description:
        `Conflicts with the current state, or the deployment holds the most it may: \`${code}\` (${setting}); delete one first`,
      content: errorContent,
    },
  };
}

/** A JSON response of `schema`. */
export function jsonContent<T extends z.ZodType>(schema: T, description: string) {
  return { description, content: { "application/json": { schema } } };
}

/** The rows of {@linkcode errorResponses} for these statuses. */
export function errorsFor<S extends keyof typeof errorResponses>(
  ...statuses: S[]
): Pick<typeof errorResponses, S> {
  return rowsOf(errorResponses, statuses);
}
