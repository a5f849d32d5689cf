/**
 * `HEAD` answers. Hono serves a `HEAD` with its `GET` route and drops the
 * body; this middleware makes that answer what RFC 9110 asks of it:
 *
 * - `Content-Length` is the length `GET` would send (Deno otherwise writes
 *   `0` for the body-less response);
 * - an open-ended body (Server-Sent Events) is cancelled, so what it holds
 *   (a live subscription) ends with the request instead of staying open
 *   with no one reading it; and its answer is sent with no length
 *   ({@linkcode withoutHeadLength}).
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";

/** Content types whose body has no end: cancelled, and sent with no length. */
const OPEN_ENDED = new Set(["text/event-stream"]);

/**
 * A middleware for every route: a `HEAD` request's answer gets `GET`'s
 * `Content-Length` and its open-ended body cancelled. Other methods pass.
 *
 * @example Use it first on an app
 * ```ts
 * import { Hono } from "hono";
 * import { headAnswers } from "./head.ts";
 *
 * const app = new Hono();
 * app.use(headAnswers());
 * app.get("/", (c) => c.text("hello"));
 * const res = await app.request("/", { method: "HEAD" });
 * console.log(res.headers.get("Content-Length")); // "5"
 * ```
 */
export function headAnswers(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    if (c.req.method !== "HEAD") return;
    const res = c.res;
    if (!res.body) return;
    // Its length known already, or none to know: nothing to read.
    if (res.headers.has("Content-Length") || OPEN_ENDED.has(mediaTypeOf(res))) {
      await res.body.cancel();
      return;
    }
    const length = (await res.arrayBuffer()).byteLength;
    const headers = new Headers(res.headers);
    headers.set("Content-Length", String(length));
    c.res = new Response(null, { status: res.status, statusText: res.statusText, headers });
  };
}

/**
 * `fetch` (an app's), whose `HEAD` answers for an open-ended body are sent with no
 * `Content-Length`, as `GET`'s are. Hono answers a `HEAD` with `new Response(null, …)` after
 * every middleware, and `Deno.serve` writes `Content-Length: 0` for a response without a body:
 * a claim that `GET`'s body is empty. An empty body of its own, never sent for a `HEAD`, makes
 * `Deno.serve` write none.
 */
export function withoutHeadLength<A extends unknown[]>(
  fetch: (request: Request, ...rest: A) => Response | Promise<Response>,
): (request: Request, ...rest: A) => Response | Promise<Response> {
  // Another method passes straight through: nothing added to every request.
  return (request, ...rest) =>
    request.method === "HEAD"
      ? Promise.resolve(fetch(request, ...rest)).then(withoutLength)
      : fetch(request, ...rest);
}

/** A `HEAD` answer `res`, sent with no length when its `GET` body is open-ended. */
function withoutLength(res: Response): Response {
  if (res.body !== null || res.headers.has("Content-Length") || !OPEN_ENDED.has(mediaTypeOf(res))) {
    return res;
  }
  const empty = new ReadableStream<Uint8Array>({ start: (controller) => controller.close() });
  return new Response(empty, {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
  });
}

function mediaTypeOf(res: Response): string {
  return res.headers.get("Content-Type")?.split(";")[0].trim().toLowerCase() ?? "";
}
