/**
 * One log line per request, written when the response starts (for a
 * WebSocket or Server-Sent Events, when the stream opens), with its request
 * id on the response (`X-Request-Id`, see `request_id.ts`) and the headers every response
 * carries (`X-Content-Type-Options: nosniff`):
 *
 * `{"level": "info", "logger": "edgestream.http", "message": "POST /v1/streams/orders/events 202 3.1 ms",
 *   "method", "path", "status", "durationMs", "requestId", "stream", "accepted", …}`
 *
 * - `path` is the path alone: a query string (which may hold `?token=`) is
 *   never logged. A path (and `stream`, and `method`) longer than 256 characters is cut to its
 *   first 256 and its length (`quoteInput`), as error messages quote client input.
 * - `stream` is the stream a `/v1/streams/{stream}/…` path names.
 * - Handlers add their own fields with {@linkcode annotateRequest} (ingest:
 *   `accepted`, `duplicates`, `late`, `filtered`, `rejected` as a count).
 * - A failed request has `error` (`code`, `message`: what the client was
 *   told) and `cause`: the error chain behind a 4xx or 503 as text, or for a
 *   500 the unexpected error itself with its stack.
 * - Level: `error` for 5xx but 503, `warning` for 503 (the store, not this
 *   process, is in trouble), `info` for the rest.
 *
 * Records logged while the request is served (by the pipeline, the store)
 * carry the same `requestId`.
 *
 * @module
 */
import { getConfig, getLogger, type LogLevel, type LogRecord, withContext } from "@logtape/logtape";
import type { Context, MiddlewareHandler } from "hono";
import {
  carriesContext,
  causeText,
  dropsRecord,
  quoteInput,
  writeLogRecord,
} from "../telemetry/logging.ts";
import { withoutInboundBaggage } from "../telemetry/mod.ts";
import { type ErrorContext, errorContextOf, toApiError } from "./errors.ts";
import {
  carriesRequestId,
  EVERY_RESPONSE_HEADERS,
  REQUEST_ID_HEADER,
  requestIdFrom,
  setRequestId,
} from "./request_id.ts";

const logger = getLogger(["edgestream", "http"]);

/** Name of the context variable that holds handler-added fields. */
const FIELDS_VARIABLE = "requestLogFields";

const STREAMS_PREFIX = "/v1/streams/";

/** Options for {@linkcode requestLog}. */
export interface RequestLogOptions {
  /** Clock for durations (ms). @default {performance.now} */
  now?: () => number;
}

/** Adds `fields` to the log line of the request `c` serves. */
export function annotateRequest(c: Context, fields: Record<string, unknown>): void {
  const current = c.get(FIELDS_VARIABLE) as Record<string, unknown> | undefined;
  c.set(FIELDS_VARIABLE, current ? { ...current, ...fields } : fields);
}

function streamOf(path: string): string | undefined {
  // What `^/v1/streams/([^/]+)` captures, without a match array per request.
  if (!path.startsWith(STREAMS_PREFIX)) return undefined;
  const end = path.indexOf("/", STREAMS_PREFIX.length);
  const name = path.slice(STREAMS_PREFIX.length, end === -1 ? undefined : end);
  if (name === "" || !name.includes("%")) return name === "" ? undefined : quoteInput(name);
  try {
    return quoteInput(decodeURIComponent(name));
  } catch {
    return quoteInput(name);
  }
}

/** The level of a response's line. */
export function levelOfStatus(status: number): LogLevel {
  if (status === 503) return "warning";
  return status >= 500 ? "error" : "info";
}

function errorFields(error: Error, context: ErrorContext): Record<string, unknown> {
  const api = toApiError(error, context);
  const fields: Record<string, unknown> = { error: { code: api.code, message: api.message } };
  if (api.status === 500 && api.code === "internal_error") {
    fields.cause = error;
  } else {
    // An ApiError made from a domain error repeats its message: skip to what is new.
    const cause = api.cause instanceof Error && api.cause.message === api.message
      ? api.cause.cause
      : api.cause;
    const text = causeText(cause);
    if (text !== undefined) fields.cause = text;
  }
  return fields;
}

/**
 * Middleware that gives each request its id (kept from a valid
 * `X-Request-Id`, else new), sets `X-Request-Id` on the response and logs
 * the request line. Register it before every other middleware, so refused
 * requests are logged too.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { requestLog } from "./request_log.ts";
 *
 * const app = new Hono();
 * app.use(requestLog());
 * app.get("/", (c) => c.text("ok"));
 * const res = await app.request("/", { headers: { "X-Request-Id": "job-42" } });
 * console.log(res.headers.get("X-Request-Id")); // job-42
 * ```
 */
export function requestLog(options: RequestLogOptions = {}): MiddlewareHandler {
  const settings = { now: options.now ?? performanceNow };
  return async (c, next) => {
    await logRequest(c, next, settings);
  };
}

function performanceNow(): number {
  return performance.now();
}

/**
 * Serves the request `c` with `serve` as {@linkcode requestLog} does: gives it its id, runs
 * `serve` in the id's log context, then sets `X-Request-Id` on `c.res` and logs the line. For a
 * route that runs its steps without the middleware chain (ingest, see `stream_routes.ts`).
 */
