/**
 * A server process for benchmarks: `baseline` is a Hono handler that only
 * parses the JSON body and replies 202; `pipeline` is the real app on the
 * given store. Prints `listening <port>` once ready.
 */
import { Hono } from "hono";
import { createApp } from "../src/app.ts";
import { loadConfigFile } from "../src/config/mod.ts";
import { KeyRing } from "../src/http/auth.ts";
import { MemoryStore } from "../src/store/memory_store.ts";
import type { Store } from "../src/store/types.ts";

const mode = Deno.args[0] ?? "pipeline";

async function pipelineApp(store: Store) {
  const streams = await loadConfigFile(new URL("./config.json", import.meta.url).pathname);
  return createApp({ streams, store, keys: await KeyRing.parse("") });
}

function baselineApp() {
  const app = new Hono();
  app.post("/v1/streams/:stream/events", async (c) => {
    const body = await c.req.json();
    return c.json({ accepted: Array.isArray(body) ? body.length : 1 }, 202);
  });
  return app;
}

const app = mode === "baseline" ? baselineApp() : await pipelineApp(new MemoryStore());

Deno.serve({
  port: 0,
  hostname: "127.0.0.1",
  onListen: ({ port }) => console.log(`listening ${port}`),
}, app.fetch);
