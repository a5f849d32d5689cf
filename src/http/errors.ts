/**
 * The one error envelope every error response uses:
 * `{"error": {"code": "stream_not_found", "message": "…", "requestId": "…"}}`,
 * where `requestId` is the request's `X-Request-Id` (see `request_id.ts`).
 *
 * @module
 */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { getPath } from "hono/utils/url";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import {
  InvalidEndpointError,
  WebhookConflictError,
  WebhookNotFoundError,
  WebhookPreconditionError,
} from "../fanout/webhooks/mod.ts";
import { IdempotencyError, RateLimitedError, refillSecondsOf } from "../ingest/mod.ts";
import {
  NAME,
  NAME_RULE,
  type StreamCatalog,
  StreamDefinitionError,
  type UnservableStream,
} from "../config/mod.ts";
import { InvalidCursorError } from "../store/deliveries.ts";
import { meantKey } from "../validate/mod.ts";
import { KeyConflictError } from "../store/keys.ts";
import { STORED_NOUNS, type StoredKind, StoredLimitError } from "../store/limits.ts";
import { recordStoredRefused } from "../telemetry/metrics.ts";
import { StoreUnavailableError, StreamChangedError } from "../store/types.ts";
import { BodyError, type BodyErrorCode } from "./body.ts";
import { isIngestRequest } from "./_ingest_path.ts";
import { requestIdOf } from "./request_id.ts";
import { quoteInput } from "../telemetry/logging.ts";
import { SLOT_RETRY_AFTER_SECONDS, type SlotKind, SlotLimitError } from "./connection_slots.ts";

export { NAME };

/** What a name takes, and the name given (quoted within bounds): one wording on every route. */
export function nameMessage(given: unknown): string {
  return `${NAME_RULE}, got ${typeof given === "string" ? `'${quoteInput(given)}'` : typeof given}`;
}

/** The 400 of a path parameter that is no name, worded as the routes' parameter schemas word it. */
export function invalidNameParameter(parameter: string, given: string): ApiError {
  return new ApiError(
    400,
    "invalid_request",
    `Invalid path parameter ${parameter}: ${nameMessage(given)}`,
  );
}

/**
 * Every code an error answer (or an ingest WebSocket frame's `error`) carries, with the statuses
 * it comes with and when: the one list of codes, which README's "Error codes" table repeats (a
 * test holds the two equal) and {@linkcode ApiError} takes its code from. Status `0`: only in a
 * WebSocket frame's reply, never an HTTP status.
 */
