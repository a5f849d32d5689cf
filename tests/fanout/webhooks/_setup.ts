/** Shared setup of the webhook tests: a stream config, an app with a webhook service, helpers. */
import assert from "node:assert/strict";
import type { OpenAPIHono } from "@hono/zod-openapi";
import { createApp } from "../../../src/app.ts";
import { compileConfig, type CompiledStream } from "../../../src/config/mod.ts";
import {
  type Resolver,
  UrlPolicy,
  WebhookService,
  type WebhookServiceOptions,
} from "../../../src/fanout/webhooks/mod.ts";
import { type DeliveryStore, MemoryDeliveryStore } from "../../../src/store/mod.ts";
import { KeyRing } from "../../../src/http/auth.ts";
import type { OriginSettings } from "../../../src/http/origin.ts";
import { MemoryStore } from "../../../src/store/memory/store.ts";
import type { Store } from "../../../src/store/types.ts";

/** Midnight of 2026-01-01 UTC; events are placed relative to it. */
export const T0 = Date.parse("2026-01-01T00:00:00Z");

/** ISO time `seconds` after {@linkcode T0}. */
export function at(seconds: number): string {
  return new Date(T0 + seconds * 1000).toISOString();
}

/** A stream with a per-minute count by country, a sum, and an alert on the count. */
export const CONFIG = {
  streams: {
    orders: {
      time: { field: "ts", lateness: "10s" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        per_minute: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
        amount: { window: { tumbling: "1m" }, aggregate: { sum: "amount" } },
      },
      alerts: [{ name: "busy", counter: "per_minute", when: "value >= 3.0" }],
    },
    signups: {
      time: { field: "ts", lateness: "10s" },
      counters: { per_minute: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
};

/** A mutable test clock. */
export interface Clock {
  now: number;
}

/** Options for {@linkcode setup}. */
export interface SetupOptions extends Partial<WebhookServiceOptions> {
  /** Stream store. @default {a MemoryStore on the clock} */
  store?: Store;
  /** Delivery store. @default {a MemoryDeliveryStore on the clock} */
  deliveries?: DeliveryStore;
  /** Config. @default {CONFIG} */
  config?: unknown;
  /** The streams, e.g. a `StreamRegistry` (then `store` should be its `wrap`). @default {`config` compiled} */
  streams?: ReadonlyMap<string, CompiledStream>;
  /** Start time (ms). @default {T0 + 10 min} */
  startMs?: number;
  /** A clock shared with another instance. @default {a new clock at startMs} */
  clock?: Clock;
  /** Resolver for host names. @default {none: names do not resolve} */
  resolve?: Resolver;
  /** Allow-list. @default {["127.0.0.1"]} */
  allow?: string[];
  /** Turn auth on (keys in {@linkcode ADMIN_KEY}). @default {false} */
  auth?: boolean;
  /** Allowed hosts and origins. @default {none} */
  origins?: OriginSettings;
}

/** Admin key when auth is on. */
export const ADMIN_KEY = "admin-key-0123456789";
/** Read key when auth is on. */
export const READ_KEY = "read-key-0123456789abc";

/** An app with a webhook service over memory stores on an injected clock. */
export interface Setup {
  app: OpenAPIHono;
  webhooks: WebhookService;
  store: Store;
  deliveries: DeliveryStore;
  streams: ReadonlyMap<string, CompiledStream>;
  clock: Clock;
  /** Stops the service's background work. */
  close(): Promise<void>;
}

/** Builds the app and its webhook service. */
export async function setup(options: SetupOptions = {}): Promise<Setup> {
  const clock: Clock = options.clock ?? { now: options.startMs ?? T0 + 600_000 };
  const now = () => clock.now;
  const streams = options.streams ?? compileConfig(options.config ?? CONFIG);
  const store = options.store ?? new MemoryStore({ now });
  const deliveries = options.deliveries ?? new MemoryDeliveryStore({ now });
  const webhooks = new WebhookService({
    random: () => 0.5,
    ...options,
    store,
    deliveries,
    streams,
    now,
    policy: options.policy ?? new UrlPolicy({
      allow: options.allow ?? ["127.0.0.1"],
      resolve: options.resolve ?? (() => Promise.reject(new Error("No DNS in tests"))),
    }),
  });
  const keys = await KeyRing.parse(
    options.auth ? `admin:${ADMIN_KEY},read:${READ_KEY}` : "",
  );
  const app = createApp({ streams, store, keys, now, webhooks, origins: options.origins });
  return { app, webhooks, store, deliveries, streams, clock, close: () => webhooks.close() };
}

/** Sends a JSON request to the app and reads the JSON reply. */
export async function call(
  app: OpenAPIHono,
  method: string,
  path: string,
  body?: unknown,
  key?: string,
  // deno-lint-ignore no-explicit-any
): Promise<{ status: number; body: any; text: string }> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key) headers.Authorization = `Bearer ${key}`;
  const res = await app.request(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, text };
}

/** Registers an endpoint through the API; returns its id and secret. */
export async function register(
  app: OpenAPIHono,
  input: Record<string, unknown>,
): Promise<{ id: string; secret: string }> {
  const res = await call(app, "POST", "/v1/webhooks", input);
  assert.equal(res.status, 201, res.text);
  return { id: res.body.id, secret: res.body.secret };
}

/** Ingests events into a stream through the API. */
export async function ingest(app: OpenAPIHono, events: unknown[], stream = "orders") {
  const res = await call(app, "POST", `/v1/streams/${stream}/events`, events);
  assert.equal(res.status, 202, res.text);
  return res.body;
}

/**
 * Runs one sweep through the API (close windows, fire alerts, create
 * deliveries) and reads its reply. The sweep answers before its sends are
 * done; given `webhooks`, this also waits for them (and all other background work).
 */
export async function sweep(app: OpenAPIHono, webhooks?: Pick<WebhookService, "idle">) {
  const res = await call(app, "POST", "/v1/admin/sweep");
  assert.equal(res.status, 200, res.text);
  await webhooks?.idle();
  return res.body;
}
