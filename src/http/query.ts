/**
 * The checks of an API request's query, before anything else is looked up:
 * parameters given more than once, and on a read, parameters it does not
 * take. Each route reads one value of a parameter; which one a client meant
 * by two cannot be told, so a request that repeats one is a 400 rather than
 * read by its first or last value.
 * `group.<field>` filters are apart: a field given twice uses the last value
 * (see the README's Reading counters).
 *
 * @module
 */
import type { RouteConfig } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { matchedRoutes } from "hono/route";
import { quoteInput } from "../telemetry/logging.ts";
import { editDistance, meantKey } from "../validate/mod.ts";
import { ApiError } from "./errors.ts";

/** The first query parameter of `url` given more than once, other than a `group.<field>` filter. */
export function repeatedQueryParameter(url: string): string | undefined {
  const start = url.indexOf("?");
  // One pair (the usual `?idempotencyKey=` of a beacon) repeats nothing: skip URLSearchParams.
  if (start < 0 || !url.includes("&", start)) return undefined;
  const seen = new Set<string>();
  for (const name of new URLSearchParams(url.slice(start + 1)).keys()) {
    if (groupFilterField(name) !== undefined) continue;
    if (seen.has(name)) return name;
    seen.add(name);
  }
  return undefined;
}

/**
 * The field a query parameter filters groups by: `group.<field>`, or as clients that send an
 * object parameter in `deepObject` style write it, `group[<field>]` or `group[group.<field>]`
 * (openapi-fetch's form of the document's `group` object); undefined for any other parameter.
 */
export function groupFilterField(name: string): string | undefined {
  if (name.startsWith("group.")) return name.slice(6);
  if (!name.startsWith("group[") || !name.endsWith("]")) return undefined;
  const inner = name.slice(6, -1);
  return inner.startsWith("group.") ? inner.slice(6) : inner;
}

/**
 * The cache-buster jQuery appends to a GET with `cache: false` (`_=<epoch ms>`): taken by every
 * read route that refuses parameters it does not take, and ignored. No route takes a parameter
 * `_`, so it cannot be a misspelling of one.
 */
export const CACHE_BUSTER = "_";

/**
 * The `group.<field>=<value>` query filter of the counter reads (their `parameters`; its names
 * read by {@linkcode groupFilterField}): a route lists this object to take group filters.
 * OpenAPI cannot name a parameter by a pattern, so it is one free-form object
 * parameter: with `style: form` and `explode: true` each property is sent as
 * its own `name=value` pair, and the property names carry the `group.` prefix.
 */
export const groupFilterParameter = {
  name: "group",
  in: "query" as const,
  required: false,
  style: "form" as const,
  explode: true,
  description:
    '`group.<field>=<value>`: only groups whose field has that value, e.g. `group.country=DE`. Values compare as text: a string as itself, numbers and booleans as their JSON text, `null` for a missing or null value; a value in double quotes is a JSON string and matches only that string (`group.g="1"`). A URL query reads `+` as a space, so a `+` in a value is written `%2B`: `group.g=1e%2B21` for the number 1e21 (JSON text `1e+21`), `group.lang=C%2B%2B`; `group.g=1e+21` filters on the text `1e 21`, a value a group may have, so nothing says so. Several fields must all match; a field given twice uses the last value; a field the counter does not group by is a 400 `invalid_query`, and so is this parameter sent unexploded (`group=group.country,DE`). `group[<field>]=<value>` (or `group[group.<field>]`, as clients that send objects in `deepObject` style write this parameter) is the same.',
  schema: {
    type: "object" as const,
    propertyNames: { pattern: "^group\\..+$" },
    additionalProperties: { type: "string" as const },
  },
  example: { "group.country": "DE" },
};

/**
 * The query parameters a route's definition lists (its `request.query` object's keys): what
 * {@linkcode refuseUntakenQuery} takes for it, so the 400 and the API document say the same.
 */
