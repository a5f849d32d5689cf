/**
 * CORS for the API (`/v1/…`) besides ingest, whose own rules are in `browser.ts`: which pages on
 * other origins may read what the API answers them (`fetch`, a subscription read as a stream).
 *
 * **Preflight.** An `OPTIONS` of an API path with `Access-Control-Request-Method` answers 204 and
 * grants whatever origin asks the path's methods and the request headers the API reads, before
 * any key is asked for (a preflight never carries one) and whether the stream named exists or not:
 * the request that follows decides. A path no route serves is not granted (its 404 as before).
 *
 * **Answers.** Every answer (but a WebSocket upgrade's) carries `Vary: Origin`, whether the request
 * had an `Origin` or not: its CORS headers depend on it. An answer carries
 * `Access-Control-Allow-Origin` (and exposes the headers below) when the request's `Origin` is one
 * `EDGESTREAM_ALLOWED_ORIGINS` lists, or one the `origins` of the key it presented list, or when
 * it is an error answered before a key was granted (a repeated query parameter's 400, a stream
 * that is no name's 400, 401, a key's 403, a 503 when the key could not be looked up): a page its
 * key admits must read why it failed, and such an answer tells a page nothing a script with that
 * key would not learn. A read (`GET`, `HEAD`, a subscription as Server-Sent Events) from an origin
 * that is neither the server's own nor listed is marked here, and refused `403 origin_not_allowed`
 * once its key is granted, unless the key's `origins` list it (`auth.ts`, `refuseForeignRead`):
 * that refusal the page reads too, so it (and `/sdk.js`) learns why instead of a network error.
 * In open mode no read is refused for its origin but a subscription as Server-Sent Events (it
 * would stream to a page that reads none of it): other pages just cannot read the answer. A
 * state-changing request from an origin the server does not list was refused
 * `403 origin_not_allowed` already (`origin.ts`), before this runs: that answer, and open mode's
 * `421`, carry neither these headers nor `Vary`.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { getPath } from "hono/utils/url";
import { grantOfRequest, markForeignRead } from "./auth.ts";
import { ApiError } from "./errors.ts";
import { upgradeAsksForWebSocket } from "./_header_list.ts";

/**
 * Request headers a page's API request may send (trace context and baggage as for ingest, in
 * browser.ts).
 */
export const API_ALLOWED_HEADERS =
  "authorization, content-type, content-encoding, idempotency-key, if-match, if-none-match, last-event-id, x-request-id, traceparent, tracestate, baggage";

/** Response headers a page may read from an API answer. */
export const API_EXPOSED_HEADERS =
  "ETag, Location, Retry-After, RateLimit, RateLimit-Policy, Idempotent-Replayed, X-Request-Id";

/**
 * Errors answered before a key is granted, which any page may read: a query parameter repeated
 * or, on a read, not taken (400 `invalid_query`), a path whose stream is no name
 * (400 `invalid_request`: a key limited to streams is refused it before its grant, where a key
 * for all streams gets it from the route), the key refused (401, 403) or not looked up (503). (A
 * body too large or too slow comes only with a method the origin policy refused already from other
 * origins.)
 */
const BEFORE_A_KEY = new Set([400, 401, 403, 503]);

/** How long (s) a browser may reuse a preflight's answer (ingest's too). */
export const PREFLIGHT_MAX_AGE = 600;

/**
 * The path whose CORS is its own: ingest (`browser.ts`). (The WebSocket ingest path's upgrade is
 * passed on below; its preflight is answered here, as every API path's, not refused for a key.)
 */
const OWN_CORS = /^\/v1\/streams\/[^/]+\/events$/;

/** Options of {@linkcode apiCors}. */
export interface ApiCorsOptions {
  /** Whether `EDGESTREAM_ALLOWED_ORIGINS` lists `origin` (see `OriginPolicy.lists`). */
  listsOrigin(origin: string): boolean;
  /**
   * The request's `Origin` when it is neither the server's own nor listed (see
   * `OriginPolicy.foreignOrigin`); a read from it needs a key whose `origins` list it.
   */
  foreignOrigin(request: Request): string | undefined;
  /** The methods the routes serving `path` take, or undefined when none serves it. */
  methodsOf(path: string): readonly string[] | undefined;
}

/** Middleware of the API paths: answers preflights and adds CORS headers (see the module doc). */
export function apiCors(options: ApiCorsOptions): MiddlewareHandler {
  return async function (c, next) {
    const origin = c.req.header("Origin");
    if (OWN_CORS.test(getPath(c.req.raw))) return await next();
    if (
      origin !== undefined && c.req.method === "OPTIONS" &&
      c.req.header("Access-Control-Request-Method")
    ) {
      const methods = options.methodsOf(c.req.path);
      if (methods === undefined) return await next();
      return c.body(null, 204, {
        Allow: methods.join(", "),
        Vary: "Origin",
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": methods.join(", "),
        "Access-Control-Allow-Headers": API_ALLOWED_HEADERS,
        "Access-Control-Max-Age": String(PREFLIGHT_MAX_AGE),
      });
    }
    // A WebSocket is not read under CORS; its upgrade is judged by the origin policy alone.
    if (upgradeAsksForWebSocket(c.req.header("Upgrade"))) return await next();
    // A read from a page the server does not list: its key must (auth.ts, refuseForeignRead).
    if (origin !== undefined && (c.req.method === "GET" || c.req.method === "HEAD")) {
      const foreign = options.foreignOrigin(c.req.raw);
      if (foreign !== undefined) markForeignRead(c, foreign);
    }
    await next();
    // On every answer, a request without `Origin`'s too: whether it carries the headers below
    // depends on it, and a shared cache (a CDN, a proxy) that stored one without them must not
    // give it to a page's request (whose read would then fail), nor one with them to another.
    c.res.headers.append("Vary", "Origin");
    if (origin !== undefined && admits(c, origin, options)) {
      c.res.headers.set("Access-Control-Allow-Origin", origin);
      c.res.headers.set("Access-Control-Expose-Headers", API_EXPOSED_HEADERS);
    }
  };
}

/** Whether the answer to `c`, from a page on `origin`, may be read by it. */
function admits(c: Context, origin: string, options: ApiCorsOptions): boolean {
  const error = c.error instanceof ApiError ? c.error : undefined;
  const grant = grantOfRequest(c);
  // A read refused for its key's origins (a granted key): the page reads why, as ingest's.
  if (error?.code === "origin_not_allowed") return grant !== undefined;
  if (error?.code === "host_not_allowed") return false;
  if (options.listsOrigin(origin)) return true;
  if (grant?.origins?.has(origin)) return true;
  // An error answered before a key was granted: the key's origins are not known.
  // (A store that could not be asked is no ApiError: its answer's status tells.)
  const status = c.res.status;
  return grant === undefined && c.error !== undefined && BEFORE_A_KEY.has(status) &&
    (status !== 400 || error?.code === "invalid_query" || error?.code === "invalid_request");
}
