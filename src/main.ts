/**
 * Server entry: reads the environment, loads the config, picks the store and
 * serves the app.
 *
 * Environment: `EDGESTREAM_CONFIG` (default `examples/config.json`), `PORT`
 * (8000), `HOST` (0.0.0.0, or 127.0.0.1 in open mode), `EDGESTREAM_KEYS`.
 *
 * @module
 */
import { createApp } from "./app.ts";
import { ConfigError, loadConfigFile } from "./config/mod.ts";
import { KeyRing } from "./http/auth.ts";
import { MemoryStore } from "./store/memory_store.ts";

async function main(): Promise<void> {
  const configPath = Deno.env.get("EDGESTREAM_CONFIG") ??
    new URL("../examples/config.json", import.meta.url).pathname;
  let streams;
  try {
    streams = await loadConfigFile(configPath);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      Deno.exit(1);
    }
    throw error;
  }
  const keys = await KeyRing.parse(Deno.env.get("EDGESTREAM_KEYS"));
  const store = new MemoryStore();
  console.log(`edgestream: store: ${store.kind} (embedded; state is lost on restart)`);
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
  const app = createApp({ streams, store, keys });
  Deno.serve({
    port,
    hostname,
    onListen: ({ hostname, port }) =>
      console.log(`edgestream: listening on http://${hostname}:${port}`),
  }, app.fetch);
}

if (import.meta.main) await main();
