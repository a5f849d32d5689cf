/**
 * Deno Deploy entry: the same app as `src/main.ts`, with the sweep run by
 * `Deno.cron` every minute instead of a timer (isolates come and go, so a
 * timer would not be reliable). Needs the Upstash variables: isolates share
 * nothing in memory. See `deploy/README.md`.
 *
 * @module
 */
import { createApp } from "../src/app.ts";
import { loadConfigFile } from "../src/config/mod.ts";
import { LiveHub, sweepOnce } from "../src/fanout/mod.ts";
import { KeyRing } from "../src/http/auth.ts";
import { storeFromEnv, webhooksFromEnv } from "../src/main.ts";

async function setUp() {
  const configPath = Deno.env.get("EDGESTREAM_CONFIG") ??
    new URL("../examples/config.json", import.meta.url).pathname;
  const streams = await loadConfigFile(configPath);
  const store = storeFromEnv(Deno.env);
  if (store.kind === "memory") {
    console.warn(
      "edgestream: no UPSTASH_REDIS_REST_URL/TOKEN: every isolate has its own memory store; set them on Deno Deploy",
    );
  }
  const webhooks = webhooksFromEnv(Deno.env, { store, streams });
  const keys = await KeyRing.parse(Deno.env.get("EDGESTREAM_KEYS"));
  const live = new LiveHub(streams, store, { shared: store.kind !== "memory" });
  const app = createApp({ streams, store, keys, live, webhooks });
  // Endpoints decide which events ingest logs; know them before the first request.
  await webhooks.refreshEndpoints().catch((error) =>
    console.error(`edgestream: cannot load webhook endpoints yet: ${error.message}`)
  );
  return { app, streams, store, webhooks };
}

const ready = setUp();

// Registered at the top level, before the server starts, as Deno Deploy requires.
Deno.cron("edgestream sweep", "* * * * *", async () => {
  const { streams, store, webhooks } = await ready;
  const report = await sweepOnce(streams.values(), store, { consumers: [webhooks] });
  if (report.closed.length > 0 || report.fired.length > 0) {
    console.log(
      `edgestream: sweep closed ${report.closed.length} window(s), fired ${report.fired.length} alert(s)`,
    );
  }
});

const { app } = await ready;
Deno.serve(app.fetch);
