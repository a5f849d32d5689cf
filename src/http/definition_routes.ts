/**
 * Streams at run time: `PUT /v1/streams/{stream}` creates (201) or replaces
 * (200) a stream from the same JSON as one config-file stream definition;
 * `DELETE /v1/streams/{stream}` deletes it (204; its data expires by
 * retention). Both need the `admin` scope. Config-file streams are
 * read-only here (409 `stream_from_config`), and an existing counter keeps
 * its window, aggregate and groupBy (409 `counter_changed`). The rules and
 * how other instances learn of a change live in `config/registry.ts`.
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { getLogger } from "@logtape/logtape";
import type { Context } from "hono";
import type { DefinitionPrecondition, StreamRegistry } from "../config/mod.ts";
import { duplicateKeyProblem, StreamDefinitionError } from "../config/mod.ts";
import { type Store, StoreUnavailableError } from "../store/mod.ts";
import { errorsFor, headersOf, jsonContent, NAME, storedLimitConflict } from "./_openapi.ts";
import { type KeyRing, requireScope } from "./auth.ts";
import { bodyTimeoutOf, parseJsonBody, readJsonText } from "./body.ts";
import { ApiError, invalidNameParameter } from "./errors.ts";
import { preconditionOf, STAR } from "./_etag.ts";
import { streamFields, streamJson, StreamSchema } from "./stream_routes.ts";
import { quoteInput } from "../telemetry/logging.ts";

const logger = getLogger(["edgestream", "http"]);

/** What the definition routes need. */
export interface DefinitionRouteDeps {
  /** The streams served, where definitions are changed. */
  streams: StreamRegistry;
  /** Where state lives (for the stats in the reply). */
  store: Store;
  /** API keys; an empty ring means open development mode. */
  keys: KeyRing;
  /** Largest definition accepted, in bytes. @default {65536} */
  maxBodyBytes?: number;
  /** Clock (ms), for an idle stream's watermark in the reply (as GET answers it). */
  now: () => number;
}

const streamParam = {
  name: "stream",
  in: "path" as const,
  required: true,
  schema: { type: "string" as const, pattern: NAME.source },
  example: "signups",
};

/**
 * The stream a `PUT` stored, as `GET /v1/streams/{stream}` shows it, but for `stats` being null
 * when reading them failed once the definition was stored.
 */
const StoredStreamSchema = z.object({
  ...StreamSchema.shape,
  // The shared definition schema by reference, as `Stream` has it (spread, it is rendered as an
  // `allOf` of it and a nullable object).
  definition: z.unknown().openapi(
    { $ref: "#/components/schemas/StreamDefinition" } as Record<string, unknown>,
  ),
  stats: z.union([StreamSchema.shape.stats, z.null()]).openapi({
    description:
      "null when the store failed the read of the stats after the definition was stored (the write applied, as `ETag` says): `GET` the stream for them, do not send the `PUT` again",
  }),
}).openapi("StoredStream");

/** `PUT /v1/streams/{stream}`. */
const putStreamRoute = createRoute({
  method: "put",
  path: "/v1/streams/{stream}",
  operationId: "putStream",
  tags: ["streams"],
  summary: "Create or replace a stream. Scope: admin.",
  description:
    "The body is one stream definition, as a config file's `streams.<name>` holds it, checked the same way (400 `invalid_definition` names the path of the bad value, a `groupBy` field named twice too). A new version reaches every instance within 5 s; the definition stored, sent again (keys in any order), is no change (200, the same version). Counters may be added and removed, transforms and alerts changed; an existing counter's window, aggregate or groupBy may not (409 `counter_changed`: add a new counter instead). Config-file streams cannot be changed here (409 `stream_from_config`). A stream deleted and created again starts empty. `If-Match: \"<version>\"` (the `ETag` of `GET /v1/streams/{stream}`) replaces only that version, `If-None-Match: *` only creates: otherwise 412 `precondition_failed`.",
  request: {
    params: undefined,
    headers: z.object({
      "if-match": z.string().optional().openapi({
        description:
          'Entity tags (`"3"`) of the versions this write replaces, comma-separated (empty elements ignored), or `*`; compared strongly (RFC 9110): a weak tag (`W/"3"`), or one that is no version (`"x"`), matches none (412); a header that is not entity tags is 400',
      }),
      "if-none-match": z.string().regex(STAR).optional().openapi({
        description:
          "`*`: create only (empty list elements beside it are ignored: `*,` is `*`); anything else is 400",
      }),
    }),
    body: {
      required: true,
      content: {
        "application/json": { schema: { $ref: "#/components/schemas/StreamDefinition" } },
      },
    },
  },
  responses: {
    200: { ...jsonContent(StoredStreamSchema, "Replaced"), headers: headersOf("ETag") },
    201: {
      ...jsonContent(StoredStreamSchema, "Created"),
      headers: headersOf("ETag", "Location"),
    },
    ...errorsFor(400, 401, 403, 412, 413, 415, 503),
    ...storedLimitConflict("streams"),
  },
});

