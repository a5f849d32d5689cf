/**
 * API keys with scopes: the bootstrap keys from the environment
 * (`EDGESTREAM_KEYS="admin:<key>,ingest:<key>,read:<key>"`), compared in
 * constant time, and keys created at run time (`POST /v1/keys`), found in the
 * {@linkcode KeyStore} by their SHA-256 digest. Sent as
 * `Authorization: Bearer <key>`.
 *
 * **Verified-key cache.** Hashing a key with WebCrypto on every request cost
 * most of a small request's CPU, and a run-time key needs a store read. So a
 * verdict (the key's grant, or "no such key") is cached, bounded in size and
 * for at most `cacheTtlMs` (default 2 s): a key deleted on another instance
 * stops working here within that bound, and a new key is found within it
 * after a miss, also when the wall clock steps back (a verdict asked at a
 * time after the clock's is not kept). The cache is keyed by a 128-bit
 * SipHash-2-4 of the key under a random 128-bit key of its own
 * (`_siphash.ts`), a pseudorandom function
 * computed synchronously in a fraction of a microsecond: its entries say
 * nothing about keys to anyone who cannot read the process, another key lands
 * on a cached key's entry with a chance of 2^-128 per try, and a lookup
 * compares digests, not key text, so its timing tells nothing about any key.
 * On a miss, the environment keys are still compared in constant time.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { getLogger } from "@logtape/logtape";
import type { Context, MiddlewareHandler } from "hono";
import {
  type KeyRateLimit,
  type KeyStore,
  MemoryKeyStore,
  StoreUnavailableError,
} from "../store/mod.ts";
import { LookupBudget } from "../config/mod.ts";
import { routeServes } from "./_served.ts";
import { sipHashText } from "./_siphash.ts";
import { ApiError, invalidNameParameter, NAME } from "./errors.ts";
import { annotateRequest } from "./request_log.ts";
import { listNames, quoteInput } from "../telemetry/logging.ts";
import { withinPeriod } from "../telemetry/mod.ts";

const logger = getLogger(["edgestream", "http"]);

/** The scopes a key may have, for schemas that list them. */
export const SCOPE_NAMES = ["ingest", "read", "admin"] as const;

/** What a key may do. `admin` implies the others. */
export type Scope = typeof SCOPE_NAMES[number];

const SCOPES = new Set<Scope>(SCOPE_NAMES);

/** A configured key. The key text itself is kept only as a digest. */
interface KeyEntry {
  scope: Scope;
  digest: Uint8Array;
}

/** What a verified key may do and where. */
export interface KeyGrant {
  /** Its scopes (`admin` includes the others). */
  scopes: ReadonlySet<Scope>;
  /** Id of a run-time key; absent for environment keys and open mode. */
  id?: string;
  /** True for a publishable key (`pk_…`): ingest only, named streams and origins. */
  publishable: boolean;
  /** Streams it may use; absent means all. */
  streams?: ReadonlySet<string>;
  /** Origins pages may use it from (CORS, beacons). */
  origins?: ReadonlySet<string>;
  /** Its own rate limit, counted per stream. */
  rateLimit?: KeyRateLimit;
  /** When a run-time key expired (ms): it grants nothing, and its 401 says so. */
  expiredAt?: number;
}

/** The grant of every request in open mode. */
const OPEN_GRANT: KeyGrant = {
  scopes: new Set(SCOPES),
  publishable: false,
};

/** Whether `grant` is open mode's, which every request there gets (no key is asked for). */
export function isOpenGrant(grant: KeyGrant | undefined): boolean {
  return grant === OPEN_GRANT;
}

/** What a run-time key looks like; other texts are never looked up in the store. */
export const RUNTIME_KEY = /^(?:pk|sk)_[A-Za-z0-9_-]{16,128}$/;