export const ERROR_CODES = {
  invalid_request: {
    status: [400],
    when:
      "a path parameter, header or body field is not what the operation takes, or two different API keys in one request",
  },
  invalid_query: {
    status: [400],
    when:
      "a query parameter's value is not what the operation takes, one given twice, a `group.<field>` the counter lacks, `from`/`to` on `…/current`, or a name a `GET` does not take",
  },
  invalid_json: { status: [400], when: "the body is not JSON" },
  invalid_body: {
    status: [400],
    when: "the body is not what the operation takes (a scalar, not the gzip it says)",
  },
  invalid_utf8: { status: [400], when: "the body is not valid UTF-8" },
  empty_body: { status: [400], when: "the body is empty" },
  empty_batch: { status: [400], when: "the body is an empty array" },
  no_events_accepted: {
    status: [400],
    when: "no event of the request was accepted: see `rejected`",
  },
  invalid_idempotency_key: {
    status: [400],
    when:
      "an `Idempotency-Key` that is not 1-255 printable ASCII characters, a header sent more than once, or two that differ",
  },
  invalid_seq: {
    status: [400],
    when: "a WebSocket ingest frame's `seq` is not a non-negative integer",
  },
  invalid_cursor: { status: [400], when: "a `cursor` not in the form this list gives" },
  invalid_definition: { status: [400], when: "a stream definition that does not compile" },
  invalid_key: { status: [400], when: "an API key that cannot be made as asked" },
  invalid_webhook: { status: [400], when: "a webhook endpoint that cannot be made as asked" },
  invalid_upgrade: { status: [400], when: "a WebSocket upgrade request that is not one" },
  unauthorized: { status: [401], when: "no API key, or one that is unknown, revoked or expired" },
  forbidden: { status: [403], when: "the key lacks the scope, or is limited to other streams" },
  open_mode: {
    status: [403],
    when: "`/v1/keys` in open mode (no `EDGESTREAM_KEYS`)",
  },
  origin_not_allowed: {
    status: [403],
    when:
      "a browser `Origin` that neither the key or stream nor `EDGESTREAM_ALLOWED_ORIGINS` allows",
  },
  not_found: { status: [404], when: "no such path" },
  stream_not_found: { status: [404], when: "no such stream" },
  counter_not_found: { status: [404], when: "the stream has no such counter" },
  key_not_found: { status: [404], when: "no such API key" },
  webhook_not_found: { status: [404], when: "no such webhook endpoint" },
  delivery_not_found: { status: [404], when: "no such delivery" },
  method_not_allowed: { status: [405], when: "a method the path does not take (see `Allow`)" },
  not_acceptable: {
    status: [406],
    when: "a subscription that does not accept `text/event-stream`",
  },
  body_timeout: { status: [408], when: "the body did not arrive within 10 s" },
  conflict: {
    status: [409],
    when:
      "a webhook endpoint disabled (replay, test, retry), changing meanwhile, a delivery being sent, or a new key's id taken",
  },
  stream_not_servable: { status: [409], when: "a stream stored but not served by this instance" },
  stream_from_config: {
    status: [409],
    when: "a stream the config file declares cannot be changed through the API",
  },
  counter_changed: {
    status: [409],
    when: "a counter changed in a way its stored windows cannot follow",
  },
  definition_conflict: {
    status: [409],
    when: "another definition of the stream was stored meanwhile",
  },
  idempotency_key_in_flight: {
    status: [409],
    when: "a request with the same `Idempotency-Key` is still being processed",
  },
  too_many_keys: { status: [409], when: "the deployment holds `EDGESTREAM_KEYS_MAX` keys" },
  too_many_webhooks: {
    status: [409],
    when: "the deployment holds `EDGESTREAM_WEBHOOKS_MAX` endpoints",
  },
  too_many_streams: {
    status: [409],
    when: "the deployment holds `EDGESTREAM_STREAMS_MAX` API streams",
  },
  precondition_failed: { status: [412], when: "`If-Match` or `If-None-Match` does not hold" },
  payload_too_large: {
    status: [413],
    when: "a body over 1 MiB",
  },
  too_many_events: {
    status: [413],
    when: "more events than a request takes, or than a rate limit's burst",
  },
  unsupported_media_type: {
    status: [415],
    when: "a `Content-Type`, charset or `Content-Encoding` the operation does not take",
  },
  host_not_allowed: {
    status: [421],
    when: "open mode: a `Host` that is not a loopback name or in `EDGESTREAM_ALLOWED_HOSTS`",
  },
  idempotency_key_reused: {
    status: [422],
    when: "the `Idempotency-Key` was used with another body",
  },
  upgrade_required: { status: [426], when: "a WebSocket route asked without an upgrade" },
  rate_limited: {
    status: [429],
    when: "over a rate limit (see `Retry-After`, `RateLimit`, `details.retryAfterMs`)",
  },
  too_many_subscriptions: { status: [429], when: "the key holds its most live subscriptions" },
  too_many_ingest_sockets: { status: [429], when: "the key holds its most ingest WebSockets" },
  internal_error: { status: [500], when: "a defect: the log has the cause under the `requestId`" },
  store_unavailable: { status: [503], when: "the store did not answer (see `details.outcome`)" },
  stream_changed: {
    status: [503],
    when:
      "the stream was deleted, re-created or given new counters during the request and again during its retry",
  },
  stream_lookup_busy: { status: [503], when: "too many unknown stream names looked up now" },
  key_lookup_busy: { status: [503], when: "too many unknown API keys looked up now" },
  body_interrupted: { status: [503], when: "the body was cut off" },
  subscriptions_full: { status: [503], when: "this instance holds its most live subscriptions" },
  ingest_sockets_full: { status: [503], when: "this instance holds its most ingest WebSockets" },
  starting: {
    status: [503],
    when:
      "`/readyz` only, as its `status` and its request log line's `error.code` (its body is not an error envelope): this instance is starting, its webhook endpoints loading",
  },
  shutting_down: { status: [503], when: "this instance is stopping" },
  connection_closing: {
    status: [0],
    when: "a frame not applied because its WebSocket closes: send it again",
  },
} as const satisfies Record<string, { status: readonly number[]; when: string }>;

