/**
 * Wires the stages into one Hono app: error handling, the route modules and
 * the OpenAPI document. The only module (with `env.ts` and `main.ts`) that
 * knows the concrete pieces; it holds no handler of its own.
 *
 * @module
 */
import { OpenAPIHono, type RouteConfig, z } from "@hono/zod-openapi";
import { type CompiledStream, formatPath, StreamRegistry } from "./config/mod.ts";
import { type IngestObserver, LiveHub, type LogDemand } from "./fanout/mod.ts";
import type { WebhookService } from "./fanout/webhooks/mod.ts";
import { serveApiDocument } from "./http/api_document.ts";
import type { KeyRing } from "./http/auth.ts";
import { type BodyLimits, DEFAULT_LIMITS, limitBody } from "./http/body.ts";
import { apiCors } from "./http/cors.ts";
import { registerDashboardRoutes } from "./http/dashboard_routes.ts";
import { registerDefinitionRoutes } from "./http/definition_routes.ts";
import { admitsListedOrigins, isIngestRequest } from "./http/browser.ts";
import { registerDocsRoutes } from "./http/docs_routes.ts";
import { ApiError, errorResponse, methodNotAllowed } from "./http/errors.ts";
import { headAnswers, withoutHeadLength } from "./http/head.ts";
import { type LiveRouteOptions, registerLiveRoutes } from "./http/live_routes.ts";
import { OpenConnections } from "./http/open_connections.ts";
import { originGuard, OriginPolicy, type OriginSettings } from "./http/origin.ts";
import { registerKeyRoutes } from "./http/key_routes.ts";
import { apiQueryChecks } from "./http/query.ts";
import { requestLog } from "./http/request_log.ts";
import { ingestApp, queryExplainers, registerStreamRoutes } from "./http/stream_routes.ts";
import { registerWebhookRoutes } from "./http/webhook_routes.ts";
import {
  type GroupCommitOptions,
  GroupCommitter,
  ingestFanoutFor,
  RejectedCounts,
} from "./ingest/mod.ts";
import type { Store } from "./store/mod.ts";
import { eventIssueMessage, objectKeysAt, unrecognizedKeys } from "./validate/mod.ts";
import { quoteInput } from "./telemetry/logging.ts";

/** What {@linkcode createApp} wires together. */
export interface AppOptions {
  /**
   * The streams served: a {@linkcode StreamRegistry} (config-file streams and
   * streams created at run time, shared through its definition store), or
   * compiled streams by name, served with a private registry over `store`. A registry given
   * without a `data` option reads the watermarks that mark partial windows in `store`.
   */
  streams: ReadonlyMap<string, CompiledStream>;
  /** Where state lives. */
  store: Store;
  /** API keys; an empty ring means open development mode. */
  keys: KeyRing;
  /** Clock (ms). @default {Date.now} */
  now?: () => number;
  /** Body limits. @default {DEFAULT_LIMITS} */
  limits?: BodyLimits;
  /** Fan-out consumers that ask for events in the result log. */
  logDemand?: readonly LogDemand[];
  /** Told about every applied batch (live subscriptions). */
  observers?: readonly IngestObserver[];
  /** Live subscriptions; its observer and log demand are added. @default {a LiveHub, not shared} */
  live?: LiveHub;
  /** WebSocket ingest and subscription settings. */
  liveRoutes?: LiveRouteOptions;
  /** Webhook fan-out: its routes, log demand and observer are added, and the sweep runs it. */
  webhooks?: WebhookService;
  /**
   * Host names open mode answers besides loopback ones, and origins besides
   * the server's own that may change state (see `http/origin.ts`).
   * @default {none}
   */
  origins?: OriginSettings;
  /**
   * Group commit: concurrent ingest requests of a stream share one store
   * apply (`ingest/group_commit.ts`); `true`, its bounds or a committer of
   * `store` turn it on.
   * @default {on, except for the memory store, where queueing gains nothing}
   */
  groupCommit?: boolean | GroupCommitOptions | GroupCommitter;
  /**
   * Makes where the rejected events of requests that accepted none wait for their count's apply
   * (`ingest/rejected_counts.ts`), given what it must apply to (the store as the app writes it,
   * through group commit when on): a test keeps it to flush it.
   * @default {a `RejectedCounts` of its defaults}
   */
  rejectedCounts?: (target: Pick<Store, "applyBatch">, now: () => number) => RejectedCounts;
  /**
   * WebSocket ingest connections, held so a stopping server closes them after
   * answering what they read (see `http/open_connections.ts`); once closing,
   * new WebSockets and subscriptions get 503. @default {a private one}
   */
  connections?: OpenConnections;
  /**
   * Whether the server is still starting (its webhook endpoints loading): `/readyz` then answers
   * 503 `starting`. @default {never}
   */
  starting?: () => boolean;
}