export async function logRequest(
  c: Context,
  serve: () => Promise<unknown>,
  options: RequestLogOptions = {},
): Promise<Response> {
  const now = options.now ?? performanceNow;
  const started = now();
  const requestId = requestIdFrom(c.req.header(REQUEST_ID_HEADER));
  setRequestId(c, requestId);
  // A caller's baggage goes no further than this process (see withoutInboundBaggage).
  await withoutInboundBaggage(() => withContext({ requestId }, serve));
  // A response made with the id (`jsonWithRequestId`) is left as Deno prepared it for sending:
  // it has the headers every response gets already.
  if (!carriesRequestId(c, c.res)) {
    try {
      stampHeaders(c.res.headers, requestId);
    } catch {
      // Immutable headers (a response passed through from fetch): copy the response.
      c.header(REQUEST_ID_HEADER, requestId);
      stampHeaders(c.res.headers, requestId);
    }
  }
  const status = c.res.status;
  const level = levelOfStatus(status);
  // A line below the level written (`EDGESTREAM_LOG_LEVEL=warning` and a 2xx): none of it is made.
  if (dropsRecord(logger.category, level)) return c.res;
  // Quoted within bounds: a client may send a path, and a method (any token), of any length Deno
  // takes (~64 KB), and the line holds them in `message`, `method`, `path` and `stream`.
  const path = quoteInput(c.req.path);
  const method = quoteInput(c.req.method);
  const durationMs = Math.round((now() - started) * 1000) / 1000;
  const stream = streamOf(c.req.path);
  // Made whole rather than grown field by field.
  const fields: Record<string, unknown> = stream === undefined
    ? { method, path, status, durationMs, requestId }
    : { method, path, status, durationMs, requestId, stream };
  Object.assign(fields, c.get(FIELDS_VARIABLE));
  if (c.error) Object.assign(fields, errorFields(c.error, errorContextOf(c)));
  writeLine({
    category: logger.category,
    level,
    timestamp: Date.now(),
    rawMessage: LINE,
    message: ["", method, " ", path, " ", status, " ", durationMs, " ms"],
    properties: fields,
  } as LogRecord);
  return c.res;
}

/**
 * Writes `record`, a line of this file's logger made whole: the record LogTape's
 * `logger[level](rawMessage, properties)` would make, without LogTape's lazy message and copy of
 * the properties, which cost a request line more than the rest of LogTape. A record that names its
 * category is dispatched as it is, by the logger's levels and sinks; `configureLogging`'s own sink
 * takes it without LogTape's dispatch when it may (`writeLogRecord`).
 */
function writeLine(record: LogRecord): void {
  // A request's line is logged outside its context, in the caller's: a server has none, an app
  // served inside a `withContext` does, which LogTape's own call adds to the line. A frame's is
  // logged in its upgrade request's context, whose `requestId` the line carries itself.
  const context = getConfig()?.contextLocalStorage?.getStore();
  if (context !== undefined && !carriesContext(record.properties, context)) {
    logger[record.level](record.rawMessage as string, record.properties);
    return;
  }
  if (!writeLogRecord(record)) logger.emit(record);
}

/** Sets the request's id and {@linkcode EVERY_RESPONSE_HEADERS} on a response's `headers`. */
function stampHeaders(headers: Headers, requestId: string): void {
  headers.set(REQUEST_ID_HEADER, requestId);
  for (const [name, value] of EVERY_HEADER) headers.set(name, value);
}

const EVERY_HEADER = Object.entries(EVERY_RESPONSE_HEADERS);

/** The message of a request's line. */
const LINE = "{method} {path} {status} {durationMs} ms";

/** What {@linkcode logFrame} writes of one WebSocket ingest frame. */
export interface FrameLogFields {
  /** The upgrade request's path (quoted within bounds here). */
  path: string;
  /** The frame's `seq`, as its answer carries it. */
  frame: number;
  /**
   * The status an HTTP ingest request answered so would have: 202 for an ack (400 for one that
   * accepted no event), else the error's.
   */
  status: number;
  /** Time (ms) from reading the frame to its answer. */
  durationMs: number;
  /** The upgrade request's id, as the frame's error answers carry it. */
  requestId?: string;
  /** The stream the frame went to. */
  stream: string;
  /** An ack's counts (`rejected` as a count, `replayed` for an `idempotencyKey` replay). */
  counts?: Record<string, unknown>;
  /** Why the frame was refused or failed, as the client's error answer says. */
  error?: unknown;
}

/**
 * Writes the line of one answered WebSocket ingest frame, as {@linkcode logRequest} writes an
 * HTTP ingest request's: the same logger, level by `status` ({@linkcode levelOfStatus}), the
 * counts of an ack, and `error` and `cause` for a refused or failed frame. The frame's text is
 * not written (its events may hold personal data), nor any key.
 */
export function logFrame(fields: FrameLogFields): void {
  const level = levelOfStatus(fields.status);
  if (dropsRecord(logger.category, level)) return;
  const path = quoteInput(fields.path);
  const stream = quoteInput(fields.stream);
  const { frame, status } = fields;
  const durationMs = Math.round(fields.durationMs * 1000) / 1000;
  const line: Record<string, unknown> = fields.requestId === undefined
    ? { transport: "ws", path, frame, status, durationMs, stream }
    : { transport: "ws", path, frame, status, durationMs, requestId: fields.requestId, stream };
  if (fields.counts) Object.assign(line, fields.counts);
  if (fields.error !== undefined) {
    const error = fields.error instanceof Error ? fields.error : new Error(String(fields.error));
    Object.assign(line, errorFields(error, { ingest: true }));
  }
  writeLine({
    category: logger.category,
    level,
    timestamp: Date.now(),
    rawMessage: FRAME_LINE,
    message: ["WS ", path, " frame ", frame, " ", status, " ", durationMs, " ms"],
    properties: line,
  } as LogRecord);
}

/** The message of a WebSocket ingest frame's line. */
const FRAME_LINE = "WS {path} frame {frame} {status} {durationMs} ms";
