/**
 * Run-time API keys (scope `admin`): `POST /v1/keys` creates one and shows
 * its secret once, `GET /v1/keys` and `GET /v1/keys/{id}` show them without
 * it, `DELETE /v1/keys/{id}` revokes one. Only a key's SHA-256 digest is
 * stored. The bootstrap keys stay in `EDGESTREAM_KEYS`; in open mode (none
 * set) every request may do anything, so keys cannot be managed and these
 * routes answer 403 `open_mode`. `GET /v1/key` tells any key (and open mode)
 * what it may do: its scopes and the streams it is limited to, so that a page
 * asks only for what its key may read.
 *
 * Two types: **secret** keys (`sk_…`) with any scopes, and **publishable**
 * keys (`pk_…`): ingest only, limited to named streams and origins, made to
 * be embedded in a web page (see `browser.ts`).
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { ApiKeyRecord } from "../store/mod.ts";
import { parseInstant, withoutCredentials } from "../validate/mod.ts";
import {
  countQuery,
  CursorQuery,
  errorsFor,
  headersOf,
  nameText,
  NextCursor,
  NO_STORE,
  storedLimitConflict,
} from "./_openapi.ts";
import {
  grantOfRequest,
  type KeyRing,
  requireKey,
  requireScope,
  SCOPE_NAMES,
  sha256,
  toHex,
} from "./auth.ts";
import { jsonBody } from "./body.ts";
import { MAX_BURST, MAX_RATE_PER_SECOND, MIN_RATE_PER_SECOND } from "../config/mod.ts";
import { ApiError } from "./errors.ts";
import { normalizeAllowedOrigin, OriginSettingError } from "./origin.ts";
import { differentEntries, MAX_ENUM_LIST_ITEMS, repeatsRemoved } from "./_list_bounds.ts";
import { quoteInput } from "../telemetry/logging.ts";

/** An origin as a request names it: `origin` is its stored form, null when the entry is none. */
interface OriginEntry {
  entry: string;
  origin: string | null;
}

/**
 * An entry of `origins`, normalised once, here: the bound of different origins and the handler
 * (which refuses one that is no origin, by index) both read its stored form.
 */
const originEntry = z.string().max(256).transform((entry): OriginEntry => {
  try {
    return { entry, origin: normalizeAllowedOrigin(entry) };
  } catch (error) {
    if (!(error instanceof OriginSettingError)) throw error;
    return { entry, origin: null };
  }
});

/** Most different streams and origins a key takes. */
const MAX_KEY_STREAMS = 256;
const MAX_KEY_ORIGINS = 64;

// The bounds of a stream's `limits`, by the same constants, so that the two cannot drift apart.
const RateLimitSchema = z.strictObject({
  eventsPerSecond: z.number().min(MIN_RATE_PER_SECOND).max(MAX_RATE_PER_SECOND).openapi({
    example: 20,
  }),
  burst: z.int().min(1).max(MAX_BURST).openapi({ example: 100 }),
}).openapi("KeyRateLimit", {
  description: "A token bucket per stream: `burst` events at once, refilled at `eventsPerSecond`",
});

/** A key's scope, one of {@linkcode SCOPE_NAMES}. */
const ScopeSchema = z.enum(SCOPE_NAMES);

