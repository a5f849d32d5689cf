/**
 * The OpenAPI 3.1 document at `GET /openapi.json`: generated from the route
 * definitions of every route module, with the bearer scheme every operation
 * needs unless it says `security: []` (health, readiness and this document),
 * and the tags that group the operations.
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { answerWith, type ServedBytes, servedBytes } from "./docs_routes.ts";
import { headersOf, RESPONSE_HEADERS } from "./_openapi.ts";
import { documentDeliveries } from "./delivery_document.ts";

/** The operation tags, in the order the document lists them. */
export const API_TAGS: ReadonlyArray<{ name: string; description: string }> = [
  { name: "ingest", description: "Send events: HTTP batches and the acked WebSocket" },
  { name: "streams", description: "Streams with their stats, and their counters' windows" },
  { name: "live", description: "Results as they happen, over WebSocket or Server-Sent Events" },
  {
    name: "webhooks",
    description: "Webhook endpoints, their deliveries with attempt logs, replay and retry",
  },
  {
    name: "keys",
    description: "Run-time API keys: secret and publishable, with streams, origins and rate limits",
  },
  { name: "admin", description: "Operator actions" },
  { name: "health", description: "Liveness and readiness probes; they need no key" },
  { name: "meta", description: "This document; it needs no key" },
];

const DOCUMENT_ETAG = {
  description:
    "Strong ETag of the document as sent: one per encoding (the gzipped one ends in `-gzip`)",
  required: true,
  schema: { type: "string" },
} as const;

const ACCEPT_ENCODING = {
  description: "`Accept-Encoding`: the answer is gzipped to clients that accept it",
  required: true,
  schema: { type: "string" as const, enum: ["Accept-Encoding"] },
};

/** `GET /openapi.json`: served by {@linkcode serveApiDocument}, listed here so clients see it needs no key. */
const documentRoute = createRoute({
  method: "get",
  path: "/openapi.json",
  operationId: "getOpenApiDocument",
  tags: ["meta"],
  security: [],
  summary: "This OpenAPI 3.1 document",
  responses: {
    200: {
      description: "The document (gzipped to clients that accept it)",
      headers: { ETag: DOCUMENT_ETAG, ...headersOf("Cache-Control"), Vary: ACCEPT_ENCODING },
      content: { "application/json": { schema: z.object({ openapi: z.string() }).loose() } },
    },
    304: {
      description: "Not modified: `If-None-Match` holds the `ETag` of this representation",
      headers: { ETag: DOCUMENT_ETAG, ...headersOf("Cache-Control"), Vary: ACCEPT_ENCODING },
    },
  },
});

/**
 * Serves the OpenAPI document of every route registered on `app`, at `/openapi.json`. It is
 * generated once, on the first request (every route is registered by then), and served as the
 * files of `/docs` are: gzipped to clients that accept it, with a strong `ETag` (304 on a
 * matching `If-None-Match`) and `Cache-Control: no-cache`.
 */
export function serveApiDocument(app: OpenAPIHono): void {
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
  });
  app.openAPIRegistry.registerPath(documentRoute);
  documentDeliveries(app);
  app.openAPIRegistry.registerComponent("headers", REQUEST_ID, RESPONSE_HEADERS[REQUEST_ID]);
  app.openAPIRegistry.registerComponent("headers", NOSNIFF, RESPONSE_HEADERS[NOSNIFF]);
  app.openAPIRegistry.registerComponent("responses", "HostNotAllowed", {
    description:
      "Open mode only (no `EDGESTREAM_KEYS`): a request addressed to a host that is not a loopback name or in `EDGESTREAM_ALLOWED_HOSTS` is `421 host_not_allowed`, on any path",
    headers: EVERY_ANSWER_HEADERS,
    content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
  });
  let served: Promise<ServedBytes> | undefined;
  app.get("/openapi.json", async (c) => {
    served ??= servedBytes(UTF8.encode(JSON.stringify(withRequestIds(app))), true);
    return answerWith(c, await served, JSON_TYPE);
  });
}