/** Options for {@linkcode KeyRing.parse}. */
export interface KeyRingOptions {
  /** Where run-time keys live. @default {a private MemoryKeyStore} */
  store?: KeyStore;
  /** Clock (ms) for cache expiry and key expiry. @default {Date.now} */
  now?: () => number;
  /** Longest time (ms) a verdict is cached: the bound on revocation. @default {2000} */
  cacheTtlMs?: number;
  /** Most cached verdicts of each kind (keys, and texts that are no key); the oldest go first. @default {10000} */
  cacheSize?: number;
  /**
   * Store look-ups a second of run-time-shaped keys this instance has not
   * seen valid, past which such a key is answered `503 key_lookup_busy`
   * (each look-up that finds a key gives its turn back), so that made-up keys
   * cannot make every request a store call. @default {20}
   */
  lookupsPerSecond?: number;
}

interface CachedVerdict {
  grant: KeyGrant | null;
  /** When the store was asked (ms): the verdict is kept for `cacheTtlMs` from then. */
  askedAt: number;
  /** When the key itself expires (ms; Infinity for never, 0 once forgotten). */
  expiresAt: number;
}

/** Checks presented keys against the configured and the run-time ones. */
export class KeyRing {
  #keys: KeyEntry[];
  #store: KeyStore;
  #now: () => number;
  #ttlMs: number;
  #size: number;
  /** The SipHash key of the cache's digests. */
  #cacheSecret = crypto.getRandomValues(new Uint32Array(4));
  /** Verdicts on keys (grants); texts that are no key apart, so they cannot push keys out. */
  #cache = new Map<string, CachedVerdict>();
  /** Texts found to be no key → when the store was asked (ms). */
  #misses = new Map<string, number>();
  #pending = new Map<string, Promise<KeyGrant | null>>();
  /** Rises at each {@linkcode forget}: a look-up begun before one may have read a deleted key. */
  #generation = 0;
  #lookups: LookupBudget;

  private constructor(keys: KeyEntry[], options: KeyRingOptions) {
    this.#keys = keys;
    this.#store = options.store ?? new MemoryKeyStore();
    this.#now = options.now ?? Date.now;
    this.#ttlMs = Math.max(0, options.cacheTtlMs ?? 2000);
    this.#size = Math.max(1, options.cacheSize ?? 10_000);
    this.#lookups = new LookupBudget(options.lookupsPerSecond ?? 20, this.#now);
  }

  /** True when no key is configured: open development mode. */
  get open(): boolean {
    return this.#keys.length === 0;
  }

  /** Where run-time keys live. */
  get store(): KeyStore {
    return this.#store;
  }

  /** How many keys' verdicts are cached now (for tests of the bound). */
  get cached(): number {
    return this.#cache.size;
  }

  /** How many texts found to be no key are cached now (for tests of the bound). */
  get missed(): number {
    return this.#misses.size;
  }

  /**
   * Parses `scope:key` pairs separated by commas. Throws on an unknown scope,
   * a key shorter than 16 characters, or text that holds no pair (`,`).
   */
  static parse(text: string | undefined, options: KeyRingOptions = {}): Promise<KeyRing> {
    const entries: KeyEntry[] = [];
    for (const part of (text ?? "").split(",").map((item) => item.trim()).filter(Boolean)) {
      const colon = part.indexOf(":");
      const scope = part.slice(0, colon).trim() as Scope;
      const key = part.slice(colon + 1).trim();
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
      // What 'Authorization: Bearer <key>' can carry: visible ASCII, no space.
      if (!/^[\x21-\x7e]+$/.test(key)) {
        throw new Error(
          `Cannot read EDGESTREAM_KEYS entry ${
            entries.length + 1
          }: a key is visible ASCII characters without spaces`,
        );
      }
      entries.push({ scope, digest: sha256(key) });
    }
    // Text but no key (",", or "$ADMIN,$INGEST" with both unset) is a setting that went wrong,
    // not a request for open mode: starting open would serve without keys.
    if (entries.length === 0 && /\S/.test(text ?? "")) {
      throw new Error(
        "Cannot read EDGESTREAM_KEYS: it holds no '<ingest|read|admin>:<key>' entry; leave it unset or empty for open development mode",
      );
    }
    return Promise.resolve(new KeyRing(entries, options));
  }

