/**
 * API keys with scopes, from the environment
 * (`EDGESTREAM_KEYS="admin:<key>,ingest:<key>,read:<key>"`), sent as
 * `Authorization: Bearer <key>` and compared in constant time.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Context, MiddlewareHandler } from "hono";
import { ApiError } from "./errors.ts";
import { annotateRequest } from "./request_log.ts";

const logger = getLogger(["edgestream", "http"]);

/** What a key may do. `admin` implies the others. */
export type Scope = "ingest" | "read" | "admin";

const SCOPES = new Set<Scope>(["ingest", "read", "admin"]);

/** A configured key. The key text itself is kept only as a digest. */
interface KeyEntry {
  scope: Scope;
  digest: Uint8Array;
}

/** Checks presented keys against the configured ones. */
export class KeyRing {
  #keys: KeyEntry[];

  private constructor(keys: KeyEntry[]) {
    this.#keys = keys;
  }

  /** True when no key is configured: open development mode. */
  get open(): boolean {
    return this.#keys.length === 0;
  }

  /**
   * Parses `scope:key` pairs separated by commas. Throws on an unknown scope
   * or a key shorter than 16 characters.
   */
  static async parse(text: string | undefined): Promise<KeyRing> {
    const entries: KeyEntry[] = [];
    for (const part of (text ?? "").split(",").map((item) => item.trim()).filter(Boolean)) {
      const colon = part.indexOf(":");
      const scope = part.slice(0, colon) as Scope;
      const key = part.slice(colon + 1);
      if (colon < 0 || !SCOPES.has(scope)) {
        throw new Error(
          `Cannot read EDGESTREAM_KEYS entry ${
            entries.length + 1
          }: expected '<ingest|read|admin>:<key>'`,
        );
      }
      if (key.length < 16) {
        throw new Error(
          `Cannot read EDGESTREAM_KEYS entry ${
            entries.length + 1
          }: keys must be at least 16 characters`,
        );
      }
      entries.push({ scope, digest: await digest(key) });
    }
    return new KeyRing(entries);
  }

  /** The scopes the key grants (empty when it is not a configured key). */
  async scopesOf(key: string): Promise<Set<Scope>> {
    const presented = await digest(key);
    const scopes = new Set<Scope>();
    // Every entry is compared, so timing does not tell which one matched.
    for (const entry of this.#keys) {
      if (constantTimeEqual(entry.digest, presented)) scopes.add(entry.scope);
    }
    if (scopes.has("admin")) {
      scopes.add("ingest");
      scopes.add("read");
    }
    return scopes;
  }
}

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** Compares two equal-length byte arrays without an early exit. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Reads the bearer key from a request, or undefined. */
export function bearerKey(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  return match?.[1];
}

/** What to tell a client that sent no key. */
const HOW_TO_SEND = "send 'Authorization: Bearer <key>'";

/**
 * Why `key` may not act in `scope`, or null when it may (always in open
 * mode): a missing or unknown key is 401, a key without the scope 403.
 */
export async function scopeError(
  keys: KeyRing,
  key: string | undefined,
  scope: Scope,
  options: { howToSend?: string } = {},
): Promise<ApiError | null> {
  if (keys.open) return null;
  if (key === undefined) {
    return new ApiError(
      401,
      "unauthorized",
      `Missing API key: ${options.howToSend ?? HOW_TO_SEND}`,
      { headers: { "WWW-Authenticate": 'Bearer realm="edgestream"' } },
    );
  }
  const scopes = await keys.scopesOf(key);
  if (scopes.size === 0) {
    return new ApiError(401, "unauthorized", "Invalid API key", {
      headers: { "WWW-Authenticate": 'Bearer realm="edgestream", error="invalid_token"' },
    });
  }
  if (!scopes.has(scope)) {
    return new ApiError(403, "forbidden", `API key lacks the '${scope}' scope`);
  }
  return null;
}

/**
 * Middleware that requires a key with `scope`. In open mode every request
 * passes. Missing or unknown key → 401; key without the scope → 403.
 */
export function requireScope(keys: KeyRing, scope: Scope): MiddlewareHandler {
  return async function (c, next) {
    const error = await scopeError(keys, bearerKey(c.req.header("Authorization")), scope);
    if (error) throw error;
    await next();
  };
}

/** Subprotocol prefix that carries a key: `Sec-WebSocket-Protocol: bearer.<key>`. */
export const BEARER_PROTOCOL_PREFIX = "bearer.";

/** How a browser-facing request (WebSocket, `EventSource`) presented its key. */
export interface PresentedKey {
  /** The key, when one was sent. Never log it. */
  key?: string;
  /**
   * The subprotocol to answer a WebSocket upgrade with: the first offered one
   * that is not a key, else the `bearer.<key>` one (browsers fail an upgrade
   * whose answer names none of the offered protocols).
   */
  protocol?: string;
  /** True when the key came as `?token=` (deprecated: URLs reach logs and traces). */
  inQuery?: boolean;
}

/** How a client of a browser-facing endpoint sends its key. */
export const HOW_TO_SEND_FROM_BROWSER =
  "send 'Authorization: Bearer <key>' or subprotocol 'bearer.<key>'";

/**
 * Reads the key of a request that browsers make without custom headers: the
 * `Authorization` header, else the `token` query parameter, else a
 * `bearer.<key>` WebSocket subprotocol.
 */
export function presentedKey(request: Request): PresentedKey {
  const offered = (request.headers.get("Sec-WebSocket-Protocol") ?? "").split(",")
    .map((item) => item.trim()).filter((item) => item !== "");
  const bearer = offered.find((item) => item.startsWith(BEARER_PROTOCOL_PREFIX));
  const protocol = offered.find((item) => !item.startsWith(BEARER_PROTOCOL_PREFIX)) ?? bearer;
  const header = bearerKey(request.headers.get("Authorization") ?? undefined);
  if (header) return { key: header, protocol };
  const query = new URL(request.url).searchParams.get("token") || undefined;
  if (query) return { key: query, protocol, inQuery: true };
  return { key: bearer?.slice(BEARER_PROTOCOL_PREFIX.length) || undefined, protocol };
}

let warnedKeyInQuery = false;

/**
 * Marks the request's log line with `keyInQuery: true` and, once per
 * process, warns that `?token=` is deprecated: Deno's own HTTP spans and
 * proxies record full URLs, which edgestream cannot redact.
 */
export function noteKeyInQuery(c: Context): void {
  annotateRequest(c, { keyInQuery: true });
  if (warnedKeyInQuery) return;
  warnedKeyInQuery = true;
  logger.warn(
    "A key was sent as '?token=', which is deprecated: full URLs reach traces and proxy logs; send 'Authorization: Bearer <key>' or subprotocol 'bearer.<key>'",
  );
}
