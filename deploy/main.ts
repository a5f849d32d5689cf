/**
 * Deno Deploy entry: the same app as `src/main.ts`, configured by the same
 * `configFromEnv`, with the sweep run by `Deno.cron` every minute instead of
 * a timer (isolates come and go, so a timer would not be reliable). Needs the
 * Upstash variables: isolates share nothing in memory. See `deploy/README.md`.
 *
 * Deploy finds `Deno.cron` by evaluating this module's top level when it
 * deploys, so the cron is registered first, and nothing before it reads the
 * config file, calls Redis or throws. A startup mistake (a bad variable, or
 * an unsafe production setup) prints one line naming the setting and exits 1.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  backlogCountLog,
  configFromEnvOrFail,
  createGatedServerApp,
  fail,
  failToListen,
  logNotices,
  logStoreWarnings,
  NOTHING_STARTED,
  registerStreams,
  serveApp,
} from "../src/main.ts";
import { logSweepError, sweepOnce, sweepOutageLog } from "../src/fanout/mod.ts";
import { exitOnStopSignal, type StopReport } from "../src/shutdown.ts";
import { WebhookBacklogGauges } from "../src/telemetry/mod.ts";
import { configureLogging } from "../src/telemetry/logging.ts";

const logger = getLogger(["edgestream"]);

/** Deno Deploy kills an isolate this long after the SIGINT that stops it. */
const DEPLOY_KILL_AFTER_MS = 5_000;

let configured: ReturnType<typeof configure> | undefined;
let started: ReturnType<typeof setUp> | undefined;

/** Reads the config once, on first use, and sets up the logs by it. */
function configOnce(): ReturnType<typeof configure> {
  configured ??= configure();
  return configured;
}

async function configure() {
  // EDGESTREAM_SWEEP_EVERY and EDGESTREAM_DRAIN unread: no value of theirs stops an isolate, and
  // one set is a startup warning that it has no effect here.
  const config = await configFromEnvOrFail({ platform: "deploy" });
  configureLogging({ level: config.logLevel, secrets: config.secrets });
  return config;
}

/** Builds the app once, on first use (the server or the cron), its webhook endpoints not loaded. */
function ready(): ReturnType<typeof setUp> {
  started ??= setUp();
  return started;
}

async function setUp() {
  const config = await configOnce();
  const { streams, store, webhooks } = config;
  // Not loaded here: as src/main.ts, it listens first, and requests but the probes wait for them.
  const gated = createGatedServerApp(config);
  // The webhook backlog is shared: the isolate that ran the last cron sweep
  // reports it (until its lease ends: over two minutes, two cron runs).
  const backlog = new WebhookBacklogGauges(config.deliveries, { leaseMs: 150_000 });
  return {
    gated,
    streams,
    store,
    webhooks,
    backlog,
    shutdownMs: config.shutdownMs,
    hostname: config.hostname,
    logNotices() {
      logNotices(config.notices);
      logStoreWarnings(config);
      if (store.kind === "memory") {
        logger.warn(
          "No UPSTASH_REDIS_REST_URL/TOKEN: every isolate has its own memory store; set them on Deno Deploy",
        );
      }
      // Valid for a process of one's own, but here the kill comes first: a stop still at work
      // then is cut short, as by a crash, and says nothing of what it did not finish.
      if (config.shutdownMs >= DEPLOY_KILL_AFTER_MS) {
        logger.warn(
          "EDGESTREAM_SHUTDOWN: {shutdown} is not under the 5 s Deno Deploy gives a stopping isolate before it kills it, so a stop that takes that long is cut short; set it under 5s (default 4s)",
          { shutdown: Deno.env.get("EDGESTREAM_SHUTDOWN") },
        );
      }
    },
  };
}

/** The cron's sweeps in progress: a stop waits for them, as src/main.ts waits for its timer's. */
const cronSweeps = new Set<Promise<void>>();
/** Whether the isolate is stopping: a cron run that starts then sweeps nothing. */
let cronStopped = false;

// First, at the top level, before the server starts, as Deno Deploy requires.
Deno.cron("edgestream sweep", "* * * * *", () => {
  if (cronStopped) return;
  const run = sweepFromCron().finally(() => cronSweeps.delete(run));
  cronSweeps.add(run);
  return run;
});

/**
 * Whole cron runs failing: an outage of the store said when it starts and ends, once a minute
 * between.
 */
const sweepOutage = sweepOutageLog();
/** The backlog count after a cron sweep failing: said as the sweep's outage is. */
const countOutage = backlogCountLog();