const KeyInputSchema = z.strictObject({
  type: z.enum(["secret", "publishable"]).default("secret").openapi({
    description:
      "`publishable` (`pk_…`): ingest only, needs `streams` and `origins`, safe in a web page; `secret` (`sk_…`): any scopes",
  }),
  // Repeats are removed, so bounds count different entries (`["admin", "read", "ingest", "read"]`
  // names three scopes), and each list has a raw cap as sent: see _list_bounds.ts.
  scopes: z.array(ScopeSchema).min(1).max(MAX_ENUM_LIST_ITEMS).optional()
    .openapi({
      description:
        `What it may do (\`admin\` includes the others); publishable keys: \`ingest\` only; ${
          repeatsRemoved({ cap: MAX_ENUM_LIST_ITEMS })
        }`,
      example: ["ingest"],
    }),
  streams: differentEntries(nameText, {
    max: MAX_KEY_STREAMS,
    field: "streams",
    identity: (name) => name,
  }).nullish().openapi({
    description: `Streams it may use (${
      repeatsRemoved({ different: MAX_KEY_STREAMS })
    }); absent (or null) for all (secret keys only)`,
    example: ["pageviews"],
  }),
  origins: differentEntries(originEntry, {
    max: MAX_KEY_ORIGINS,
    field: "origins",
    identity: ({ entry, origin }) => origin ?? entry,
  }).nullish().openapi({
    description: `Origins web pages may use it from (CORS, beacons; ${
      repeatsRemoved({ different: MAX_KEY_ORIGINS })
    }, one written differently such as \`https://Shop.example:443\` a repeat); absent or null: none`,
    example: ["https://shop.example"],
  }),
  // Every field a key's reply shows as null takes null as left out, so a reply's fields can be
  // sent back as they are.
  rateLimit: RateLimitSchema.nullish().openapi({
    description:
      "Its rate limit, of the events it ingests (refused on a key that cannot ingest: scopes `read` only); null or left out: none",
  }),
  description: z.string().max(1024).nullish(),
  expiresAt: z.string().max(64).nullish().openapi({
    description:
      "When it stops working (ISO-8601, in the future and at most `9999-12-31T23:59:59.999Z`; digits alone, epoch milliseconds, are refused); null or left out: never",
    example: "2099-01-01T00:00:00Z",
  }),
}).openapi("KeyInput", {
  // One example of the whole body, so that the docs page's "Try it out" sends a key the quick
  // start's server creates (built from the fields it was a secret key with origins and a stream
  // the quick start does not serve).
  example: {
    type: "publishable",
    scopes: ["ingest"],
    streams: ["orders"],
    origins: ["https://shop.example"],
    rateLimit: { eventsPerSecond: 20, burst: 100 },
    description: "The shop's checkout page",
    expiresAt: "2099-01-01T00:00:00Z",
  },
});

const KeySchema = z.object({
  id: z.string().openapi({ example: "key_3f1c9a527e0b4d8e" }),
  type: z.enum(["secret", "publishable"]),
  prefix: z.string().openapi({ description: "The key's first characters", example: "pk_Xq3v" }),
  scopes: z.array(z.string()),
  streams: z.array(z.string()).nullable(),
  origins: z.array(z.string()).nullable(),
  rateLimit: RateLimitSchema.nullable(),
  description: z.string().nullable(),
  expiresAt: z.string().nullable(),
  expired: z.boolean().openapi({
    description:
      "Whether `expiresAt` has passed: the key no longer works (it stays listed until deleted)",
  }),
  createdAt: z.string(),
}).openapi("Key");

const CreatedKeySchema = KeySchema.extend({
  key: z.string().openapi({
    description: "The key itself: shown only in this reply, never stored",
    example: "pk_Xq3v…",
  }),
}).openapi("CreatedKey");

const IdParams = z.object({
  id: z.string().regex(/^key_[0-9a-f]{16}$/).openapi({
    param: { name: "id", in: "path" },
    example: "key_3f1c9a527e0b4d8e",
  }),
});

const createKeyRoute = createRoute({
  method: "post",
  path: "/v1/keys",
  operationId: "createKey",
  tags: ["keys"],
  summary: "Create an API key; its secret is in this reply only. Scope: admin.",
  request: { body: { content: { "application/json": { schema: KeyInputSchema } } } },
  middleware: jsonBody({ optional: true }),
  responses: {
    201: {
      description: "Created",
      headers: { ...headersOf("Location"), ...NO_STORE },
      content: { "application/json": { schema: CreatedKeySchema } },
    },
    ...errorsFor(400, 401, 403, 413, 415, 503),
    ...storedLimitConflict("keys"),
  },
});

const listKeysRoute = createRoute({
  method: "get",
  path: "/v1/keys",
  operationId: "listKeys",
  tags: ["keys"],
  summary:
    "Run-time API keys, oldest first, a page at a time, without their secrets. Scope: admin.",
  request: {
    query: z.object({
      limit: countQuery(
        1000,
        "Most keys on the page (default 100); a page also stops before its keys' stored records pass 1,000,000 bytes (at least one key), with a `nextCursor`",
      ),
      cursor: CursorQuery,
    }),
  },
  responses: {
    200: {
      description: "Keys",
      content: {
        "application/json": {
          schema: z.object({ keys: z.array(KeySchema), nextCursor: NextCursor }).openapi("KeyPage"),
        },
      },
    },
    ...errorsFor(400, 401, 403, 503),
  },
});

const getKeyRoute = createRoute({
  method: "get",
  path: "/v1/keys/{id}",
  operationId: "getKey",
  tags: ["keys"],
  summary: "One run-time API key, without its secret. Scope: admin.",
  request: { params: IdParams },
  responses: {
    200: { description: "Key", content: { "application/json": { schema: KeySchema } } },
    ...errorsFor(400, 401, 403, 404, 503),
  },
});