/** A code of {@linkcode ERROR_CODES}. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** Body of every error response. */
export interface ErrorEnvelope {
  error: { code: string; message: string; details?: unknown; requestId?: string };
}

/** An error that becomes a JSON error response with its own code and status. */
export class ApiError extends HTTPException {
  /** Machine-readable code, e.g. `stream_not_found`: one of {@linkcode ERROR_CODES}. */
  readonly code: ErrorCode;
  /** Extra fields merged into the response body next to `error`. */
  readonly extra?: Record<string, unknown>;
  /** Extra response headers. */
  readonly headers?: Record<string, string>;
  /** Machine-readable detail inside `error` (e.g. whether a failed ingest may have applied). */
  readonly details?: unknown;

  constructor(
    status: ContentfulStatusCode,
    code: ErrorCode,
    message: string,
    options: {
      extra?: Record<string, unknown>;
      headers?: Record<string, string>;
      details?: unknown;
      cause?: unknown;
    } = {},
  ) {
    super(status, { message, cause: options.cause });
    this.name = "ApiError";
    this.code = code;
    this.extra = options.extra;
    this.headers = options.headers;
    this.details = options.details;
  }
}

/** The code of an `HTTPException` raised outside this table (Hono's own), by its status. */
const CODE_BY_STATUS: Record<number, ErrorCode> = {
  400: "invalid_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  413: "payload_too_large",
  415: "unsupported_media_type",
  408: "body_timeout",
  429: "rate_limited",
};

/** Seconds a client should wait before retrying when the store is unavailable. */
export const STORE_RETRY_AFTER_SECONDS = 1;

const BODY_STATUS: Record<BodyErrorCode, ContentfulStatusCode> = {
  unsupported_media_type: 415,
  payload_too_large: 413,
  body_timeout: 408,
  body_interrupted: 503,
  too_many_events: 413,
  invalid_utf8: 400,
  invalid_json: 400,
  invalid_body: 400,
  empty_body: 400,
  empty_batch: 400,
};

/** What the answer to an error may depend on besides the error. */
export interface ErrorContext {
  /** An ingest request: a 503's advice is to resend it with its Idempotency-Key. */
  ingest?: boolean;
  /** A request that changes nothing (GET, HEAD): a 503's advice is to try again. */
  read?: boolean;
  /** The admin sweep, safe to repeat whatever became of it: a 503's advice says so. */
  sweep?: boolean;
}

/** The {@linkcode ErrorContext} of a request. */
export function errorContextOf(c: Context): ErrorContext {
  return {
    ingest: isIngestRequest(c.req.raw),
    read: c.req.method === "GET" || c.req.method === "HEAD",
    sweep: c.req.method === "POST" && getPath(c.req.raw) === "/v1/admin/sweep",
  };
}

/** The codes of a connection refused by its key's bound (429) or the process's (503), by pool. */
export const SLOT_CODES: Record<SlotKind, { key: ErrorCode; process: ErrorCode }> = {
  subscription: { key: "too_many_subscriptions", process: "subscriptions_full" },
  ingest_socket: { key: "too_many_ingest_sockets", process: "ingest_sockets_full" },
};