/** One cron run: a sweep, its sends, and the backlog gauges' counts. */
async function sweepFromCron(): Promise<void> {
  const { gated, streams, store, webhooks, backlog } = await ready();
  // The endpoints decide what the sweep sends: loaded first (once, with the server's loading).
  await gated.open();
  // Logged as the self-hosted timer logs it (a store unavailable: a warning); thrown, Deno would
  // print it itself, as text with its stack where every line is one JSON object. The next run
  // tries again.
  const report = await sweepOnce(streams.values(), store, { consumers: [webhooks] }).catch(
    (error) => {
      sweepOutage.failure(error);
      return undefined;
    },
  );
  if (report === undefined) return;
  sweepOutage.success();
  for (const { stream, error } of report.failed) logSweepError(error, stream);
  // The sweep leaves its sends running; Deploy may stop the isolate once the
  // handler returns, so they finish inside it. Were it stopped anyway, the
  // deliveries are stored and a later run sends them once their claims' leases end.
  const sent = await webhooks.settle();
  await backlog.refresh().then(
    () => countOutage.success(),
    (error) => countOutage.failure(error),
  );
  const queued = report.fanout?.[0]?.queued ?? 0;
  if (report.closed.length > 0 || report.fired.length > 0 || sent.attempted > 0) {
    logger.info(
      "Sweep closed {closed} window(s), fired {fired} alert(s), queued {queued} and attempted {attempted} delivery(ies)",
      {
        closed: report.closed.length,
        fired: report.fired.length,
        queued,
        attempted: sent.attempted,
      },
    );
  }
}

// As src/main.ts, a stop signal is handled from the moment the config is read: Deploy may stop a
// starting isolate before it listens (exit 0, nothing started), rather than be killed by it.
/** How a stop stops the server, once it listens. */
const stopping: { serving?: () => Promise<StopReport>; started: boolean } = { started: false };
exitOnStopSignal(
  () => stopping.serving?.() ?? Promise.resolve(NOTHING_STARTED),
  (await configOnce()).shutdownMs,
);
const {
  gated,
  shutdownMs,
  hostname,
  streams: registry,
  backlog,
  logNotices: logStartupNotices,
} = await ready();
// Deploy routes traffic to the default port; PORT lets a local run (or a test) choose one. The
// host is `configFromEnv`'s: loopback only in open mode (which answers only loopback Host names
// anyway), else HOST or every interface.
// Empty, as every setting, is not set.
const port = Deno.env.get("PORT") || undefined;
/** The port a local run without PORT listens on: Deno.serve's default, named in its one line. */
const DENO_SERVE_PORT = 8000;
// Served as src/main.ts serves: its "listening on" line, requests counted for a stop, listening
// again when the accept loop fails (out of file descriptors), and requests but the probes held
// until the webhook endpoints are loaded (`/readyz` 503 `starting` meanwhile).
const serving = serveApp(gated.built, {
  hostname,
  port: port === undefined ? undefined : Number(port),
  shutdownMs,
  // EDGESTREAM_DRAIN is ignored here (warned at startup): no drain takes from the 5 s before
  // Deploy's kill, for a `/readyz` nothing asks.
  drainMs: 0,
  ready: gated.ready,
  onListenError(error) {
    const listened = port === undefined ? DENO_SERVE_PORT : Number(port);
    if (error instanceof Deno.errors.AddrInUse) fail(`PORT: ${listened} is already in use`);
    // Run locally (Deploy sets no HOST): an address it cannot listen on is one line too.
    failToListen(error, hostname, listened);
  },
});
// Deno Deploy sends SIGINT to an isolate it stops and kills it 5 s later (EDGESTREAM_SHUTDOWN
// defaults to 4 s); stop as src/main.ts does, from the moment it listens: recording the config
// streams below waits for a slow store up to its deadline, which a stop must not wait for.
stopping.serving = () => {
  stopping.started = true;
  return serving.stop(
    async () => {
      cronStopped = true;
      registry.stop();
      // A sweep in flight is work, as the self-hosted timer's is: waited for within the bound.
      await Promise.all(cronSweeps);
    },
    // Given back, the next cron run's isolate reports the backlog gauges at once.
    async () => {
      await backlog.close().catch((error) =>
        logger.warn("Cannot give back the webhook backlog lease: {error}", { error })
      );
    },
  );
};
// Listening first: a process that cannot stops before it loads or records anything in the store.
// The webhook endpoints loaded (or logged: a store that cannot be reached yet), held requests go
// on.
await gated.open();
// Config streams checked against the store, and streams created at run time polled for; an event
// for a config stream not recorded yet waits for its record.
await registerStreams({ streams: registry });
// Stopped while they were recorded: the poll they started just now stops too.
if (stopping.started) registry.stop();
// Once up, as src/main.ts: a mistake above stays the one line it prints, and the notices (some
// are warnings) come after "listening on".
else logStartupNotices();