const deleteKeyRoute = createRoute({
  method: "delete",
  path: "/v1/keys/{id}",
  operationId: "deleteKey",
  tags: ["keys"],
  summary:
    "Revoke a run-time API key: it stops working on this instance at once and on every other within 2 s. Scope: admin.",
  request: { params: IdParams },
  responses: {
    204: { description: "Deleted" },
    ...errorsFor(400, 401, 403, 404, 503),
  },
});

const ownKeyRoute = createRoute({
  method: "get",
  path: "/v1/key",
  operationId: "getOwnKey",
  tags: ["keys"],
  summary:
    "What the key that sends this request may do: its scopes and the streams it is limited to. Any key, a publishable one too (whatever the Origin); no key in open mode.",
  responses: {
    200: {
      description: "The key's grant",
      content: {
        "application/json": {
          schema: z.object({
            id: z.string().nullable().openapi({
              description:
                "The run-time key's id; null for a key of `EDGESTREAM_KEYS` and in open mode",
              example: "key_3f1c9a527e0b4d8e",
            }),
            scopes: z.array(ScopeSchema).openapi({
              description: "Its scopes, with those `admin` implies (`ingest`, `read`)",
              example: ["read"],
            }),
            streams: z.array(z.string()).nullable().openapi({
              description: "The streams it may use; null for all",
              example: ["orders"],
            }),
          }).openapi("OwnKey"),
        },
      },
    },
    ...errorsFor(401, 503),
  },
});

function keyJson(record: ApiKeyRecord, nowMs: number) {
  return {
    id: record.id,
    type: record.type,
    prefix: record.prefix,
    scopes: record.scopes,
    streams: record.streams ?? null,
    origins: record.origins ?? null,
    rateLimit: record.rateLimit ?? null,
    description: record.description ?? null,
    expiresAt: record.expiresAt === undefined ? null : new Date(record.expiresAt).toISOString(),
    expired: record.expiresAt !== undefined && record.expiresAt <= nowMs,
    createdAt: new Date(record.createdAt).toISOString(),
  };
}

/** The latest `expiresAt`: the last millisecond of the year 9999, the last RFC 3339 can write. */
const LATEST_EXPIRY_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

function invalid(message: string): ApiError {
  return new ApiError(400, "invalid_key", message);
}

