/**
 * Request ids: every response carries `X-Request-Id`, every error body
 * `error.requestId` and every request log line `requestId`, so a client's
 * report and the server's logs meet. A client's own id is kept when it is
 * 1 to 128 characters of `[A-Za-z0-9._-]` (safe to print, to put in a header
 * and to search for); any other value is replaced by a new random one.
 *
 * @module
 */
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

/** Header that carries the id, on requests and responses. */
export const REQUEST_ID_HEADER = "X-Request-Id";

/**
 * Headers every response carries besides the id: `X-Content-Type-Options: nosniff`, so a browser
 * never reads a JSON reply (which may quote what a client sent) as another type. The request log
 * sets them with the id (`request_log.ts`), or a response made with the id has them already.
 */
export const EVERY_RESPONSE_HEADERS = { "X-Content-Type-Options": "nosniff" } as const;

/** Longest client id kept. */
export const MAX_REQUEST_ID_LENGTH = 128;

const VALID_REQUEST_ID = new RegExp(`^[A-Za-z0-9._-]{1,${MAX_REQUEST_ID_LENGTH}}$`);

/** Name of the context variable the id is kept in. */
const REQUEST_ID_VARIABLE = "requestId";

/**
 * The id for a request that sent `header` as its `X-Request-Id`: the
 * header when it is a valid id, else a new random UUID.
 */
export function requestIdFrom(header: string | null | undefined): string {
  return header !== null && header !== undefined && VALID_REQUEST_ID.test(header)
    ? header
    : crypto.randomUUID();
}

/** Records `id` as the id of the request `c` serves. */
export function setRequestId(c: Context, id: string): void {
  c.set(REQUEST_ID_VARIABLE, id);
}

/** The id of the request `c` serves, or undefined outside the request log middleware. */
export function requestIdOf(c: Context): string | undefined {
  const id: unknown = c.get(REQUEST_ID_VARIABLE);
  return typeof id === "string" ? id : undefined;
}

/** Name of the context variable that holds the response made with the id on it. */
const RESPONSE_WITH_ID_VARIABLE = "responseWithRequestId";

/**
 * A JSON response to the request `c` serves with `X-Request-Id` already among its headers (with
 * any a middleware prepared with `c.header`, as `c.json` adds them). The request log then leaves
 * it as it is: a header added to a made response discards the copy Deno prepared for sending it
 * and sends it the slower way.
 */
export function jsonWithRequestId(c: Context, body: unknown, status: number): Response {
  const id = requestIdOf(c);
  if (id === undefined) return c.json(body, status as ContentfulStatusCode);
  const response = c.json(body, status as ContentfulStatusCode, {
    [REQUEST_ID_HEADER]: id,
    ...EVERY_RESPONSE_HEADERS,
  });
  c.set(RESPONSE_WITH_ID_VARIABLE, response);
  return response;
}

/**
 * {@linkcode jsonWithRequestId} for a request whose context holds no headers prepared with
 * `c.header` (a handler that runs without middleware, as `ingestApp`): the same status, body and
 * headers, named as `c.json` names them, but given to `Response` as a plain record. `c.json` with
 * a header of its own builds a `Headers` object, sets each header and has `Response` copy it
 * (~1.4 KB of heap and a few µs per request); a record is read once.
 */
export function madeJsonWithRequestId(c: Context, body: unknown, status: number): Response {
  const id = requestIdOf(c);
  if (id === undefined) return c.json(body, status as ContentfulStatusCode);
  const response = new Response(JSON.stringify(body), {
    status,
    headers: {
      "content-type": "application/json",
      "x-request-id": id,
      "x-content-type-options": "nosniff",
    },
  });
  c.set(RESPONSE_WITH_ID_VARIABLE, response);
  return response;
}

/**
 * True when `response` is the one {@linkcode jsonWithRequestId} (or
 * {@linkcode madeJsonWithRequestId}) made for the request `c` serves,
 * so it carries the request's id and {@linkcode EVERY_RESPONSE_HEADERS}.
 */
export function carriesRequestId(c: Context, response: Response): boolean {
  return c.get(RESPONSE_WITH_ID_VARIABLE) === response;
}
