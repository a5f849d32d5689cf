/**
 * Server entry: reads the environment (`env.ts` lists every variable),
 * sets up the logs, builds the app and serves it, with a timer running the
 * sweep. A startup mistake prints one line naming the setting and exits
 * with status 1.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createApp } from "./app.ts";
import { ConfigError } from "./config/mod.ts";
import { configFromEnv, type ServerConfig } from "./env.ts";
import { LiveHub, sweepOnce } from "./fanout/mod.ts";
import { WebhookBacklogGauges } from "./telemetry/mod.ts";
import { configureLogging } from "./telemetry/logging.ts";

const logger = getLogger(["edgestream"]);

function fail(message: string): never {
  console.error(`edgestream: ${message}`);
  Deno.exit(1);
}

/** Starts the server; resolves once it listens. */
export async function serve(config: ServerConfig): Promise<Deno.HttpServer> {
  const { streams, store, keys, origins, webhooks } = config;
  for (const notice of config.notices) logger.info(notice);
  // Other instances tail a shared store's log, so running window values are
  // published there even while no subscriber of this instance wants them.
  const live = new LiveHub(streams, store, { shared: store.kind !== "memory" });
  const app = createApp({ streams, store, keys, origins, live, webhooks });
  // Endpoints decide which events ingest logs; know them before the first request.
  await webhooks.refreshEndpoints().catch((error) =>
    logger.error("Cannot load webhook endpoints yet: {error}", { error })
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
            logger.error("Cannot count webhook deliveries: {error}", { error })
          ),
        (error) => logger.error("Sweep failed: {error}", { error }),
      );
    }, config.sweepEveryMs);
  }
  try {
    return Deno.serve({
      port: config.port,
      hostname: config.hostname,
      onListen: ({ hostname, port }) =>
        logger.info("listening on {url}", { url: `http://${hostname}:${port}` }),
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
  configureLogging({ level: config.logLevel, secrets: config.secrets });
  await serve(config);
}
