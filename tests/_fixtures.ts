/** Shared test fixtures: a small stream config and an app over a memory store. */
import assert from "node:assert/strict";
import { createApp } from "../src/app.ts";
import { compileConfig } from "../src/config/mod.ts";
import { KeyRing } from "../src/http/auth.ts";
import { RejectedCounts } from "../src/ingest/mod.ts";
import type { OriginSettings } from "../src/http/origin.ts";
import { MemoryDefinitionStore, StoreUnavailableError } from "../src/store/mod.ts";
import { MemoryKeyStore } from "../src/store/memory/key_store.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import { type Store, type StoreBatch, StreamChangedError } from "../src/store/types.ts";

/** A config with one stream exercising every feature. */
export const TEST_CONFIG = {
  streams: {
    orders: {
      schema: {
        type: "object",
        properties: {
          id: { type: "string" },
          ts: { type: ["string", "number"] },
          country: { type: "string" },
          amount: { type: "number" },
          customer: { type: "string" },
          test: { type: "boolean" },
        },
        required: ["id"],
      },
      time: { field: "ts", lateness: "30s" },
      dedupe: { field: "id", ttl: "1h" },
      transform: [
        { filter: "!has(event.test) || !event.test" },
        { set: { doubled: "has(event.amount) ? event.amount * 2.0 : 0.0" } },
      ],
      counters: {
        count_1m: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
        sum_1m: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: { sum: "amount" } },
        doubled_hop: {
          window: { hopping: "2m", every: "1m" },
          aggregate: { sum: "doubled" },
        },
        customers_sliding: {
          window: { sliding: "3m", precision: "1m" },
          aggregate: { distinct: "customer" },
        },
        max_1m: { window: { tumbling: "1m" }, aggregate: { max: "amount" }, maxGroups: 2 },
      },
    },
    open: {},
  },
};

/** Fixed "now" used by tests: 2026-01-01T00:10:00Z. */
export const NOW = Date.parse("2026-01-01T00:10:00Z");

/** Keys used by tests when auth is on. */
export const KEYS = {
  admin: "admin-key-0123456789",
  ingest: "ingest-key-0123456789",
  read: "read-key-0123456789abc",
};

/** Options for {@linkcode testApp}. */
export interface TestAppOptions {
  auth?: boolean;
  store?: Store;
  now?: () => number;
  config?: unknown;
}

/**
 * Builds an app over a fresh memory store (or the given store), with the `RejectedCounts` it
 * counts the rejected events of requests that accepted none in: `flush()` it to see them counted.
 */
export async function testApp(options: TestAppOptions = {}) {
  const store = options.store ?? new MemoryStore({ now: options.now ?? (() => NOW) });
  const keys = await KeyRing.parse(
    options.auth ? `admin:${KEYS.admin},ingest:${KEYS.ingest},read:${KEYS.read}` : "",
  );
  let rejectedCounts!: RejectedCounts;
  const app = createApp({
    streams: compileConfig(options.config ?? TEST_CONFIG),
    store,
    keys,
    now: options.now ?? (() => NOW),
    rejectedCounts: (target, now) => rejectedCounts = new RejectedCounts(target, { now }),
  });
  return { app, store, rejectedCounts };
}

/** Something that answers requests as an app does. */
export interface Requestable {
  request: (path: string, init?: RequestInit) => Response | Promise<Response>;
}

/** A key `POST /v1/keys` created: its id and its secret. */
export interface CreatedKey {
  id: string;
  key: string;
  [field: string]: unknown;
}

/**
 * Creates a key through `POST /v1/keys` with the admin key `adminKey` (default
 * {@linkcode KEYS}.admin), asserting the `201`.
 */
export async function createKey(
  app: Requestable,
  body: unknown,
  adminKey: string = KEYS.admin,
): Promise<CreatedKey> {
  const res = await app.request("/v1/keys", {
    method: "POST",
    headers: { Authorization: `Bearer ${adminKey}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 201, JSON.stringify(body));
  return await res.json();
}

/** Options for {@linkcode keyedApp}. */
export interface KeyedAppOptions {
  /** The stream config (default {@linkcode TEST_CONFIG}). */
  streams?: unknown;
  /** The clock (default a fixed {@linkcode NOW}). */
  now?: () => number;
  /** The app's origin settings (`createApp`'s `origins`). @default {none} */
  origins?: OriginSettings;
}

/**
 * Builds an app with keys on over memory stores: the admin and ingest keys of
 * {@linkcode KEYS}, and a key store for keys created at run time, with
 * `createKey(body)` creating one through the admin key; `store` is its window store.
 */
export async function keyedApp(options: KeyedAppOptions = {}) {
  const now = options.now ?? (() => NOW);
  const keyStore = new MemoryKeyStore();
  const keys = await KeyRing.parse(`admin:${KEYS.admin},ingest:${KEYS.ingest}`, {
    store: keyStore,
    now,
  });
  const store = new MemoryStore({ now });
  const app = createApp({
    streams: compileConfig(options.streams ?? TEST_CONFIG),
    store,
    keys,
    now,
    ...(options.origins ? { origins: options.origins } : {}),
  });
  return {
    app,
    store,
    keyStore,
    keys,
    createKey: (body: unknown): Promise<CreatedKey> => createKey(app, body),
  };
}

/** Sends JSON (or raw text) to the ingest endpoint. */
export function postEvents(
  app: Requestable,
  body: unknown,
  options: { stream?: string; key?: string; contentType?: string; raw?: boolean } = {},
): Promise<Response> {
  const headers: Record<string, string> = {
    "Content-Type": options.contentType ?? "application/json",
  };
  if (options.key) headers.Authorization = `Bearer ${options.key}`;
  return Promise.resolve(app.request(`/v1/streams/${options.stream ?? "orders"}/events`, {
    method: "POST",
    headers,
    body: options.raw ? body as BodyInit : JSON.stringify(body),
  }));
}

/** ISO time `seconds` after midnight of 2026-01-01 UTC. */
export function at(seconds: number): string {
  return new Date(Date.parse("2026-01-01T00:00:00Z") + seconds * 1000).toISOString();
}

/** A definition store whose reads fail as an unreachable Redis's do, while `down`. */
export class DownDefinitions extends MemoryDefinitionStore {
  down = true;
  override get(name: string) {
    return this.down ? Promise.reject(new StoreUnavailableError("down")) : super.get(name);
  }
}

/**
 * A memory store whose first `applyBatch` throws `StreamChangedError` for `stream`, applying
 * nothing, as when an admin changed the stream meanwhile; `applies()` counts the calls.
 */
export function changedOnFirstApply(stream: string): { store: Store; applies: () => number } {
  const memory = new MemoryStore({ now: () => NOW });
  let applies = 0;
  const store = new Proxy(memory, {
    get(target, property) {
      if (property === "applyBatch") {
        return (batch: StoreBatch) => {
          if (++applies === 1) return Promise.reject(new StreamChangedError(stream, 1));
          return target.applyBatch(batch);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as Store;
  return { store, applies: () => applies };
}
