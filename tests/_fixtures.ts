/** Shared test fixtures: a small stream config and an app over a memory store. */
import { createApp } from "../src/app.ts";
import { compileConfig } from "../src/config/mod.ts";
import { KeyRing } from "../src/http/auth.ts";
import { MemoryDefinitionStore, StoreUnavailableError } from "../src/store/mod.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import type { Store } from "../src/store/types.ts";

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

/** Builds an app over a fresh memory store (or the given store). */
export async function testApp(options: TestAppOptions = {}) {
  const store = options.store ?? new MemoryStore({ now: options.now ?? (() => NOW) });
  const keys = await KeyRing.parse(
    options.auth ? `admin:${KEYS.admin},ingest:${KEYS.ingest},read:${KEYS.read}` : "",
  );
  const app = createApp({
    streams: compileConfig(options.config ?? TEST_CONFIG),
    store,
    keys,
    now: options.now ?? (() => NOW),
  });
  return { app, store };
}

/** Sends JSON (or raw text) to the ingest endpoint. */
export function postEvents(
  app: { request: (path: string, init?: RequestInit) => Response | Promise<Response> },
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