  /** Expires every cached verdict (after a key is deleted through this instance). */
  forget(): void {
    // Expired rather than dropped: a key seen valid is verified again at once, and still without
    // a turn of the look-up budget (made-up keys must not lock real ones out after a deletion).
    for (const verdict of this.#cache.values()) verdict.expiresAt = 0;
    this.#misses.clear();
    // A look-up still on its way may have read the key before it was deleted: later requests do
    // not share it, and its answer is not cached (see #lookUp).
    this.#pending.clear();
    this.#generation++;
  }

  /**
   * What the key may do, or null when it is no key (unknown, deleted or
   * expired). Cached as the module doc says; throws what the key store throws
   * on a miss (`StoreUnavailableError`).
   */
  grantOf(key: string): Promise<KeyGrant | null> {
    if (this.open) return Promise.resolve(OPEN_GRANT);
    const cacheKey = this.#cacheKey(key);
    const cached = this.#cache.get(cacheKey);
    // A hit (nearly every request) answers without an async frame of its own.
    if (cached && this.#fresh(cached)) return Promise.resolve(cached.grant);
    if (!cached && this.#missFresh(cacheKey)) return Promise.resolve(null);
    return this.#lookUp(key, cacheKey, cached);
  }

  /**
   * {@linkcode grantOf}'s answer when it is cached and fresh (or open mode), without a promise;
   * undefined when the key must be verified.
   */
  cachedGrantOf(key: string): KeyGrant | null | undefined {
    if (this.open) return OPEN_GRANT;
    const cacheKey = this.#cacheKey(key);
    const cached = this.#cache.get(cacheKey);
    if (cached) return this.#fresh(cached) ? cached.grant : undefined;
    return this.#missFresh(cacheKey) ? null : undefined;
  }

  /**
   * Whether a verdict is still taken as known: within the bound since it was asked, and before
   * the key's own expiry. A clock before the asking (the wall clock stepped back) is not within:
   * else a key deleted on another instance would stay valid here, and a key created there stay
   * refused, until the clock passed that time again (an hour for a step of an hour).
   */
  #fresh(verdict: CachedVerdict): boolean {
    const now = this.#now();
    return withinPeriod(now, verdict.askedAt, this.#ttlMs) && now < verdict.expiresAt;
  }

  /** Whether "no such key" is cached for `cacheKey` and still taken as known (as {@linkcode #fresh}). */
  #missFresh(cacheKey: string): boolean {
    const askedAt = this.#misses.get(cacheKey);
    return askedAt !== undefined && withinPeriod(this.#now(), askedAt, this.#ttlMs);
  }

  #cacheKey(key: string): string {
    return sipHashText(this.#cacheSecret, key);
  }

  async #lookUp(
    key: string,
    cacheKey: string,
    cached: CachedVerdict | undefined,
  ): Promise<KeyGrant | null> {
    const pending = this.#pending.get(cacheKey);
    if (pending) return await pending;
    // The bound runs from when the store is asked: what it answers may be stale from then on.
    const askedAt = this.#now();
    // A key seen valid before (its verdict expired) is looked up again without a turn.
    const lookup = this.#verify(key, cached !== undefined);
    const shared = lookup.then((found) => found.grant);
    // Awaited only by requests that come while it runs: with none, its failure (the key store
    // unreachable) must not go unhandled, which ends the process.
    shared.catch(() => {});
    this.#pending.set(cacheKey, shared);
    const generation = this.#generation;
    try {
      const found = await lookup;
      // Begun before a deletion through this instance: answers its own request, caches nothing.
      if (generation !== this.#generation) return found.grant;
      const expiresAt = found.expiresAt ?? Infinity;
      if (cached) this.#cache.delete(cacheKey);
      const verdicts: Map<string, unknown> = found.grant ? this.#cache : this.#misses;
      while (verdicts.size >= this.#size) verdicts.delete(verdicts.keys().next().value!);
      if (found.grant) this.#cache.set(cacheKey, { grant: found.grant, askedAt, expiresAt });
      else this.#misses.set(cacheKey, askedAt);
      return found.grant;
    } finally {
      if (this.#pending.get(cacheKey) === shared) this.#pending.delete(cacheKey);
    }
  }

  async #verify(
    key: string,
    seenValid: boolean,
  ): Promise<{ grant: KeyGrant | null; expiresAt?: number }> {
    const presented = sha256(key);
    const scopes = new Set<Scope>();
    // Every entry is compared, so timing does not tell which one matched.
    for (const entry of this.#keys) {
      if (constantTimeEqual(entry.digest, presented)) scopes.add(entry.scope);
    }
    if (scopes.size > 0) return { grant: { scopes: withImplied(scopes), publishable: false } };
    if (!RUNTIME_KEY.test(key)) return { grant: null };
    const charged = !seenValid;
    if (charged && !this.#lookups.take()) {
      throw new ApiError(
        503,
        "key_lookup_busy",
        "Too many unknown API keys looked up now; if this key was just created, retry",
        { headers: { "Retry-After": "1" } },
      );
    }
    let record;
    try {
      record = await this.#store.keyByHash(toHex(presented));
    } catch (error) {
      // A lookup writes nothing, and the request stops here: none of it was applied.
      if (!(error instanceof StoreUnavailableError)) throw error;
      throw new StoreUnavailableError(error.message, { cause: error, outcome: "not_applied" });
    }
    // Only look-ups that find no key use the budget up.
    if (charged && record) this.#lookups.giveBack();
    if (!record) return { grant: null };
    if (record.expiresAt !== undefined && record.expiresAt <= this.#now()) {
      // No scopes: it grants nothing; kept as a grant so that its 401 can say it expired.
      return {
        grant: {
          scopes: new Set(),
          id: record.id,
          publishable: record.type === "publishable",
          expiredAt: record.expiresAt,
        },
      };
    }
    return {
      grant: {
        scopes: withImplied(
          new Set(record.scopes.filter((item) => SCOPES.has(item as Scope)) as Scope[]),
        ),
        id: record.id,
        publishable: record.type === "publishable",
        streams: record.streams ? new Set(record.streams) : undefined,
        origins: record.origins ? new Set(record.origins) : undefined,
        rateLimit: record.rateLimit,
      },
      expiresAt: record.expiresAt,
    };
  }

  /** The scopes the key grants (empty when it is not a key). */
  async scopesOf(key: string): Promise<Set<Scope>> {
    return new Set((await this.grantOf(key))?.scopes ?? []);
  }
}

function withImplied(scopes: Set<Scope>): Set<Scope> {
  if (scopes.has("admin")) {
    scopes.add("ingest");
    scopes.add("read");
  }
  return scopes;
}

/** SHA-256 of a key's UTF-8 text. */
export function sha256(text: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(text).digest());
}

/** Bytes as lowercase hex. */
export function toHex(bytes: Uint8Array): string {
  return [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
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
  // A test and a trim (which strips what `\s` matches) instead of a match array per request.
  return header !== undefined && BEARER.test(header) ? header.slice(6).trim() : undefined;
}

const BEARER = /^Bearer\s+\S+\s*$/i;

/** A place a request may carry its key in, as a refusal names it, with the key found there. */
export type KeyPlace = readonly [place: string, key: string | undefined];

/** The place of the `Authorization: Bearer <key>` header, as a refusal names it. */
export const HEADER_PLACE = "the 'Authorization: Bearer' header";

/**
 * The one key a request sent, in one place or more (the first place that has one), or undefined;
 * throws `400 invalid_request` naming both places when two hold different keys. Serving one of
 * them silently would act for a key the client may not mean (RFC 6750 §2: a client sends its
 * token one way); the same key in two places is the same request. The keys are never echoed.
 *
 * @example
 * ```ts
 * import { HEADER_PLACE, oneKey } from "./auth.ts";
 * oneKey([[HEADER_PLACE, "a"], ["'?key='", "a"]]); // "a"
 * oneKey([[HEADER_PLACE, "a"], ["'?key='", "b"]]); // throws 400 invalid_request
 * ```
 */
export function oneKey(places: readonly KeyPlace[]): string | undefined {
  // An empty key (`Bearer ` alone, `?key=`) is none: not a second key, nor the one served.
  const [first, ...others] = places.filter(([, key]) => key);
  const other = others.find(([, key]) => key !== first[1]);
  if (other) {
    throw new ApiError(
      400,
      "invalid_request",
      `Two different API keys: one in ${first[0]}, another in ${
        other[0]
      }; send one key, in one place`,
    );
  }
  return first?.[1];
}

/** What to tell a client that sent no key. */
const HOW_TO_SEND = "send 'Authorization: Bearer <key>'";

/** Options for {@linkcode authenticate} (and {@linkcode authorize}). */
export interface AuthenticateOptions {
  /** How the client should send a key, for the 401 message. */
  howToSend?: string;
  /**
   * The request's `Authorization` header, when it read none as a key: a 401 then says the header
   * is not `Bearer <key>` (another scheme, a key without `Bearer`, two headers joined), rather
   * than that no key was sent. @default {none}
   */
  authorization?: string | null;
}

/** Options for {@linkcode authorize}. */
export interface AuthorizeOptions extends AuthenticateOptions {
  /**
   * The stream the request acts on; a key limited to streams may act only
   * on those (and on no route that names none).
   */
  stream?: string;
  /**
   * The route lists streams (`GET /v1/streams`): a key limited to streams may use it, and is
   * answered only its own (the handler filters by {@linkcode KeyGrant.streams}).
   */
  listsStreams?: boolean;
  /**
   * A route serves the request. `false` for one no route serves (its 404, or 405 when the path
   * takes other methods, acts on no stream): a key limited to streams is then answered as any
   * key with the scope, whatever the path names (a name, of its streams or not, or no name).
   * @default {true}
   */
  served?: boolean;
}

/** What {@linkcode authorize} and {@linkcode authenticate} answer: the grant, or why not. */
export type Authorization = { grant: KeyGrant; error?: undefined } | {
  grant?: undefined;
  error: ApiError;
};

/**
 * The key's grant when it may act in `scope` (always in open mode), or why
 * not: a missing or unknown key is 401, a key without the scope or the
 * stream 403. A route any valid key may use asks {@linkcode authenticate}.
 */
export function authorize(
  keys: KeyRing,
  key: string | undefined,
  scope: Scope,
  options: AuthorizeOptions = {},
): Promise<Authorization> {
  // Not async: a cached verdict (nearly every request) is one resolved promise, no async frame.
  const now = authorizeNow(keys, key, scope, options);
  if (now !== undefined) return Promise.resolve(now);
  return keys.grantOf(key!).then((grant) => authorization(grant, scope, options));
}

/**
 * {@linkcode authorize}'s answer when it needs no key lookup (open mode, no key, a cached
 * verdict), without a promise; undefined otherwise.
 */
function authorizeNow(
  keys: KeyRing,
  key: string | undefined,
  scope: Scope,
  options: AuthorizeOptions = {},
): Authorization | undefined {
  if (keys.open) return { grant: OPEN_GRANT };
  if (key === undefined) return { error: missingKey(options) };
  const grant = keys.cachedGrantOf(key);
  return grant === undefined ? undefined : authorization(grant, scope, options);
}

/**
 * The grant of any key that grants something, whatever its scopes and streams (always in open
 * mode), or why not: a missing, unknown, deleted or expired key is 401. Only for a route that
 * tells a key about itself: a route that reads or changes anything asks {@linkcode authorize}
 * with its scope.
 */
export async function authenticate(
  keys: KeyRing,
  key: string | undefined,
  options: AuthenticateOptions = {},
): Promise<Authorization> {
  if (keys.open) return { grant: OPEN_GRANT };
  if (key === undefined) return { error: missingKey(options) };
  const grant = await keys.grantOf(key);
  return grantsSomething(grant) ? { grant } : { error: invalidKey(grant) };
}

/** The 401 of a request that sent no key, or a header that holds none as `Bearer <key>`. */
function missingKey(options: AuthenticateOptions): ApiError {
  const header = options.authorization?.trim();
  return new ApiError(
    401,
    "unauthorized",
    header
      ? `Unreadable Authorization header: it must hold one key as 'Bearer <key>'; ${
        options.howToSend ?? HOW_TO_SEND
      }`
      : `Missing API key: ${options.howToSend ?? HOW_TO_SEND}`,
    { headers: { "WWW-Authenticate": 'Bearer realm="edgestream"' } },
  );
}

/**
 * Whether `grant` is shown a stream by `GET /v1/streams`, by name: with the `read` scope (`admin`
 * includes it; open mode's grant has every scope) and, when limited to streams, only those. A
 * reply that suggests a stream name (a 404's "did you mean") suggests only such a one: an
 * ingest-only or publishable key is never told what other streams exist.
 */
export function listedTo(grant: KeyGrant | undefined): (name: string) => boolean {
  if (
    grant === undefined || !grantsSomething(grant) || grant.publishable ||
    !grant.scopes.has("read")
  ) {
    return () => false;
  }
  const only = grant.streams;
  return (name) => only === undefined || only.has(name);
}

/** Whether a looked-up key grants something: not unknown, deleted, expired or without scopes. */
function grantsSomething(grant: KeyGrant | null): grant is KeyGrant {
  return grant !== null && grant.expiredAt === undefined && grant.scopes.size > 0;
}

/** The 401 of a presented key that grants nothing (see {@linkcode grantsSomething}). */
function invalidKey(grant: KeyGrant | null): ApiError {
  if (grant?.expiredAt !== undefined) {
    return new ApiError(
      401,
      "unauthorized",
      `API key '${grant.id}' expired at ${new Date(grant.expiredAt).toISOString()}`,
      { headers: { "WWW-Authenticate": 'Bearer realm="edgestream", error="invalid_token"' } },
    );
  }
  return new ApiError(401, "unauthorized", "Invalid API key", {
    headers: { "WWW-Authenticate": 'Bearer realm="edgestream", error="invalid_token"' },
  });
}

function authorization(
  grant: KeyGrant | null,
  scope: Scope,
  options: AuthorizeOptions,
): Authorization {
  if (!grantsSomething(grant)) return { error: invalidKey(grant) };
  if (!grant.scopes.has(scope)) {
    return { error: new ApiError(403, "forbidden", `API key lacks the '${scope}' scope`) };
  }
  // No route: the 404 or 405 every key with the scope gets, which names no stream.
  if (options.served === false) return { grant };
  if (
    grant.streams && !options.listsStreams && options.stream !== undefined &&
    !grant.streams.has(options.stream) && !NAME.test(options.stream)
  ) {
    // What a key unlimited in streams is answered (the route's name check): a malformed path
    // gets the same 400 whichever key sent it, and a 403 never quotes what is no stream name.
    return { error: invalidNameParameter("stream", options.stream) };
  }
  if (
    grant.streams && !options.listsStreams &&
    !(options.stream !== undefined && grant.streams.has(options.stream))
  ) {
    const named = options.stream === undefined
      ? "this route names no stream"
      : `not '${options.stream}'`;
    return {
      error: new ApiError(
        403,
        "forbidden",
        `API key '${grant.id}' is limited to streams ${listNames(grant.streams)}: ${named}`,
      ),
    };
  }
  return { grant };
}

/**
 * Why `key` may not act in `scope`, or null when it may (always in open
 * mode): a missing or unknown key is 401, a key without the scope 403.
 */
export async function scopeError(
  keys: KeyRing,
  key: string | undefined,
  scope: Scope,
  options: AuthorizeOptions = {},
): Promise<ApiError | null> {
  return (await authorize(keys, key, scope, options)).error ?? null;
}

/** Name of the context variable that holds the request's grant. */
const GRANT_VARIABLE = "keyGrant";

/** The grant {@linkcode requireScope} (or ingest) found for the request `c` serves, if any. */
export function grantOfRequest(c: Context): KeyGrant | undefined {
  return c.get(GRANT_VARIABLE) as KeyGrant | undefined;
}

/**
 * Remembers the grant of the request `c` serves for the handlers after the middleware (in the
 * request's context: a `WeakMap` keyed by requests cost more than the rest of the lookup).
 */
export function rememberGrant(c: Context, grant: KeyGrant): void {
  c.set(GRANT_VARIABLE, grant);
}

/** Name of the context variable that holds a read's foreign `Origin` (see {@linkcode markForeignRead}). */
const FOREIGN_READ_VARIABLE = "foreignReadOrigin";

/**
 * Notes that the request `c` serves is a read (`GET`, `HEAD`) from a page on `origin`, neither the
 * server's own nor one `EDGESTREAM_ALLOWED_ORIGINS` lists (`cors.ts`): its key must list it.
 */
export function markForeignRead(c: Context, origin: string): void {
  c.set(FOREIGN_READ_VARIABLE, origin);
}

/** Options of {@linkcode refuseForeignRead}. */
export interface RefuseForeignReadOptions {
  /**
   * Whether open mode's grant (no keys) is refused too: a live subscription's, which would hold a
   * connection and its client address's slot streaming to a page that reads none of it, and which
   * `/sdk.js` reconnects for good on the network error the page sees. Other reads are not, in open
   * mode: their answers are withheld from the page (no CORS header). @default {false}
   */
  inOpenMode?: boolean;
}

/**
 * Throws 403 `origin_not_allowed` when the request `c` serves is a read from a foreign page
 * ({@linkcode markForeignRead}) and `grant`'s `origins` do not list that page: its answer would be
 * withheld from the page anyway (no CORS header), a subscription would stream to no reader, and a
 * page would be told nothing but a network error, which `/sdk.js` retries for good. This refusal
 * the page can read (`cors.ts`). In open mode (no keys) nothing is refused here unless
 * `options.inOpenMode`: open mode's grant lists no origin, so only `EDGESTREAM_ALLOWED_ORIGINS` can.
 */
export function refuseForeignRead(
  c: Context,
  grant: KeyGrant,
  options: RefuseForeignReadOptions = {},
): void {
  const origin = c.get(FOREIGN_READ_VARIABLE) as string | undefined;
  if (origin === undefined || grant.origins?.has(origin)) return;
  if (isOpenGrant(grant)) {
    if (!options.inOpenMode) return;
    throw new ApiError(
      403,
      "origin_not_allowed",
      `Cross-origin read from '${
        quoteInput(origin)
      }' refused: in open mode (no EDGESTREAM_KEYS) only the server's own origin and those EDGESTREAM_ALLOWED_ORIGINS lists read a subscription; add it there to let its pages read`,
    );
  }
  throw new ApiError(
    403,
    "origin_not_allowed",
    `Cross-origin read from '${quoteInput(origin)}' refused: ${
      grant.id === undefined ? "this API key" : `API key '${grant.id}'`
    } does not list it in its origins, nor does EDGESTREAM_ALLOWED_ORIGINS; add it to either to let its pages read`,
  );
}

/**
 * Middleware that requires a key with `scope`. In open mode every request
 * passes. Missing or unknown key → 401; key without the scope, or limited to
 * other streams than the route's `:stream` → 403 (unless `listsStreams`:
 * see {@linkcode AuthorizeOptions.listsStreams}).
 */
export function requireScope(
  keys: KeyRing,
  scope: Scope,
  options: { listsStreams?: boolean } = {},
): MiddlewareHandler {
  return async function (c, next) {
    // Lower case: see the note in `_header_list.ts`.
    const authorization = c.req.header("authorization");
    const result = await authorize(keys, bearerKey(authorization), scope, {
      stream: c.req.param("stream"),
      listsStreams: options.listsStreams,
      authorization,
      served: routeServes(c),
    });
    if (result.error) throw result.error;
    rememberGrant(c, result.grant);
    refuseForeignRead(c, result.grant);
    await next();
  };
}

/**
 * Middleware that requires a key, whatever its scopes and streams: for a route that tells a key
 * about itself. In open mode every request passes. Missing, unknown or expired key → 401.
 */
export function requireKey(keys: KeyRing): MiddlewareHandler {
  return async function (c, next) {
    const authorization = c.req.header("authorization");
    const result = await authenticate(keys, bearerKey(authorization), { authorization });
    if (result.error) throw result.error;
    rememberGrant(c, result.grant);
    await next();
  };
}

/**
 * Middleware for a path whose routes check their key themselves (ingest, the
 * WebSocket and subscription routes): a method they do not take needs the
 * key `scope` needs before its 405 (or an `OPTIONS` its 204) tells which
 * methods the path takes, as on every other route (a CORS preflight, which
 * carries no key, is answered before: `cors.ts`).
 */
export function requireScopeForOtherMethods(
  keys: KeyRing,
  scope: Scope,
  taken: readonly string[],
): MiddlewareHandler {
  const served = new Set(taken);
  const check = requireScope(keys, scope);
  return (c, next) => served.has(c.req.method) ? next() : check(c, next);
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
  /** True when a key came as `?token=` (deprecated: URLs reach logs and traces). */
  inQuery?: boolean;
}

/** How a client of a browser-facing endpoint sends its key. */
export const HOW_TO_SEND_FROM_BROWSER =
  "send 'Authorization: Bearer <key>' or subprotocol 'bearer.<key>'";

/**
 * Reads the key of a request that browsers make without custom headers: the
 * `Authorization` header, the `token` query parameter or a `bearer.<key>` WebSocket
 * subprotocol; throws `400 invalid_request` when two of them hold different keys
 * (see {@linkcode oneKey}).
 */
export function presentedKey(request: Request): PresentedKey {
  const offered = (request.headers.get("Sec-WebSocket-Protocol") ?? "").split(",")
    .map((item) => item.trim()).filter((item) => item !== "");
  const bearers = offered.filter((item) => item.startsWith(BEARER_PROTOCOL_PREFIX));
  const protocol = offered.find((item) => !item.startsWith(BEARER_PROTOCOL_PREFIX)) ?? bearers[0];
  const query = queryToken(request.url);
  // Every bearer subprotocol is a place: two different ones are a 400, not the first taken.
  const key = oneKey([
    [HEADER_PLACE, bearerKey(request.headers.get("authorization") ?? undefined)],
    ["'?token='", query],
    ...bearers.map((item, index): KeyPlace => [
      // Two or more are told apart by position: each reads the same, its key never said.
      bearers.length === 1
        ? `subprotocol '${BEARER_PROTOCOL_PREFIX}<key>'`
        : `the ${ordinal(index + 1)} '${BEARER_PROTOCOL_PREFIX}<key>' subprotocol`,
      item.slice(BEARER_PROTOCOL_PREFIX.length),
    ]),
  ]);
  // In the URL, whichever place it was taken from: marked and warned of all the same.
  return query ? { key, protocol, inQuery: true } : { key, protocol };
}

/** `n` written as an English ordinal: `1st`, `2nd`, `3rd`, `4th`, `11th`, `21st`. */
function ordinal(n: number): string {
  const tens = n % 100;
  if (tens >= 11 && tens <= 13) return `${n}th`;
  return `${n}${["th", "st", "nd", "rd"][n % 10] ?? "th"}`;
}

/**
 * The `token` query parameter of `url`, if any. Deno makes a request's URL from its `Host`
 * header, so `Host: a, b` makes one that does not parse: it has none.
 */
function queryToken(url: string): string | undefined {
  if (!url.includes("token=")) return undefined;
  try {
    return new URL(url).searchParams.get("token") || undefined;
  } catch {
    return undefined;
  }
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

/**
 * Who holds a connection in `connection_slots.ts`, and how a refusal names them: a run-time key (publishable ones too) by
 * its id, an environment key by its digest (never its text), in open mode or with no key the
 * client address.
 */
export function slotHolder(
  c: Context,
  keys: KeyRing,
  key: string | undefined,
  grant: KeyGrant | undefined,
): [holder: string, named: string] {
  if (keys.open || key === undefined) {
    const address = (c.env as Deno.ServeHandlerInfo<Deno.NetAddr> | undefined)?.remoteAddr
      ?.hostname ?? "unknown";
    return [`address:${address}`, `client address ${address}`];
  }
  if (grant?.id !== undefined) return [`id:${grant.id}`, `API key '${grant.id}'`];
  return [`digest:${toHex(sha256(key))}`, "this API key"];
}