/** The code of a creation refused by a deployment's bound, and the setting that sets it, by kind. */
export const STORED_LIMITS: Record<StoredKind, { code: ErrorCode; setting: string }> = {
  keys: { code: "too_many_keys", setting: "EDGESTREAM_KEYS_MAX" },
  webhooks: { code: "too_many_webhooks", setting: "EDGESTREAM_WEBHOOKS_MAX" },
  streams: { code: "too_many_streams", setting: "EDGESTREAM_STREAMS_MAX" },
};

/**
 * The one table from domain errors (thrown by stages that know nothing of
 * HTTP) to API errors with their status and code. `undefined` for an error
 * that is not a domain error.
 */
export function apiErrorOf(error: unknown, context: ErrorContext = {}): ApiError | undefined {
  if (error instanceof ApiError) return error;
  if (error instanceof BodyError) {
    return new ApiError(BODY_STATUS[error.code], error.code, error.message, {
      // Another instance (or this one, when the connection broke) can take it.
      headers: error.code === "body_interrupted" ? { "Retry-After": "1" } : undefined,
      details: error.details,
      cause: error,
    });
  }
  if (error instanceof StreamChangedError) {
    // Made again once on what is served already: changed once more meanwhile.
    return new ApiError(503, "stream_changed", error.message, {
      headers: { "Retry-After": "1" },
      details: { outcome: "not_applied" },
      cause: error,
    });
  }
  if (error instanceof StoreUnavailableError) {
    const outcome = error.outcome === "not_applied"
      ? "nothing was applied"
      : context.read
      ? "try again"
      : context.ingest
      ? "it may have been applied: resend with the same Idempotency-Key, or with dedupe ids, to be safe"
      : context.sweep
      // A sweep closes each window once, however often it runs.
      ? "it may have been applied: sending the sweep again is safe"
      : "it may have been applied: read the state back before sending it again";
    return new ApiError(503, "store_unavailable", `${error.message}; ${outcome}`, {
      headers: { "Retry-After": String(STORE_RETRY_AFTER_SECONDS) },
      // A read applies nothing, whatever became of its call.
      details: { outcome: context.read ? "not_applied" : error.outcome },
      cause: error,
    });
  }
  if (error instanceof IdempotencyError) {
    return error.problem === "conflict"
      ? new ApiError(422, "idempotency_key_reused", error.message, { cause: error })
      : new ApiError(409, "idempotency_key_in_flight", error.message, { cause: error });
  }
  if (error instanceof RateLimitedError && error.neverFits && error.limit) {
    // No wait makes it fit: not a 429 a client would send again as it is.
    return new ApiError(413, "too_many_events", error.message, {
      details: { maxEvents: error.limit.limit },
      cause: error,
    });
  }
  if (error instanceof RateLimitedError) {
    const retryAfter = Math.max(1, Math.ceil(error.retryAfterMs / 1000));
    const headers: Record<string, string> = { "Retry-After": String(retryAfter) };
    const limit = error.limit;
    if (limit) {
      // draft-ietf-httpapi-ratelimit-headers: the policy (quota, window in s)
      // and what is left of it now.
      const window = refillSecondsOf(limit);
      headers["RateLimit-Policy"] = `"${limit.name}";q=${limit.limit};w=${window}`;
      headers["RateLimit"] = `"${limit.name}";r=${error.remaining};t=${retryAfter}`;
    }
    // The wait in whole ms too, rounded up as Retry-After's seconds are: what a WebSocket
    // frame, which has no headers, carries alone, and finer than Retry-After for a client.
    const retryAfterMs = Math.max(1, Math.ceil(error.retryAfterMs));
    return new ApiError(429, "rate_limited", error.message, {
      headers,
      details: { retryAfterMs },
      cause: error,
    });
  }
  if (error instanceof SlotLimitError) {
    // The key's own bound: 429, as a rate limit; the process's: 503, another instance may take it.
    const [status, code] = error.limit === "key"
      ? [429 as const, SLOT_CODES[error.kind].key]
      : [503 as const, SLOT_CODES[error.kind].process];
    return new ApiError(status, code, error.message, {
      headers: { "Retry-After": String(SLOT_RETRY_AFTER_SECONDS) },
      details: { limit: error.limit, max: error.max },
      cause: error,
    });
  }
  if (error instanceof StoredLimitError) {
    // A conflict with what the deployment holds: waiting does not help (no 429), deleting does.
    const { code, setting } = STORED_LIMITS[error.kind];
    return new ApiError(
      409,
      code,
      `Cannot create more ${
        STORED_NOUNS[error.kind]
      }: this deployment holds ${error.held}; the limit is ${error.max} (${setting}); delete one first`,
      { details: { kind: error.kind, max: error.max, held: error.held }, cause: error },
    );
  }
  if (error instanceof KeyConflictError) {
    return new ApiError(409, "conflict", error.message, { cause: error });
  }
  if (error instanceof InvalidEndpointError) {
    return new ApiError(400, "invalid_webhook", error.message, { cause: error });
  }
  if (error instanceof WebhookNotFoundError) {
    const code = error.what === "endpoint" ? "webhook_not_found" : "delivery_not_found";
    return new ApiError(404, code, error.message, { cause: error });
  }
  if (error instanceof WebhookConflictError) {
    return new ApiError(409, "conflict", error.message, { cause: error });
  }
  if (error instanceof WebhookPreconditionError) {
    return new ApiError(412, "precondition_failed", error.message, { cause: error });
  }
  if (error instanceof StreamDefinitionError) {
    if (error.code === "stream_lookup_busy") {
      return new ApiError(503, error.code, error.message, {
        headers: { "Retry-After": "1" },
        cause: error,
      });
    }
    const status = {
      invalid_definition: 400,
      stream_not_found: 404,
      precondition_failed: 412,
    }[error.code as string] ?? 409;
    return new ApiError(status as ContentfulStatusCode, error.code, error.message, {
      cause: error,
    });
  }
  if (error instanceof InvalidCursorError) {
    return new ApiError(400, "invalid_cursor", error.message, { cause: error });
  }
  return undefined;
}