const UTF8 = new TextEncoder();
const REQUEST_ID = "X-Request-Id";
const NOSNIFF = "X-Content-Type-Options";

/** The headers every answer carries (see `request_log.ts`), as references to their components. */
const EVERY_ANSWER_HEADERS = {
  [REQUEST_ID]: { $ref: `#/components/headers/${REQUEST_ID}` },
  [NOSNIFF]: { $ref: `#/components/headers/${NOSNIFF}` },
};

// deno-lint-ignore no-explicit-any
type Json = any;

/**
 * The document of `app`, with `X-Request-Id` and `X-Content-Type-Options` (references to their
 * components) on every response (a WebSocket's 101 too): every answer carries them, set by the
 * request log (`request_log.ts`).
 */
function withRequestIds(app: OpenAPIHono): Json {
  // A copy: the generator hands out the route modules' own objects, which this changes.
  const document: Json = structuredClone(app.getOpenAPI31Document(DOCUMENT));
  defaultsInDescriptions(document);
  for (const [path, item] of Object.entries<Json>(document.paths ?? {})) {
    for (const [method, operation] of Object.entries<Json>(item)) {
      // Every body over 1 MiB is refused (limitBody by its Content-Length, the route's reader as
      // it arrives; ingest has its own), also one sent to an operation that takes none: a body
      // may come with any method but GET (and HEAD), whose body the runtime drops (a Deno
      // `Request` of either has none).
      if (method !== "get" && operation?.responses && !operation.responses["413"]) {
        operation.responses["413"] = {
          description: operation.requestBody
            ? "Body over 1 MiB: `payload_too_large`"
            : "Body over 1 MiB, though the operation reads none: `payload_too_large`",
          content: { [JSON_TYPE]: { schema: { $ref: "#/components/schemas/Error" } } },
        };
      }
      // A body is read within 10 s (readLimitedBody, through readJsonText or noBody), or 408;
      // a DELETE reads none, so it never waits for one.
      if (
        method !== "get" && method !== "delete" && operation?.responses &&
        !operation.responses["408"]
      ) {
        operation.responses["408"] = {
          description: operation.requestBody
            ? "Body not received within 10 s: `body_timeout`"
            : "Body sent, though the operation takes none, not received within 10 s: `body_timeout`",
          content: { [JSON_TYPE]: { schema: { $ref: "#/components/schemas/Error" } } },
        };
      }
      // Any API operation answers a query parameter given twice with 400 (src/http/query.ts).
      if (path.startsWith("/v1/") && operation?.responses && !operation.responses["400"]) {
        operation.responses["400"] = {
          description: "A query parameter given twice: `invalid_query`",
          content: { [JSON_TYPE]: { schema: { $ref: "#/components/schemas/Error" } } },
        };
      }
      // Ingest answers a page an admitted origin, whatever the status (`browser.ts`); the rest of
      // the API, but the WebSocket ingest, an origin listed or the key's (`cors.ts`).
      const cors = path === INGEST_PATH && method === "post"
        ? INGEST_CORS_HEADERS
        : path === INGEST_SOCKET_PATH
        ? SOCKET_VARY
        : path.startsWith("/v1/")
        ? API_CORS_HEADERS
        : {};
      for (const [status, response] of Object.entries<Json>(operation?.responses ?? {})) {
        // A WebSocket upgrade's `101` carries no CORS header (`cors.ts` leaves it alone).
        const headers = status === "101" ? {} : cors;
        response.headers = { ...response.headers, ...headers, ...EVERY_ANSWER_HEADERS };
      }
      // The Host check (open mode) runs before every route (`origin.ts`).
      if (operation?.responses) operation.responses["421"] = HOST_NOT_ALLOWED;
    }
  }
  return document;
}
/**
 * Moves every `default` of a schema a request reaches (its body's, its parameters', and the
 * components they reference) into the schema's description: openapi-typescript, by default
 * (`defaultNonNullable`), types a property with a `default` as required in a referenced
 * component, so a generated client would have to send what the server fills in itself. The
 * server's default stays told, as text; a client may omit the field.
 */