/** What a request part is called in a `400` message of the schema checks. */
const TARGETS: Record<string, string> = {
  json: "request body",
  param: "path parameter",
  query: "query parameter",
  header: "header",
};

/**
 * Builds the HTTP app.
 *
 * @example
 * ```ts
 * import { createApp } from "./app.ts";
 * import { compileConfig } from "./config/mod.ts";
 * import { KeyRing } from "./http/auth.ts";
 * import { MemoryStore } from "./store/mod.ts";
 *
 * const streams = compileConfig({
 *   streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
 * });
 * const app = createApp({ streams, store: new MemoryStore(), keys: await KeyRing.parse("") });
 * const res = await app.request("/v1/streams/orders/events", {
 *   method: "POST",
 *   headers: { "Content-Type": "application/json" },
 *   body: JSON.stringify({ amount: 5 }),
 * });
 * console.log(res.status); // 202
 * ```
 */
export function createApp(options: AppOptions): OpenAPIHono {
  const { keys, webhooks } = options;
  const streams = options.streams instanceof StreamRegistry
    ? options.streams
    : new StreamRegistry(options.streams, { data: options.store });
  // A registry built without its data store reads watermarks (for partial windows) in this one.
  streams.useDataStore(options.store);
  // Every module reads and writes stream data through it: it adds the generation.
  const store = streams.wrap(options.store);
  const now = options.now ?? Date.now;
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const live = options.live ?? new LiveHub(streams, store);
  const consumers = {
    demand: [...(options.logDemand ?? []), live, ...(webhooks ? [webhooks] : [])],
    observers: [
      ...(options.observers ?? []),
      live.observer,
      ...(webhooks ? [webhooks.observer] : []),
    ],
  };
  const inFlight = new Set<string>();
  const grouping = options.groupCommit ?? store.kind !== "memory";
  let groupCommit: GroupCommitter | undefined;
  if (grouping instanceof GroupCommitter) groupCommit = grouping;
  else if (grouping) groupCommit = new GroupCommitter(store, grouping === true ? {} : grouping);
  const rejectedCounts = options.rejectedCounts?.(groupCommit ?? store, now) ??
    new RejectedCounts(groupCommit ?? store, { now });
  const ingestOptions = (stream: string) => ({
    ...ingestFanoutFor(stream, consumers),
    inFlight,
    groupCommit,
    rejectedCounts,
  });

  // The keys a route's JSON body may hold at a path, from its documented schema.
  const bodyKeysTaken = (method: string, routePath: string, path: readonly PropertyKey[]) => {
    const documented = routePath.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
    for (const definition of app.openAPIRegistry.definitions) {
      if (definition.type !== "route") continue;
      const route = definition.route as RouteConfig;
      if (route.method !== method.toLowerCase() || route.path !== documented) continue;
      const media = route.request?.body?.content?.["application/json"];
      const schema = media && "schema" in media ? media.schema : undefined;
      return schema instanceof z.ZodType ? objectKeysAt(schema, path) : undefined;
    }
    return undefined;
  };
  const app = new OpenAPIHono({
    defaultHook(result, c) {
      if (!result.success) {
        const issue = result.error.issues[0];
        // Worded as an event's issues are: a field the request lacks is "missing" (zod says
        // "Invalid input", or "expected string, received undefined"), found in the value itself.
        // (@hono/zod-validator passes the value checked as `data`, though the hook's type omits it.)
        // A key the body may not hold names the one meant, if a misspelling is near one.
        const taken = issue.code === "unrecognized_keys" && result.target === "json"
          ? bodyKeysTaken(c.req.method, c.req.routePath, issue.path)
          : undefined;
        const message = taken === undefined
          ? eventIssueMessage(issue, (result as { data?: unknown }).data)
          : unrecognizedKeys((issue as { keys: string[] }).keys, taken);
        throw new ApiError(
          400,
          // Query parameters the routes check by hand are invalid_query too: one code for both.
          result.target === "query" ? "invalid_query" : "invalid_request",
          issue.path.length === 0
            ? `Invalid ${TARGETS[result.target] ?? result.target}: ${message}`
            : `Invalid ${TARGETS[result.target] ?? result.target} ${
              formatPath(issue.path)
            }: ${message}`,
        );
      }
    },
  });
  app.onError(errorResponse);
  // First, so every response has its X-Request-Id and every request its log line.
  app.use(requestLog());
  // A HEAD answer gets GET's Content-Length, and a subscription opened for it ends with it.
  app.use(headAnswers());
  // Before every route, so a refused request changes nothing.
  // Ingest's Origin verdict waits for its key, whose origins may admit it.
  const originPolicy = new OriginPolicy({ open: keys.open, ...options.origins });
  app.use(originGuard(originPolicy, { defer: admitsListedOrigins }));
  // The methods of the routes serving a path (API, pages), or undefined when none does.
  let routes: ReturnType<typeof servedRoutes> | undefined;
  const methodsOf = (path: string) => {
    routes ??= servedRoutes(app);
    const matched = routes.filter((route) => route.pattern.test({ pathname: path }));
    return matched.length === 0
      ? undefined
      : [...new Set(matched.flatMap((route) => route.methods))].sort();
  };
  // Pages on other origins: preflights granted before any key is asked for, answers readable by
  // the origins listed (ingest has its own, in its route); the errors of the middleware below too.
  app.use(
    "/v1/*",
    apiCors({
      listsOrigin: (origin) => originPolicy.lists(origin),
      foreignOrigin: (request) => originPolicy.foreignOrigin(request),
      methodsOf,
    }),
  );
  // Ingest reads its own body, with its own limits, once its key and the page's origin are
  // admitted; every other body is read by its route, within 1 MiB (413 here already when its
  // Content-Length says more) and the body time limit. (Ingest requests that reach the chain name
  // no stream: their key's 401, or the name's 400, comes first, as for a name, the body unread.)
  const bodyLimit = limitBody({ timeoutMs: limits.bodyTimeoutMs });
  app.use((c, next) =>
    c.req.method === "POST" && admitsListedOrigins(c.req.raw) ? next() : bodyLimit(c, next)
  );
  // One value per query parameter (which of two a client meant cannot be told), and on a read
  // only those it takes: before its key and what it names are looked up.
  app.use(apiQueryChecks({
    documented: () =>
      app.openAPIRegistry.definitions.flatMap((definition) =>
        definition.type === "route" ? [definition.route as RouteConfig] : []
      ),
    explainers: queryExplainers,
  }));
  // A path served, asked with another method, is a 405 naming the methods it takes.
  app.notFound((c) => {
    const methods = methodsOf(c.req.path);
    // OPTIONS asks what it takes (a CORS preflight of a route that allows none gets no grant).
    if (methods && c.req.method === "OPTIONS") {
      return c.body(null, 204, { Allow: methods.join(", ") });
    }
    // A HEAD is answered GET's headers: its Content-Length counts GET's body, which says GET.
    const method = c.req.method === "HEAD" ? "GET" : c.req.method;
    if (methods && !methods.includes(c.req.method)) {
      return errorResponse(methodNotAllowed(c.req.path, method, methods), c);
    }
    return errorResponse(
      new ApiError(
        404,
        "not_found",
        `No route for ${quoteInput(method)} ${quoteInput(c.req.path)}${
          trailingSlashHint(c.req.path, method, methodsOf)
        }`,
      ),
      c,
    );
  });

  const connections = options.connections ?? new OpenConnections();
  const streamDeps = {
    streams,
    store,
    keys,
    now,
    limits,
    ingestOptions,
    sweepConsumers: webhooks ? [webhooks] : [],
    stopping: () => connections.stopping,
    starting: options.starting,
  };
  registerStreamRoutes(app, streamDeps);
  // The hot path: ingest requests skip the middleware chain for one handler that runs its steps.
  const ingest = ingestApp(streamDeps, { origins: originPolicy });
  const chain = app.fetch;
  app.fetch = (request, env, executionCtx) =>
    isIngestRequest(request)
      ? ingest.fetch(request, env, executionCtx)
      : chain(request, env, executionCtx);
  registerDefinitionRoutes(app, { streams, store, keys, now });
  if (webhooks) registerWebhookRoutes(app, { webhooks, keys, now });
  registerKeyRoutes(app, { keys, now });
  registerDashboardRoutes(app, { open: keys.open, webhooks: webhooks !== undefined });
  registerLiveRoutes(app, {
    streams,
    store,
    keys,
    now,
    limits,
    live,
    ingestOptions,
    options: options.liveRoutes,
    connections,
  });

  serveApiDocument(app);
  registerDocsRoutes(app);

  // A HEAD of a subscription says no Content-Length (Hono's body-less HEAD answer would say 0).
  app.fetch = withoutHeadLength(app.fetch);
  return app;
}