function documentedQuery(route: RouteConfig): string[] {
  const query: object | undefined = route.request?.query;
  return query !== undefined && "shape" in query ? Object.keys(query.shape as object) : [];
}

/** The query a documented route takes: what {@linkcode refuseUntakenQuery} is given for it. */
interface TakenQuery {
  /** Its query parameters (its `request.query` object's keys). */
  taken: string[];
  /** Whether it takes `group.<field>` filters (it lists {@linkcode groupFilterParameter}). */
  groupFilters: boolean;
}

/** The query a route's definition takes, as its document lists it. */
function takenQueryOf(route: RouteConfig): TakenQuery {
  const parameters: readonly unknown[] = route.parameters ?? [];
  return { taken: documentedQuery(route), groupFilters: parameters.includes(groupFilterParameter) };
}

/** Options for {@linkcode refuseUntakenQuery}. */
export interface UntakenQueryOptions {
  /** Whether the route takes `group.<field>` filters (the counter reads). @default {false} */
  groupFilters?: boolean;
}

/**
 * Throws 400 `invalid_query` for the first query parameter of `url` (by decoded name, in URL
 * order) that is not in `taken` (the route's documented query parameters) and not
 * {@linkcode CACHE_BUSTER}: ignored, a misspelled one (`limt`, `Group.country`, `grp.country`)
 * would answer as if it were not asked, a filter as if it had worked. With `groupFilters`, a
 * `group.<field>` filter is taken too, and a name starting `group[` that is no filter, and `group`
 * itself, are left to the route's group filter check, which says how to write one. The message
 * names the parameter and those taken, and the taken one it differs from only by case, if any,
 * else the one it is a few edits from (see {@linkcode nearTaken}).
 *
 * @example
 * ```ts
 * import { refuseUntakenQuery } from "./query.ts";
 *
 * refuseUntakenQuery("/v1/streams?limit=10&_=1765097000000", ["limit", "cursor"]); // taken
 * try {
 *   refuseUntakenQuery("/v1/streams?limt=10", ["limit", "cursor"]);
 * } catch (error) {
 *   // Query parameter 'limt' is not taken here (did you mean 'limit'?); this route takes:
 *   // limit, cursor
 *   console.log((error as Error).message);
 * }
 * ```
 */
export function refuseUntakenQuery(
  url: string,
  taken: readonly string[],
  options: UntakenQueryOptions = {},
): void {
  const start = url.indexOf("?");
  if (start < 0) return;
  const groupFilters = options.groupFilters ?? false;
  for (const name of new URLSearchParams(url.slice(start + 1)).keys()) {
    if (taken.includes(name) || name === CACHE_BUSTER) continue;
    if (
      groupFilters &&
      (groupFilterField(name) !== undefined || name.startsWith("group[") || name === "group")
    ) {
      continue;
    }
    const listed = groupFilters ? [...taken, "group.<field>"] : taken;
    throw new ApiError(
      400,
      "invalid_query",
      `Query parameter '${quoteInput(name, 64)}' is not taken here${
        untakenHint(name, taken, groupFilters)
      }; this route takes${listed.length === 0 ? " none" : `: ${listed.join(", ")}`}`,
    );
  }
}

/** What the 400 of {@linkcode refuseUntakenQuery} adds: the name meant, or where a key goes. */
function untakenHint(name: string, taken: readonly string[], groupFilters: boolean): string {
  const lower = name.toLowerCase();
  const meant = taken.find((one) => one.toLowerCase() === lower) ??
    (groupFilters &&
        (lower.startsWith("group.") || (lower.startsWith("group[") && name.endsWith("]")))
      ? `group${name.slice(5)}`
      : undefined);
  if (meant !== undefined) return ` (names are case-sensitive: '${quoteInput(meant, 64)}'?)`;
  if (name === "token") return " (send the key as 'Authorization: Bearer <key>')";
  const near = nearTaken(name, taken, groupFilters);
  return near === undefined ? "" : ` (did you mean '${quoteInput(near, 64)}'?)`;
}