function defaultsInDescriptions(document: Json): void {
  const DATA_KEYWORDS = new Set(["example", "examples", "enum", "const"]);
  const seen = new Set<Json>();
  /** A schema, or an object or array holding schemas (a request body, a parameter, a map). */
  function visit(node: Json): void {
    if (node === null || typeof node !== "object" || seen.has(node)) return;
    seen.add(node);
    if (Array.isArray(node)) return node.forEach(visit);
    if (typeof node.$ref === "string" && node.$ref.startsWith("#/")) {
      visit(
        node.$ref.slice(2).split("/").reduce((item: Json, key: string) => item?.[key], document),
      );
    }
    for (const [key, value] of Object.entries<Json>(node)) {
      // A map of schemas (`properties`) may name a property `default`: only its values are read.
      if (key === "properties" || key === "patternProperties" || key === "$defs") {
        Object.values(value ?? {}).forEach(visit);
      } else if (DATA_KEYWORDS.has(key)) {
        // Values, not schemas: an example may hold a field named `default`.
      } else if (key === "default") {
        const told = `Default: \`${JSON.stringify(value)}\``;
        node.description = node.description ? `${node.description}. ${told}` : told;
        delete node.default;
      } else {
        visit(value);
      }
    }
  }
  for (const item of Object.values<Json>(document.paths ?? {})) {
    for (const operation of Object.values<Json>(item)) {
      visit(operation?.requestBody);
      visit(operation?.parameters);
    }
  }
}

const HOST_NOT_ALLOWED = { $ref: "#/components/responses/HostNotAllowed" };
const JSON_TYPE = "application/json";
const INGEST_PATH = "/v1/streams/{stream}/events";
const INGEST_CORS_HEADERS = {
  ...headersOf("Access-Control-Allow-Origin", "Access-Control-Expose-Headers"),
  Vary: {
    ...RESPONSE_HEADERS.Vary,
    description: "`Origin` on an answer to a request that sent one",
  },
};
const INGEST_SOCKET_PATH = "/v1/streams/{stream}/ws";
const API_CORS_HEADERS = {
  ...INGEST_CORS_HEADERS,
  Vary: {
    ...RESPONSE_HEADERS.Vary,
    description: "`Origin`, on every answer, to a request without one too",
  },
  "Access-Control-Allow-Origin": {
    ...RESPONSE_HEADERS["Access-Control-Allow-Origin"],
    description:
      "To a page whose `Origin` `EDGESTREAM_ALLOWED_ORIGINS` or the key's `origins` list (CORS), and on a `401` or a key's `403` to any page: that origin",
  },
};

/**
 * The WebSocket ingest's: `cors.ts` leaves an upgrade alone (its `101` gets none), but varies the
 * rest by `Origin`.
 */
const SOCKET_VARY = {
  Vary: {
    ...RESPONSE_HEADERS.Vary,
    description: "`Origin`, on every answer to a request that asks no WebSocket upgrade",
  },
};

const DOCUMENT = {
  openapi: "3.1.0",
  info: {
    title: "edgestream",
    version: "0.1.0",
    description:
      "Real-time event stream processor: ingest, windowed counters, fan-out. Every answer carries `X-Request-Id` and `X-Content-Type-Options: nosniff`. A method a path does not take (no operation here) is answered `405 method_not_allowed` with the methods it takes in `Allow` (`OPTIONS` gets them with `204`), on a `/v1/…` path only after its key check (`401` without a valid key, `403` to a key with none of the scopes the path's operations take), and on a `/v1/…` path with `Vary: Origin` (on the ingest path `/v1/streams/{stream}/events` only to a request with an `Origin`); in open mode a request to another host gets `421` on any path (every operation lists it). A `GET` of a `/v1/…` operation refuses a query parameter the operation does not list with `400 invalid_query`, naming it and those listed (the cache-buster `_` is taken by each and ignored; the counter reads take `group.<field>` filters too), before its key and what its path names are looked up, as a parameter given twice.",
  },
  // The API is served where this document is: a client resolves paths against its URL's origin.
  servers: [{ url: "/" }],
  security: [{ bearer: [] }],
  tags: [...API_TAGS],
};