/**
 * What a 404 for `path` adds when `path` ends with a slash and the path without it is served (a
 * route's path ends without one): `; without the trailing slash: GET /docs`, or, when that path
 * takes other methods, `; without the trailing slash, /docs takes GET, HEAD`. Empty otherwise.
 */
function trailingSlashHint(
  path: string,
  method: string,
  methodsOf: (path: string) => string[] | undefined,
): string {
  // The trailing slashes trimmed by a loop: `/\/+$/` backtracks quadratically over a long run of
  // slashes that a later character ends (60,000 of them held the event loop for seconds).
  let end = path.length;
  while (end > 0 && path.charCodeAt(end - 1) === 0x2f) end--;
  if (end === path.length || end === 0) return "";
  const bare = path.slice(0, end);
  const methods = methodsOf(bare);
  if (methods === undefined) return "";
  return methods.includes(method)
    ? `; without the trailing slash: ${quoteInput(method)} ${quoteInput(bare)}`
    : `; without the trailing slash, ${quoteInput(bare)} takes ${methods.join(", ")}`;
}

/**
 * The routes `app` serves (API routes, pages, health checks), as a path
 * pattern with the methods it takes (upper case, `HEAD` beside `GET`): what
 * a 405 names in `Allow`. Middleware (`app.use`) is not a route.
 */
export function servedRoutes(
  app: { routes: readonly { method: string; path: string }[] },
): { pattern: URLPattern; methods: string[] }[] {
  const byPath = new Map<string, Set<string>>();
  for (const { method, path } of app.routes) {
    if (method === "ALL") continue;
    const methods = byPath.get(path) ?? new Set<string>();
    methods.add(method.toUpperCase());
    if (method === "GET") methods.add("HEAD");
    byPath.set(path, methods);
  }
  // Hono's `:name` is URLPattern's too: one path segment.
  return [...byPath].flatMap(([path, methods]) => {
    try {
      return [{ pattern: new URLPattern({ pathname: path }), methods: [...methods].sort() }];
    } catch {
      // A Hono pattern URLPattern does not read (a regex parameter `:id{[0-9]+}`): such a
      // path answers 404 for other methods rather than every 404 failing.
      return [];
    }
  });
}