function randomText(bytes: number): string {
  const data = crypto.getRandomValues(new Uint8Array(bytes));
  return btoa(String.fromCharCode(...data)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
}

/** What {@linkcode registerKeyRoutes} needs. */
export interface KeyRouteDeps {
  /** The key ring, whose store holds the run-time keys. */
  keys: KeyRing;
  /** Clock (ms). */
  now: () => number;
}

/** Registers the key routes (`/v1/keys`), admin only, refused in open mode. */
export function registerKeyRoutes(app: OpenAPIHono, deps: KeyRouteDeps): void {
  const { keys } = deps;
  const admin = requireScope(keys, "admin");
  const bootstrapped = async function (_c: unknown, next: () => Promise<void>) {
    if (keys.open) {
      throw new ApiError(
        403,
        "open_mode",
        "Cannot manage API keys in open mode (no EDGESTREAM_KEYS set), where every request may do anything: set EDGESTREAM_KEYS=admin:<key> and use that key",
      );
    }
    await next();
  };
  app.use("/v1/key", requireKey(keys));
  app.openapi(ownKeyRoute, (c) => {
    const grant = grantOfRequest(c)!;
    return c.json({
      id: grant.id ?? null,
      scopes: [...grant.scopes].sort(),
      streams: grant.streams ? [...grant.streams].sort() : null,
    }, 200);
  });

  app.use("/v1/keys", bootstrapped, admin);
  app.use("/v1/keys/*", bootstrapped, admin);

  app.openapi(createKeyRoute, async (c) => {
    const input = withoutNulls(c.req.valid("json"));
    const publishable = input.type === "publishable";
    const scopes = [...new Set(input.scopes ?? (publishable ? ["ingest"] : []))];
    if (scopes.length === 0) throw invalid("A secret key needs 'scopes', e.g. [\"ingest\"]");
    if (publishable && (scopes.length !== 1 || scopes[0] !== "ingest")) {
      throw invalid(`A publishable key may only ingest; got scopes ${scopes.join(", ")}`);
    }
    // A key's bucket takes the events it ingests: on a key that cannot, it would bound nothing,
    // though its reply would show a limit.
    if (input.rateLimit && !scopes.includes("ingest") && !scopes.includes("admin")) {
      throw invalid(
        `rateLimit: a key's rate limit bounds the events it ingests, and a key of scopes ${
          scopes.join(", ")
        } ingests none: remove rateLimit, or add the ingest scope`,
      );
    }
    if (publishable && !input.streams) {
      throw invalid("A publishable key needs 'streams': the streams a page may send to");
    }
    if (publishable && !input.origins) {
      throw invalid("A publishable key needs 'origins': the pages that may use it");
    }
    // Each named by its path, as a stream definition's are.
    const origins = input.origins?.map(({ entry, origin }, i) => {
      if (origin === null) {
        throw invalid(
          `origins[${i}]: Origin '${
            quoteInput(withoutCredentials(entry))
          }' must be http(s)://host[:port] without path, e.g. 'https://app.example.com'`,
        );
      }
      return origin;
    });
    const now = deps.now();
    let expiresAt: number | undefined;
    if (input.expiresAt !== undefined) {
      // ISO-8601 only, as documented: digits are not read as epoch milliseconds.
      const ms = parseInstant(input.expiresAt);
      if (ms === null) {
        throw invalid(
          `'expiresAt' is not an ISO-8601 time (e.g. 2099-01-01T00:00:00Z): ${input.expiresAt}`,
        );
      }
      if (ms <= now) {
        throw invalid(`'expiresAt' ${new Date(ms).toISOString()} is not in the future`);
      }
      // Shown back as RFC 3339, whose years have four digits: a later one would read back in
      // ISO 8601's expanded form (`+275760-09-13T00:00:00.000Z`), which RFC 3339 parsers refuse.
      if (ms > LATEST_EXPIRY_MS) {
        throw invalid(
          `'expiresAt' ${new Date(ms).toISOString()} is after the year 9999 (at most ${
            new Date(LATEST_EXPIRY_MS).toISOString()
          })`,
        );
      }
      expiresAt = ms;
    }
    const key = `${publishable ? "pk" : "sk"}_${randomText(24)}`;
    const record: ApiKeyRecord = {
      id: `key_${toHex(crypto.getRandomValues(new Uint8Array(8)))}`,
      type: input.type,
      hash: toHex(sha256(key)),
      prefix: key.slice(0, 7),
      scopes,
      ...(input.streams ? { streams: [...new Set(input.streams)] } : {}),
      ...(origins ? { origins: [...new Set(origins)] } : {}),
      ...(input.rateLimit ? { rateLimit: input.rateLimit } : {}),
      ...(input.description !== undefined ? { description: input.description } : {}),
      ...(expiresAt !== undefined ? { expiresAt } : {}),
      createdAt: now,
    };
    // A clash of ids or hashes (KeyConflictError) is a 409 from the error table.
    await keys.store.createKey(record);
    c.header("Location", `/v1/keys/${record.id}`);
    // The one answer that holds the secret: no cache (a proxy's, a browser's) may keep it.
    c.header("Cache-Control", "no-store");
    return c.json({ ...keyJson(record, now), key }, 201);
  });

  app.openapi(listKeysRoute, async (c) => {
    const { limit, cursor } = c.req.valid("query");
    // A bad cursor is InvalidCursorError: 400 invalid_cursor from the error table.
    const page = await keys.store.pageKeys({ limit: limit ?? 100, cursor });
    const now = deps.now();
    return c.json(
      { keys: page.items.map((key) => keyJson(key, now)), nextCursor: page.nextCursor },
      200,
    );
  });

  app.openapi(getKeyRoute, async (c) => {
    const { id } = c.req.valid("param");
    const record = await keys.store.getKey(id);
    if (!record) throw new ApiError(404, "key_not_found", `No API key '${id}'`);
    return c.json(keyJson(record, deps.now()), 200);
  });

  app.openapi(deleteKeyRoute, async (c) => {
    const { id } = c.req.valid("param");
    let deleted: boolean;
    try {
      deleted = await keys.store.deleteKey(id);
    } finally {
      // Whatever the answer: a 503 whose deletion may have been applied, a 404 (the key gone
      // already, deleted through another instance or by a try answered 503): this instance must
      // not keep answering the key as valid for up to the cache bound.
      keys.forget();
    }
    if (!deleted) throw new ApiError(404, "key_not_found", `No API key '${id}'`);
    return c.body(null, 204);
  });
}

/** `value` without its null fields: the request's null is a field left out. */
function withoutNulls<T extends object>(value: T): { [K in keyof T]: Exclude<T[K], null> } {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== null)) as {
    [K in keyof T]: Exclude<T[K], null>;
  };
}