/**
 * Any thrown error as the API error it is answered with: a domain error by
 * the table above, an `HTTPException` by its status, anything else as 500
 * `internal_error` (its message is not shown: it may hold internals) with
 * the error as its cause.
 */
export function toApiError(error: unknown, context: ErrorContext = {}): ApiError {
  const api = apiErrorOf(error, context);
  if (api) return api;
  if (error instanceof HTTPException) {
    const status = error.status as ContentfulStatusCode;
    // Hono's JSON validator (the key and webhook routes): ingest's and PUT's code for it.
    if (status === 400 && error.message === "Malformed JSON in request body") {
      return new ApiError(400, "invalid_json", "Body is not valid JSON", { cause: error });
    }
    if (status === 415) {
      return new ApiError(415, "unsupported_media_type", "Content-Type must be application/json", {
        cause: error,
      });
    }
    return new ApiError(
      status,
      CODE_BY_STATUS[status] ?? (status >= 500 ? "internal_error" : "invalid_request"),
      error.message || "Request failed",
      { cause: error },
    );
  }
  return new ApiError(500, "internal_error", "Internal server error", { cause: error });
}

/** The envelope of `api`, for the request `requestId` names when it is known. */
export function errorEnvelope(api: ApiError, requestId?: string): ErrorEnvelope {
  const error: ErrorEnvelope["error"] = { code: api.code, message: api.message };
  if (api.details !== undefined) error.details = api.details;
  if (requestId !== undefined) error.requestId = requestId;
  return { ...api.extra, error };
}

/**
 * Turns any thrown error into the JSON envelope, with the request's id; the
 * app's `onError`. The request log middleware logs the error with its cause.
 */
