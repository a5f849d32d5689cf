/**
 * Whether a route serves a request, for the middleware that runs before the app's 404 or 405:
 * a request no route serves gets that answer whatever else it carries (a body, a key).
 *
 * @module
 */
import type { Context } from "hono";
import { matchedRoutes } from "hono/route";

/**
 * Whether a route (`app.get`, `app.post`, …; a `HEAD` matches `GET`'s) serves the request `c`
 * is for, rather than only middleware (`app.use`). A route for every method (`app.all`, the
 * static files) is matched as middleware is: it answers every method itself and reads no body.
 */
export function routeServes(c: Context): boolean {
  return matchedRoutes(c).some((route) => route.method !== "ALL");
}
