/**
 * A server process for benchmarks; prints `listening <port>` once ready.
 *
 * - `baseline`: a Hono handler that only parses the JSON body and replies 202.
 * - `main`: what `deno task start` runs (`src/main.ts`'s `serve`, configured from the environment
 *   like it: `EDGESTREAM_CONFIG`, `EDGESTREAM_KEYS`, the Upstash variables…), logs included.
 * - `naive`: the handler a user would write instead (`_naive_peer.ts`) on the Redis named by
 *   `UPSTASH_REDIS_REST_URL`/`UPSTASH_REDIS_REST_TOKEN`, requiring the key `BENCH_KEY`.
 * - `pipeline`: the real app on the memory store.
 * - `pipeline-redis`: the real app on the Redis store, chosen from `UPSTASH_REDIS_REST_URL`,
 *   `UPSTASH_REDIS_REST_TOKEN` and `EDGESTREAM_PREFIX` as `src/main.ts` does.
 *   `BENCH_GROUP_COMMIT=off` turns group commit off (on by default for Redis).
 * - `bridge`: the Upstash REST bridge in front of `BENCH_REDIS_URL`, expecting
 *   `UPSTASH_REDIS_REST_TOKEN`, so it does not share a process with the load generator.
 */
import { fileURLToPath } from "node:url";
import { Hono } from "hono";
import { createApp } from "../src/app.ts";
import { loadConfigFile } from "../src/config/mod.ts";
import { KeyRing } from "../src/http/auth.ts";
import { storeFromEnv } from "../src/env.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import type { Store } from "../src/store/types.ts";
import { startUpstashBridge } from "../tools/upstash_bridge.ts";
import { configFromEnv } from "../src/env.ts";
import { serve } from "../src/main.ts";
import { configureLogging } from "../src/telemetry/logging.ts";
import { Redis } from "@upstash/redis";
import { naivePeerApp } from "./_naive_peer.ts";
import { serveForBench } from "./_shared.ts";

const mode = Deno.args[0] ?? "pipeline";

async function pipelineApp(store: Store) {
  const streams = await loadConfigFile(fileURLToPath(new URL("./config.json", import.meta.url)));
  const groupCommit = Deno.env.get("BENCH_GROUP_COMMIT") === "off" ? false : undefined;
  const keys = await KeyRing.parse(Deno.env.get("EDGESTREAM_KEYS") ?? "");
  return createApp({ streams, store, keys, groupCommit });
}

function baselineApp() {
  const app = new Hono();
  app.post("/v1/streams/:stream/events", async (c) => {
    const body = await c.req.json();
    return c.json({ accepted: Array.isArray(body) ? body.length : 1 }, 202);
  });
  return app;
}

function redisStore(): Store {
  const store = storeFromEnv(Deno.env);
  if (store.kind !== "redis") {
    console.error("pipeline-redis needs UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN");
    Deno.exit(1);
  }
  return store;
}

if (mode === "bridge") {
  const redisUrl = Deno.env.get("BENCH_REDIS_URL");
  const token = Deno.env.get("UPSTASH_REDIS_REST_TOKEN");
  if (!redisUrl || !token) {
    console.error("bridge needs BENCH_REDIS_URL and UPSTASH_REDIS_REST_TOKEN");
    Deno.exit(1);
  }
  const bridge = await startUpstashBridge({ redisUrl, token });
  console.log(`listening ${new URL(bridge.url).port}`);
} else if (mode === "main") {
  const config = await configFromEnv(Deno.env);
  configureLogging({ level: config.logLevel, secrets: config.secrets });
  const server = await serve(config);
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    // Deno.exit, not the default death, so that `--cpu-prof` writes its profile.
    Deno.addSignalListener(signal, async () => {
      await server.stop();
      Deno.exit(0);
    });
  }
  console.log(`listening ${server.addr.port}`);
} else if (mode === "naive") {
  const redis = new Redis({
    url: Deno.env.get("UPSTASH_REDIS_REST_URL")!,
    token: Deno.env.get("UPSTASH_REDIS_REST_TOKEN")!,
    enableTelemetry: false,
    enableAutoPipelining: true,
  });
  serveForBench(naivePeerApp(redis, Deno.env.get("BENCH_KEY") ?? "").fetch);
} else {
  const app = mode === "baseline"
    ? baselineApp()
    : await pipelineApp(mode === "pipeline-redis" ? redisStore() : new MemoryStore());

  serveForBench(app.fetch);
}
