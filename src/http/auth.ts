/**
 * API keys with scopes, from the environment
 * (`EDGESTREAM_KEYS="admin:<key>,ingest:<key>,read:<key>"`), sent as
 * `Authorization: Bearer <key>` and compared in constant time.
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import { ApiError } from "./errors.ts";

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

/**
 * Middleware that requires a key with `scope`. In open mode every request
 * passes. Missing or unknown key → 401; key without the scope → 403.
 */
export function requireScope(keys: KeyRing, scope: Scope): MiddlewareHandler {
  return async function (c, next) {
    if (keys.open) return await next();
    const key = bearerKey(c.req.header("Authorization"));
    if (key === undefined) {
      throw new ApiError(
        401,
        "unauthorized",
        "Missing API key: send 'Authorization: Bearer <key>'",
        {
          headers: { "WWW-Authenticate": 'Bearer realm="edgestream"' },
        },
      );
    }
    const scopes = await keys.scopesOf(key);
    if (scopes.size === 0) {
      throw new ApiError(401, "unauthorized", "Invalid API key", {
        headers: { "WWW-Authenticate": 'Bearer realm="edgestream", error="invalid_token"' },
      });
    }
    if (!scopes.has(scope)) {
      throw new ApiError(403, "forbidden", `API key lacks the '${scope}' scope`);
    }
    await next();
  };
}
