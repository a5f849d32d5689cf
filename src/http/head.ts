/**
 * `HEAD` answers. Hono serves a `HEAD` with its `GET` route and drops the
 * body; this middleware makes that answer what RFC 9110 asks of it:
 *
 * - `Content-Length` is the length `GET` would send (Deno otherwise writes
 *   `0` for the body-less response);
 * - an open-ended body (Server-Sent Events) is cancelled, so what it holds
 *   (a live subscription) ends with the request instead of staying open
 *   with no one reading it.
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
    if (!res.body || res.status === 101) return;
    const mediaType = res.headers.get("Content-Type")?.split(";")[0].trim().toLowerCase() ?? "";
    if (OPEN_ENDED.has(mediaType)) {
      await res.body.cancel();
      return;
    }
    if (res.headers.has("Content-Length")) {
      await res.body.cancel();
      return;
    }
    const length = (await res.arrayBuffer()).byteLength;
    const headers = new Headers(res.headers);
    headers.set("Content-Length", String(length));
    c.res = new Response(null, { status: res.status, statusText: res.statusText, headers });
  };
}