export function errorResponse(error: Error, c: Context): Response {
  // Counted here, where every such refusal is answered, as the connection bounds count theirs.
  if (error instanceof StoredLimitError) recordStoredRefused(error.kind);
  const api = toApiError(error, errorContextOf(c));
  return c.json(errorEnvelope(api, requestIdOf(c)), api.status, api.headers);
}

/** Options for {@linkcode noEventsAccepted}. */
export interface NoEventsAcceptedOptions {
  /** Said after the message (HTTP's hint for a body shaped as the WebSocket envelope). @default {""} */
  hint?: string;
  /** The reply's counts and `rejected`, in the body. @default {none} */
  extra?: Record<string, unknown>;
}

/**
 * The `400 no_events_accepted` of an ingest request that accepted no event (see `rejected`): what
 * HTTP answers it, and what a WebSocket frame's log line says of such a frame (its client gets the
 * ack).
 */
export function noEventsAccepted(options: NoEventsAcceptedOptions = {}): ApiError {
  return new ApiError(
    400,
    "no_events_accepted",
    `No event was accepted; see 'rejected'${options.hint ?? ""}`,
    { extra: options.extra },
  );
}

/**
 * Why `name` is not served: `409 stream_not_servable` for a stream another
 * deployment's config file recorded (this instance's file lacks it), or one
 * stored through the API whose definition this release cannot compile, else
 * `404 stream_not_found`.
 */
export function streamMissing(
  streams: StreamCatalog,
  name: string,
  options: StreamMissingOptions = {},
): ApiError {
  // A path that names no stream: the routes' name check, not a 404 quoting it.
  if (!NAME.test(name)) return invalidNameParameter("stream", name);
  const elsewhere = streams.definedElsewhere?.(name);
  if (elsewhere) {
    return new ApiError(
      409,
      "stream_not_servable",
      `Stream '${name}' (version ${elsewhere.version}) is defined in another deployment's config file (another EDGESTREAM_CONFIG on this store), not in this instance's, so it is not served here: send it to that deployment, or add the stream to this config file`,
    );
  }
  const unservable = streams.unservable?.(name);
  if (unservable) {
    return new ApiError(409, "stream_not_servable", unservableProblem(name, unservable));
  }
  return new ApiError(
    404,
    "stream_not_found",
    `Stream '${name}' does not exist${streamHint(streams, name, options.listed)}`,
  );
}

/** Options for {@linkcode streamMissing}. */
export interface StreamMissingOptions {
  /**
   * Whether the caller may be told of the stream called `name` (it is shown it by
   * `GET /v1/streams`, see `listedTo` in `auth.ts`): the 404 then names the served stream
   * meant, if one alone is near. @default {none is named}
   */
  listed?: (name: string) => boolean;
}

/** What a 404 adds for a misspelled stream name: the served one meant, among those `listed`. */
function streamHint(
  streams: StreamCatalog,
  name: string,
  listed: ((name: string) => boolean) | undefined,
): string {
  if (listed === undefined) return "";
  const meant = meantKey(name, [...streams.keys()].filter(listed));
  return meant === undefined ? "" : ` (did you mean '${meant}'?)`;
}

/**
 * Why the API stream `name`, stored with a definition this release cannot compile, is not
 * served: its `409 stream_not_servable` message, and its `problem` in `GET /v1/streams`.
 */
export function unservableProblem(name: string, unservable: UnservableStream): string {
  return `Stream '${name}' (version ${unservable.version}) is stored, but this release cannot compile its definition: ${unservable.error}. Replace it with PUT /v1/streams/${name}`;
}

/** `405 method_not_allowed` for `method` on `path`, naming in `Allow` the `methods` it takes. */
export function methodNotAllowed(path: string, method: string, methods: string[]): ApiError {
  return new ApiError(
    405,
    "method_not_allowed",
    `${quoteInput(path)} takes ${methods.join(", ")}, not ${quoteInput(method)}`,
    { headers: { Allow: methods.join(", ") } },
  );
}