/** `DELETE /v1/streams/{stream}`. */
const deleteStreamRoute = createRoute({
  method: "delete",
  path: "/v1/streams/{stream}",
  operationId: "deleteStream",
  tags: ["streams"],
  summary: "Delete a stream created through the API. Scope: admin.",
  description:
    "Every instance stops serving it within 5 s; its data is not read again and expires by retention. Config-file streams cannot be deleted here (409 `stream_from_config`), except, with `force=true`, one that the answering instance's config file does not hold (its record stays in the store after every deployment dropped it from its file).",
  request: {
    headers: z.object({
      "if-match": z.string().optional().openapi({
        description:
          'Entity tags (`"3"`) of the versions this deletes, comma-separated (empty elements ignored), or `*`; compared strongly (RFC 9110): a weak tag (`W/"3"`), or one that is no version (`"x"`), matches none (412); a header that is not entity tags is 400',
      }),
      "if-none-match": z.string().regex(STAR).optional().openapi({
        description:
          "`*`: delete only a stream that does not exist, so never (412 when it exists, 404 when not), as RFC 9110 evaluates it (empty list elements beside it are ignored: `*,` is `*`); anything else is 400",
      }),
    }),
    query: z.object({
      force: z.enum(["true", "false"]).optional().openapi({
        description:
          "`true`: delete the record of a config-file stream this instance's file does not hold.",
      }),
    }),
  },
  responses: {
    204: { description: "Deleted" },
    ...errorsFor(400, 401, 403, 404, 409, 412, 503),
  },
});

/**
 * The request's `If-Match` and `If-None-Match` (see `preconditionOf` in `_etag.ts`).
 * `If-None-Match: *` holds only while the stream does not exist, on `DELETE` as on `PUT` (RFC
 * 9110 §13.1.2): a delete is not made without a word because of a precondition that failed.
 */
function preconditionOfRequest(c: Context): DefinitionPrecondition | undefined {
  return preconditionOf(
    { "if-match": c.req.header("If-Match"), "if-none-match": c.req.header("If-None-Match") },
    "stream",
  );
}

function streamName(c: Context): string {
  const name = c.req.param("stream") ?? "";
  if (!NAME.test(name)) throw invalidNameParameter("stream", name);
  return name;
}

async function readDefinition(c: Context, maxBodyBytes: number): Promise<unknown> {
  const text = await readJsonText(c.req.raw, maxBodyBytes, { timeoutMs: bodyTimeoutOf(c) });
  const value = parseJsonBody(text, false);
  // As in a config file: JSON keeps the last of a key given twice, so `"counters"` sent twice
  // would drop the first without a word.
  const duplicate = duplicateKeyProblem(text);
  if (duplicate !== undefined) {
    throw new StreamDefinitionError(
      "invalid_definition",
      `Invalid stream definition: ${duplicate}`,
    );
  }
  return value;
}

/**
 * Registers `PUT` and `DELETE /v1/streams/{stream}` (scope `admin`).
 *
 * @example
 * ```ts
 * import { OpenAPIHono } from "@hono/zod-openapi";
 * import { compileConfig, StreamRegistry } from "../config/mod.ts";
 * import { MemoryStore } from "../store/mod.ts";
 * import { KeyRing } from "./auth.ts";
 * import { registerDefinitionRoutes } from "./definition_routes.ts";
 *
 * const app = new OpenAPIHono();
 * registerDefinitionRoutes(app, {
 *   streams: new StreamRegistry(compileConfig({ streams: {} })),
 *   store: new MemoryStore(),
 *   keys: await KeyRing.parse(""),
 *   now: Date.now,
 * });
 * ```
 */
export function registerDefinitionRoutes(app: OpenAPIHono, deps: DefinitionRouteDeps): void {
  const admin = requireScope(deps.keys, "admin");
  const maxBodyBytes = deps.maxBodyBytes ?? 65_536;
  const path = putStreamRoute.getRoutingPath();
  // Plain handlers with the routes documented: the body is read by hand so
  // bad JSON and a bad definition get their own codes and paths.
  app.openAPIRegistry.registerPath({
    ...putStreamRoute,
    request: { ...putStreamRoute.request, params: undefined },
    parameters: [streamParam],
  });
  app.put(path, admin, async (c) => {
    const name = streamName(c);
    // A definition is compiled as a config file's `streams.<name>`, where this key is refused
    // (it would set the object's prototype): say so of the name, not of the body.
    if (name === "__proto__") {
      throw new ApiError(
        400,
        "invalid_request",
        "Invalid path parameter stream: '__proto__' cannot name a stream (a config file cannot hold it either); choose another name",
      );
    }
    const expected = preconditionOfRequest(c);
    const raw = await readDefinition(c, maxBodyBytes);
    const { created, registered } = await deps.streams.put(name, raw, expected);
    let body;
    try {
      body = await streamJson(registered.stream, deps);
    } catch (error) {
      if (!(error instanceof StoreUnavailableError)) throw error;
      // The definition is stored already: a failed read of the reply's stats (Redis answering
      // BUSY or LOADING) must not make the write look failed. A 503 would have the client send
      // it again, and its `If-Match` or `If-None-Match: *`, which this write made stale, would
      // then be 412 as if someone else had changed the stream. The write's answer stands, with
      // its ETag; only the stats are missing (GET the stream for them). The store's failure is
      // still said, or the request log would show a clean write while the store was failing.
      logger.warn(
        "Stream '{stream}' was stored as version {version}, but its stats for the reply could not be read: {error}",
        { stream: name, version: registered.version, error: error.message },
      );
      body = { ...streamFields(registered.stream, deps), stats: null };
    }
    c.header("ETag", `"${registered.version}"`);
    if (created) c.header("Location", `/v1/streams/${name}`);
    return c.json(body, created ? 201 : 200);
  });
  app.openAPIRegistry.registerPath({ ...deleteStreamRoute, parameters: [streamParam] });
  app.delete(path, admin, async (c) => {
    const name = streamName(c);
    const force = c.req.query("force");
    if (force !== undefined && force !== "true" && force !== "false") {
      throw new ApiError(
        400,
        "invalid_query",
        `'force' is true or false, got '${quoteInput(force)}'`,
      );
    }
    const expected = preconditionOfRequest(c);
    await deps.streams.remove(name, { force: force === "true", expected });
    return c.body(null, 204);
  });
}
