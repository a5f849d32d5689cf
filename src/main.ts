/**
 * Server entry: reads the environment (`env.ts` lists every variable),
 * builds the app and serves it, with a timer running the sweep. A startup
 * mistake prints one line naming the setting and exits with status 1.
 *
 * @module
 */
import { createApp } from "./app.ts";
import { ConfigError } from "./config/mod.ts";
import { configFromEnv, type ServerConfig } from "./env.ts";
import { LiveHub, sweepOnce } from "./fanout/mod.ts";
import { WebhookBacklogGauges } from "./telemetry/mod.ts";

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function fail(message: string): never {
  console.error(`edgestream: ${message}`);
  Deno.exit(1);
}

/** Starts the server; resolves once it listens. */
export async function serve(config: ServerConfig): Promise<Deno.HttpServer> {
  const { streams, store, keys, origins, webhooks } = config;
  for (const notice of config.notices) console.log(`edgestream: ${notice}`);
  // Other instances tail a shared store's log, so running window values are
  // published there even while no subscriber of this instance wants them.
  const live = new LiveHub(streams, store, { shared: store.kind !== "memory" });
  const app = createApp({ streams, store, keys, origins, live, webhooks });
  // Endpoints decide which events ingest logs; know them before the first request.
  await webhooks.refreshEndpoints().catch((error) =>
    console.error(`edgestream: cannot load webhook endpoints yet: ${error.message}`)
  );
  if (config.sweepEveryMs > 0) {
    // The webhook backlog is shared: one sweeping process at a time reports it.
    const backlog = new WebhookBacklogGauges(config.deliveries, {
      leaseMs: 3 * config.sweepEveryMs,
    });
    // A sweep resolves once deliveries are stored and sends them in the
    // background; a later tick during slow sends claims none of them again.
    setInterval(() => {
      sweepOnce(streams.values(), store, { consumers: [webhooks] }).then(
        () =>
          backlog.refresh().catch((error) =>
            console.error(`edgestream: cannot count webhook deliveries: ${describe(error)}`)
          ),
        (error) => console.error(`edgestream: sweep failed: ${describe(error)}`),
      );
    }, config.sweepEveryMs);
  }
  try {
    return Deno.serve({
      port: config.port,
      hostname: config.hostname,
      onListen: ({ hostname, port }) =>
        console.log(`edgestream: listening on http://${hostname}:${port}`),
    }, app.fetch);
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      fail(`PORT: ${config.hostname}:${config.port} is already in use`);
    }
    if (error instanceof Deno.errors.AddrNotAvailable || error instanceof Deno.errors.NotFound) {
      fail(`HOST: cannot listen on ${config.hostname}:${config.port}: ${error.message}`);
    }
    throw error;
  }
}

if (import.meta.main) {
  const config = await configFromEnv(Deno.env).catch((error) => {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  });
  await serve(config);
}
