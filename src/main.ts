/**
 * Server entry: reads the environment, loads the config, picks the store and
 * serves the app.
 *
 * Environment: `EDGESTREAM_CONFIG` (default `examples/config.json`), `PORT`
 * (8000), `HOST` (0.0.0.0, or 127.0.0.1 in open mode), `EDGESTREAM_KEYS`,
 * `UPSTASH_REDIS_REST_URL` + `UPSTASH_REDIS_REST_TOKEN` (Redis store),
 * `EDGESTREAM_PREFIX` (Redis key prefix, `es`), `EDGESTREAM_SWEEP_EVERY`
 * (self-hosted sweep interval, `5s`; `0s` turns it off), `EDGESTREAM_WEBHOOK_ALLOW`
 * (CIDRs, addresses and host names webhooks may reach despite being internal),
 * `EDGESTREAM_WEBHOOK_ALLOW_HTTP` (`true`: plain http for every host),
 * `EDGESTREAM_WEBHOOK_DISABLE_AFTER` (disable an endpoint failing this long, `5d`).
 *
 * @module
 */
import { Redis } from "@upstash/redis";
import { createApp } from "./app.ts";
import { type CompiledStream, ConfigError, loadConfigFile, parseDuration } from "./config/mod.ts";
import { LiveHub, sweepOnce } from "./fanout/mod.ts";
import {
  AllowListError,
  type DeliveryStore,
  MemoryDeliveryStore,
  parseAllowList,
  RedisDeliveryStore,
  UrlPolicy,
  WebhookService,
} from "./fanout/webhooks/mod.ts";
import { KeyRing } from "./http/auth.ts";
import { MemoryStore } from "./store/memory_store.ts";
import { RedisStore } from "./store/redis_store.ts";
import type { Store } from "./store/types.ts";

/** Picks the store from the environment: Redis when both Upstash variables are set. */
export function storeFromEnv(env: { get(name: string): string | undefined }): Store {
  const url = env.get("UPSTASH_REDIS_REST_URL");
  const token = env.get("UPSTASH_REDIS_REST_TOKEN");
  if (url && token) {
    const redis = new Redis({
      url,
      token,
      enableTelemetry: false,
      // Fail fast; the store turns failures into 503 + Retry-After and
      // retried requests are deduplicated by event id.
      retry: { retries: 1, backoff: () => 50 },
    });
    return new RedisStore(redis, { prefix: env.get("EDGESTREAM_PREFIX") ?? "es" });
  }
  if (url || token) {
    throw new ConfigError(
      "Set both UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN to use Redis, or neither",
    );
  }
  return new MemoryStore();
}

/**
 * Builds the webhook service from the environment: deliveries in Redis when
 * the Upstash variables are set (in memory otherwise), the URL allow-list and
 * the disable period. Throws {@linkcode ConfigError} for a bad setting.
 */
export function webhooksFromEnv(
  env: { get(name: string): string | undefined },
  options: { store: Store; streams: Map<string, CompiledStream> },
): WebhookService {
  const url = env.get("UPSTASH_REDIS_REST_URL");
  const token = env.get("UPSTASH_REDIS_REST_TOKEN");
  const deliveries: DeliveryStore = url && token
    ? new RedisDeliveryStore(
      new Redis({ url, token, enableTelemetry: false, retry: { retries: 1, backoff: () => 50 } }),
      { prefix: env.get("EDGESTREAM_PREFIX") ?? "es" },
    )
    : new MemoryDeliveryStore();
  let policy: UrlPolicy;
  try {
    policy = new UrlPolicy({
      allow: parseAllowList(env.get("EDGESTREAM_WEBHOOK_ALLOW")),
      allowHttp: env.get("EDGESTREAM_WEBHOOK_ALLOW_HTTP") === "true",
    });
  } catch (error) {
    if (error instanceof AllowListError) {
      throw new ConfigError(`EDGESTREAM_WEBHOOK_ALLOW: ${error.message}`, { cause: error });
    }
    throw error;
  }
  let disableAfterMs: number;
  try {
    disableAfterMs = parseDuration(env.get("EDGESTREAM_WEBHOOK_DISABLE_AFTER") ?? "5d");
  } catch (error) {
    throw new ConfigError(
      `EDGESTREAM_WEBHOOK_DISABLE_AFTER: ${error instanceof Error ? error.message : error}`,
      { cause: error },
    );
  }
  return new WebhookService({ ...options, deliveries, policy, disableAfterMs });
}

async function main(): Promise<void> {
  const configPath = Deno.env.get("EDGESTREAM_CONFIG") ??
    new URL("../examples/config.json", import.meta.url).pathname;
  let streams;
  let store: Store;
  let webhooks: WebhookService;
  try {
    streams = await loadConfigFile(configPath);
    store = storeFromEnv(Deno.env);
    webhooks = webhooksFromEnv(Deno.env, { store, streams });
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      Deno.exit(1);
    }
    throw error;
  }
  const keys = await KeyRing.parse(Deno.env.get("EDGESTREAM_KEYS"));
  console.log(
    store.kind === "redis"
      ? `edgestream: store: redis (${Deno.env.get("UPSTASH_REDIS_REST_URL")}, prefix ${
        Deno.env.get("EDGESTREAM_PREFIX") ?? "es"
      })`
      : "edgestream: store: memory (embedded; state is lost on restart)",
  );
  console.log(
    `edgestream: ${streams.size} stream(s) from ${configPath}: ${[...streams.keys()].join(", ")}`,
  );

  let hostname = Deno.env.get("HOST") ?? "0.0.0.0";
  if (keys.open) {
    if (hostname !== "127.0.0.1" && hostname !== "localhost" && hostname !== "::1") {
      hostname = "127.0.0.1";
    }
    console.warn(
      "edgestream: no EDGESTREAM_KEYS set: open development mode, every request is allowed; listening on localhost only",
    );
  }
  const port = Number(Deno.env.get("PORT") ?? 8000);
  // Other instances tail a shared store's log, so running window values are
  // published there even while no subscriber of this instance wants them.
  const live = new LiveHub(streams, store, { shared: store.kind !== "memory" });
  const app = createApp({ streams, store, keys, live, webhooks });
  // Endpoints decide which events ingest logs; know them before the first request.
  await webhooks.refreshEndpoints().catch((error) =>
    console.error(`edgestream: cannot load webhook endpoints yet: ${error.message}`)
  );

  const sweepEveryMs = parseDuration(Deno.env.get("EDGESTREAM_SWEEP_EVERY") ?? "5s");
  const compiled = streams;
  if (sweepEveryMs > 0) {
    setInterval(() => {
      sweepOnce(compiled.values(), store, { consumers: [webhooks] }).catch((error) =>
        console.error(`edgestream: sweep failed: ${error instanceof Error ? error.message : error}`)
      );
    }, sweepEveryMs);
  }

  Deno.serve({
    port,
    hostname,
    onListen: ({ hostname, port }) =>
      console.log(`edgestream: listening on http://${hostname}:${port}`),
  }, app.fetch);
}

if (import.meta.main) await main();
