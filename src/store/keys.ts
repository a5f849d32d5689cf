/**
 * The API-key store contract: keys created at run time (`POST /v1/keys`),
 * shared by every instance. Only a key's SHA-256 digest is kept, never the
 * key; a key is found by the digest of what a client presents.
 *
 * @module
 */
import {
  comparePositions,
  decodeCursor,
  encodeCursor,
  type Page,
  type PageOptions,
} from "./deliveries.ts";

/** A token bucket on a key: `eventsPerSecond` refill, at most `burst` at once. */
export interface KeyRateLimit {
  /** Tokens (events) added per second. */
  eventsPerSecond: number;
  /** Tokens a full bucket holds: the most events sent at once. */
  burst: number;
}

/** A key created at run time, as stored. */
export interface ApiKeyRecord {
  /** Public id (`key_…`), used to read and delete it. */
  id: string;
  /** `publishable` (`pk_…`, ingest only, safe in a web page) or `secret` (`sk_…`). */
  type: "publishable" | "secret";
  /** SHA-256 of the key text, lowercase hex. */
  hash: string;
  /** The key's first characters (`pk_3fA9`), to tell keys apart in lists. */
  prefix: string;
  /** What it may do: `ingest`, `read`, `admin`. */
  scopes: string[];
  /** Streams it may use; absent means all. */
  streams?: string[];
  /** Origins (`https://shop.example`) browser pages may use it from. */
  origins?: string[];
  /** Its own rate limit, counted per stream. */
  rateLimit?: KeyRateLimit;
  /** What it is for. */
  description?: string;
  /** When (ms) it stops working; absent means never. */
  expiresAt?: number;
  /** When (ms) it was created. */
  createdAt: number;
}

/**
 * Where run-time API keys live. Every instance sharing the store sees a key
 * once {@linkcode KeyStore.createKey} returned, and stops seeing it once
 * {@linkcode KeyStore.deleteKey} returned (instances cache for a bounded time).
 */
export interface KeyStore {
  /** Short name (`memory`, `redis`). */
  readonly kind: string;
  /**
   * Stores a new key; throws {@linkcode KeyConflictError} when its id or hash exists, except
   * for the very same record (the same call sent again), which succeeds again. Throws
   * `StoredLimitError` (storing nothing) when the store's bound of keys is held already.
   */
  createKey(record: ApiKeyRecord): Promise<void>;
  /** The key whose digest is `hash`, or null. */
  keyByHash(hash: string): Promise<ApiKeyRecord | null>;
  /** The key with this id, or null. */
  getKey(id: string): Promise<ApiKeyRecord | null>;
  /** Every key, oldest first. */
  listKeys(): Promise<ApiKeyRecord[]>;
  /**
   * A page of the keys, oldest first (by creation time, then id), as the other lists page (see
   * `Page` in `deliveries.ts`): at most `limit` keys, and no more than
   * {@linkcode KEY_PAGE_MAX_BYTES} of records (at least one key); throws `InvalidCursorError` for
   * a cursor no page gave out.
   */
  pageKeys(options: PageOptions): Promise<Page<ApiKeyRecord>>;
  /** Deletes a key; false when there was none with this id. */
  deleteKey(id: string): Promise<boolean>;
}

/** A key with the same id or digest exists already. */
export class KeyConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KeyConflictError";
  }
}

/** Orders keys oldest first, then by id. */
export function compareKeys(a: ApiKeyRecord, b: ApiKeyRecord): number {
  return a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/**
 * Most bytes of stored records (each key's JSON, in UTF-8) one page of keys holds: a page stops
 * before the key that would take it past this, with a `nextCursor` after its last key, so that
 * one request cannot make the store build tens of MB (a thousand keys at the bounds of a key are
 * some 35 MB). A page holds at least one key.
 */
export const KEY_PAGE_MAX_BYTES = 1_000_000;

const utf8 = new TextEncoder();

/** The page of `keys` (every key, oldest first) that `options` asks for. */
export function pageOfKeys(keys: ApiKeyRecord[], options: PageOptions): Page<ApiKeyRecord> {
  const after = options.cursor == null ? null : decodeCursor("keys", options.cursor);
  const rest = after === null
    ? keys
    : keys.filter((key) => comparePositions({ createdMs: key.createdAt, id: key.id }, after) > 0);
  const items: ApiKeyRecord[] = [];
  let bytes = 0;
  for (const key of rest.slice(0, options.limit)) {
    const size = utf8.encode(JSON.stringify(key)).length;
    if (items.length > 0 && bytes + size > KEY_PAGE_MAX_BYTES) break;
    items.push(key);
    bytes += size;
  }
  const last = items[items.length - 1];
  return {
    items,
    nextCursor: rest.length > items.length
      ? encodeCursor("keys", { createdMs: last.createdAt, id: last.id })
      : null,
  };
}
