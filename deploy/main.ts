/**
 * Deno Deploy entry: the same app as `src/main.ts`, configured by the same
 * `configFromEnv`, with the sweep run by `Deno.cron` every minute instead of
 * a timer (isolates come and go, so a timer would not be reliable). Needs the
 * Upstash variables: isolates share nothing in memory. See `deploy/README.md`.
 *
 * @module
 */
import { createApp } from "../src/app.ts";
import { ConfigError } from "../src/config/mod.ts";
import { configFromEnv } from "../src/env.ts";
import { LiveHub, sweepOnce } from "../src/fanout/mod.ts";
import { OpenConnections } from "../src/http/open_connections.ts";
import { exitOnStopSignal, stopServer } from "../src/shutdown.ts";

async function setUp() {
  const config = await configFromEnv(Deno.env).catch((error) => {
    if (error instanceof ConfigError) console.error(`edgestream: ${error.message}`);
    throw error;
  });
  const { streams, store, keys, origins, webhooks } = config;
  if (store.kind === "memory") {
    console.warn(
      "edgestream: no UPSTASH_REDIS_REST_URL/TOKEN: every isolate has its own memory store; set them on Deno Deploy",
    );
  }
  const live = new LiveHub(streams, store, { shared: store.kind !== "memory" });
  const connections = new OpenConnections();
  const app = createApp({ streams, store, keys, origins, live, webhooks, connections });
  // Endpoints decide which events ingest logs; know them before the first request.
  await webhooks.refreshEndpoints().catch((error: Error) =>
    console.error(`edgestream: cannot load webhook endpoints yet: ${error.message}`)
  );
  return { app, streams, store, webhooks, live, connections, shutdownMs: config.shutdownMs };
}

const ready = setUp();

// Registered at the top level, before the server starts, as Deno Deploy requires.
Deno.cron("edgestream sweep", "* * * * *", async () => {
  const { streams, store, webhooks } = await ready;
  const report = await sweepOnce(streams.values(), store, { consumers: [webhooks] });
  // The sweep leaves its sends running; Deploy may stop the isolate once the
  // handler returns, so they finish inside it. Were it stopped anyway, the
  // deliveries are stored and a later run sends them once their claims' leases end.
  const sent = await webhooks.settle();
  const queued = report.fanout?.[0]?.queued ?? 0;
  if (report.closed.length > 0 || report.fired.length > 0 || sent.attempted > 0) {
    console.log(
      `edgestream: sweep closed ${report.closed.length} window(s), fired ${report.fired.length} alert(s), queued ${queued} and attempted ${sent.attempted} delivery(ies)`,
    );
  }
});

const { app, live, webhooks, connections, shutdownMs } = await ready;
const server = Deno.serve(app.fetch);
// Deno Deploy sends SIGINT to an isolate it stops and kills it 5 s later (EDGESTREAM_SHUTDOWN
// defaults to 4 s); stop as src/main.ts does.
exitOnStopSignal(
  () => stopServer({ server, connections, live, webhooks }, { boundMs: shutdownMs }),
  shutdownMs,
);