/**
 * The taken name a misspelled `name` is near (compared in lower case), if one alone is: fewest
 * edits, and fewer than half its length (`limt`, `curser`; not `x` for `q`; `meantKey`, as a
 * misspelled body or definition key), or `group.<field>`
 * for a name whose part before its first dot is a couple of edits from `group` (`grp.country`).
 */
function nearTaken(
  name: string,
  taken: readonly string[],
  groupFilters: boolean,
): string | undefined {
  const lower = name.toLowerCase();
  const dot = lower.indexOf(".");
  if (groupFilters && dot > 0 && editDistance(lower.slice(0, dot), "group") <= 2) {
    return `group${name.slice(dot)}`;
  }
  return meantKey(name, taken);
}

/** Throws 400 `invalid_query` when `url` repeats a query parameter. */
export function refuseRepeatedQuery(url: string): void {
  const name = repeatedQueryParameter(url);
  if (name !== undefined) throw repeated(name);
}

function repeated(name: string): ApiError {
  return new ApiError(
    400,
    "invalid_query",
    `Query parameter '${name.slice(0, 64)}' is given more than once; give it once`,
  );
}

/** Options for {@linkcode apiQueryChecks}. */
export interface ApiQueryOptions {
  /**
   * The routes of the API document, asked once, at the first request (every route is registered
   * by then): a `GET` of one is refused a parameter it does not list. @default {none}
   */
  documented?: () => readonly RouteConfig[];
  /**
   * By route path (Hono's form, `/v1/streams/:stream`), a check that throws that route's own 400
   * for a parameter it does not take but means something elsewhere (`from` on `…/current`),
   * before the general one. @default {none}
   */
  explainers?: ReadonlyMap<string, (c: Context) => void>;
}

/**
 * Middleware, the one check of every API request's query (`/v1/…`), for every route in one place
 * and one order: before its key is checked and before anything its path names (a stream, a
 * counter, an endpoint) is looked up (input before state: `GET /v1/streams/nope/counters/x?bogus=1`
 * is the 400, not the 404). A request that repeats a query parameter is 400 `invalid_query` (the
 * request cannot be read as meant, whoever sends it), and so is a `GET` (or `HEAD`) of a
 * `documented` route whose query holds a parameter the route does not list
 * ({@linkcode refuseUntakenQuery}). Pages, health checks and the API document take any query
 * (tracking links, cache busters). A path or method no route serves (only middleware matched) is
 * left to its 404 or 405, whatever its query.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { apiQueryChecks } from "./query.ts";
 *
 * const app = new Hono();
 * app.use(apiQueryChecks());
 * ```
 */
export function apiQueryChecks(options: ApiQueryOptions = {}): MiddlewareHandler {
  let reads: Map<string, TakenQuery> | undefined;
  return async (c, next) => {
    if (!c.req.path.startsWith("/v1/")) return await next();
    const name = repeatedQueryParameter(c.req.url);
    if (name !== undefined && matchedRoutes(c).some((route) => route.method !== "ALL")) {
      throw repeated(name);
    }
    const { documented } = options;
    if (
      documented && (c.req.method === "GET" || c.req.method === "HEAD") && c.req.url.includes("?")
    ) {
      reads ??= new Map(
        documented().filter((route) => route.method === "get").map((route) => [
          route.path.replaceAll(/\/{(.+?)}/g, "/:$1"),
          takenQueryOf(route),
        ]),
      );
      const route = matchedRoutes(c).find((route) => route.method === "GET");
      const read = route === undefined ? undefined : reads.get(route.path);
      if (route !== undefined && read !== undefined) {
        options.explainers?.get(route.path)?.(c);
        refuseUntakenQuery(c.req.url, read.taken, { groupFilters: read.groupFilters });
      }
    }
    await next();
  };
}
