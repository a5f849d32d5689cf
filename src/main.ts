/**
 * Server entry: reads the environment (`env.ts` lists every variable),
 * sets up the logs, builds the app and serves it, with a timer running the
 * sweep. A startup mistake prints one line naming the setting and exits
 * with status 1. SIGTERM or SIGINT stops it well (`shutdown.ts`) within
 * `EDGESTREAM_SHUTDOWN`: exit status 0 when no work was left, 1 when the
 * bound ran out on work in flight; a second signal exits at once with 1 (not
 * one within 250 ms of the first: `deno run --watch` sends several for a Ctrl-C).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createApp } from "./app.ts";
import { ConfigError } from "./config/mod.ts";
import {
  configFromEnv,
  type ConfigFromEnvOptions,
  type ServerConfig,
  type StartupNotice,
} from "./env.ts";
import { LiveHub, startSweeping, sweepOnce } from "./fanout/mod.ts";
import { detached, OutageLog, WebhookBacklogGauges } from "./telemetry/mod.ts";
import {
  configureLogging,
  escapeControls,
  flushLogLines,
  redactSecrets,
} from "./telemetry/logging.ts";
import type { WebhookService } from "./fanout/webhooks/mod.ts";
import { RejectedCounts } from "./ingest/mod.ts";
import { OpenConnections, RequestsInFlight } from "./http/open_connections.ts";
import { type ListeningServer, serveListening } from "./http/listener.ts";
import { PROBE_PATHS } from "./http/stream_routes.ts";
import { exitOnStopSignal, type StopReport, stopServer } from "./shutdown.ts";
import { StoreUnavailableError } from "./store/mod.ts";
import type { OpenAPIHono } from "@hono/zod-openapi";

const logger = getLogger(["edgestream"]);

/**
 * Prints the one line of a startup mistake, after the log lines written before it, and exits with
 * status 1. A newline in the message (a JSON parser's message quotes the file's text) is printed
 * as `\n`, so it stays one line; another control character as `\r` or `\x1b`, as text log lines
 * write them (`escapeControls`): a carriage return (a value from an env file with CRLF line ends,
 * a config file with CR ones) would send a terminal back to the start of the line, to write the
 * rest over the setting's name.
 */
export function fail(message: string): never {
  // A line logged before ("listening on") waits in the log buffer: out first, not after this one.
  flushLogLines();
  // Not through the logger, but redacted as its lines are: a setting quoted may hold a token.
  console.error(redactSecrets(`edgestream: ${escapeControls(message)}`));
  Deno.exit(1);
}

/** Reads the environment (`configFromEnv`); a mistake in it is the one line of `fail`. */
export async function configFromEnvOrFail(
  options: ConfigFromEnvOptions = {},
): Promise<ServerConfig> {
  return await configFromEnv(Deno.env, options).catch((error) => {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  });
}

/** A running server. */
export interface RunningServer {
  /** Where it listens. */
  addr: Deno.NetAddr;
  /** Stops it well within `EDGESTREAM_SHUTDOWN`, as SIGTERM does (see `shutdown.ts`). */
  stop(): Promise<StopReport>;
}

/**
 * Records the config file's streams in the store and starts polling for
 * streams created at run time. A config stream whose counter changed
 * against the store is a startup mistake (one line, exit 1). A store that
 * cannot be reached yet is logged and the server starts anyway: a config
 * stream not recorded is recorded before its first event is counted, and
 * every poll tries again (see `StreamRegistry.recordConfigStream`).
 */
export async function registerStreams(config: Pick<ServerConfig, "streams">): Promise<void> {
  try {
    await config.streams.registerConfig();
  } catch (error) {
    if (error instanceof ConfigError) fail(`EDGESTREAM_CONFIG: ${error.message}`);
    logStartupStoreError(
      "Cannot record the config streams in the store yet (again before their first event, and with every poll)",
      error,
    );
  }
  config.streams.startPolling();
}

/**
 * Logs, at error, a startup step (`what`) the store did not do. A store it cannot reach or that
 * refuses its token (`StoreUnavailableError`, whose message ends naming the setting to check) is a
 * startup mistake, not a defect: one line, the message alone, no stack. Any other error keeps its
 * stack.
 */
export function logStartupStoreError(what: string, error: unknown): void {
  if (error instanceof StoreUnavailableError) {
    // Text, not a message template (the message may hold braces).
    const text = `${what}: ${error.message}`;
    logger.error(text.replaceAll("{", "{{").replaceAll("}", "}}"));
  } else {
    logger.error(`${what}: {error}`, { error });
  }
}

/** Logs the startup notices: text, not message templates (a value may hold braces). */
export function logNotices(notices: readonly StartupNotice[]): void {
  for (const notice of notices) {
    logger[notice.level](notice.text.replaceAll("{", "{{").replaceAll("}", "}}"));
  }
}

/**
 * Asks the store's server how it keeps data and logs what endangers it (see
 * `redisSetupWarnings`), in the background: a store that answers slowly holds up nothing.
 */
export function logStoreWarnings(config: Pick<ServerConfig, "storeWarnings">): void {
  config.storeWarnings().then(logNotices).catch((error) =>
    logger.debug("Cannot ask the store how it keeps data: {error}", { error })
  );
}

/**
 * The URL a server listening on `hostname`:`port` answers at, for the "listening on" line: an IPv6
 * address in brackets (`http://[::1]:8000`), as a URL writes it.
 */
export function listeningUrl(hostname: string, port: number): string {
  return `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
}

/** The app both entry points serve, and what stopping it needs besides the config. */
export interface ServerApp {
  /** The app, from `createApp`. */
  app: OpenAPIHono;
  /** Live subscriptions, told when the server stops. */
  live: LiveHub;
  /** Open sockets and streams, closed when the server stops. */
  connections: OpenConnections;
  /** The webhook service, whose claims a stop gives back. */
  webhooks: WebhookService;
  /** The rejected counts of requests that accepted none, which a stop applies. */
  rejectedCounts: RejectedCounts;
}

/**
 * Loads the webhook endpoints, which decide which events ingest logs: before the first request
 * is answered. A store that cannot be reached yet is logged, not thrown.
 */
export async function loadEndpoints(webhooks: WebhookService): Promise<void> {
  await webhooks.refreshEndpoints().catch((error) =>
    logStartupStoreError("Cannot load webhook endpoints yet", error)
  );
}

/** Options for {@linkcode createServerApp}. */
export interface CreateServerAppOptions {
  /** Whether the webhook endpoints are still loading: `/readyz` then answers 503 `starting`. */
  starting?: () => boolean;
}

/**
 * The app both entry points serve (see {@linkcode createGatedServerApp}), its webhook endpoints
 * not loaded yet.
 */
export function createServerApp(
  config: ServerConfig,
  options: CreateServerAppOptions = {},
): ServerApp {
  const { streams, store, keys, origins, webhooks } = config;
  // Other instances tail a shared store's log, so running window values are
  // published there even while no subscriber of this instance wants them.
  const live = new LiveHub(streams, store, { shared: store.kind !== "memory" });
  const connections = new OpenConnections();
  let rejectedCounts: RejectedCounts | undefined;
  const app = createApp({
    streams,
    store,
    keys,
    origins,
    live,
    webhooks,
    connections,
    starting: options.starting,
    liveRoutes: {
      subscriptions: config.subscriptions,
      socket: { slots: config.ingestSockets },
    },
    // Kept, so that a stop applies what waits in it.
    rejectedCounts: (target, now) => rejectedCounts = new RejectedCounts(target, { now }),
  });
  // Set by now: createApp calls the `rejectedCounts` factory synchronously, before it returns.
  return { app, live, connections, webhooks, rejectedCounts: rejectedCounts! };
}

/**
 * The app both entry points serve, held until its webhook endpoints are loaded: they decide which
 * events ingest logs, so requests wait for them (`serveApp`'s `ready`), but the probes, answered
 * at once, `/readyz` with 503 `starting` meanwhile (a store that does not answer holds the loading
 * up to its deadline, past a probe's timeout). The entry point listens first, then {@linkcode
 * GatedServerApp.open}s it: a port in use is the one line a start prints, not after a line about a
 * store it could not reach (which it runs without; the port it cannot run without).
 */
export interface GatedServerApp {
  /** The app, from {@linkcode createServerApp}. */
  built: ServerApp;
  /** Resolves once the webhook endpoints are loaded or could not be (logged); never rejects. */
  ready: Promise<void>;
  /** Loads the webhook endpoints (once, however often called) and resolves as `ready`. */
  open(): Promise<void>;
}

/** The app of {@linkcode GatedServerApp}, its webhook endpoints not loaded until it is opened. */
export function createGatedServerApp(config: ServerConfig): GatedServerApp {
  const endpoints = Promise.withResolvers<void>();
  let loading = true;
  endpoints.promise.then(() => loading = false);
  const built = createServerApp(config, { starting: () => loading });
  let opened = false;
  return {
    built,
    ready: endpoints.promise,
    open() {
      if (!opened) {
        opened = true;
        loadEndpoints(built.webhooks).then(() => endpoints.resolve());
      }
      return endpoints.promise;
    },
  };
}

/**
 * The log of the webhook backlog count made after each sweep: a store unavailable is said when it
 * starts, at most once a minute while it lasts and when it ends, as the sweep's own failures are,
 * not as an error with its stack after every sweep.
 */
export function backlogCountLog(): OutageLog {
  return new OutageLog(logger, {
    failed: "Cannot count webhook deliveries: {error}",
    recovered: "Webhook deliveries counted again",
  });
}

/** Options for {@linkcode serveApp}. */
export interface ServeAppOptions {
  /** The interface to listen on. */
  hostname: string;
  /** The port; `undefined` for Deno.serve's default. */
  port: number | undefined;
  /** How long a stop may take, in ms (`EDGESTREAM_SHUTDOWN`). */
  shutdownMs: number;
  /**
   * How long (ms) of `shutdownMs` a stop keeps serving first, `/readyz` answering 503
   * (`EDGESTREAM_DRAIN`). @default {0}
   */
  drainMs?: number;
  /** Prints the entry point's one line for an error of `Deno.serve` (or rethrows it). */
  onListenError(error: unknown): never;
  /**
   * Requests are answered once it resolves (the webhook endpoints loaded; it never rejects), but
   * `/healthz` and `/readyz`, answered at once (a probe waits for no store).
   */
  ready?: Promise<void>;
}

/** A server listening, from {@linkcode serveApp}. */
export interface ServingApp {
  /** Where it listens. */
  addr: Deno.NetAddr;
  /**
   * Stops it well (see `shutdown.ts`), `stopPeriodic` stopping the entry point's own timers and
   * then `giveBackLease` giving back the webhook backlog lease (work it does not wait for).
   */
  stop(
    stopPeriodic: () => Promise<void>,
    giveBackLease?: () => Promise<void>,
  ): Promise<StopReport>;
}

/**
 * Serves a built app, as both entry points do: logs "listening on", counts requests in flight,
 * and listens again when the accept loop fails (out of file descriptors under a flood of
 * connections) rather than let Deno.serve's rejection end the process; `fail` when it cannot.
 */
export function serveApp(built: ServerApp, options: ServeAppOptions): ServingApp {
  // Counted, so a stop knows when every request read was answered (shutdown.ts).
  const requests = new RequestsInFlight();
  let handler: Deno.ServeHandler<Deno.NetAddr> = built.app.fetch;
  if (options.ready !== undefined) {
    const ready = options.ready;
    let isReady = false;
    ready.then(() => isReady = true);
    // No await once ready: the hot path pays one flag check, not a promise.
    handler = (request, info) =>
      isReady || isProbe(request)
        ? built.app.fetch(request, info)
        : ready.then(() => built.app.fetch(request, info));
  }
  let server: ListeningServer;
  try {
    server = serveListening(requests.track(handler), {
      port: options.port,
      hostname: options.hostname,
      // Its own line: Deno.serve's default prints plain text where every line is one JSON object.
      onListen: ({ hostname, port }) =>
        logger.info("listening on {url}", { url: listeningUrl(hostname, port) }),
      onFatal: fail,
    });
  } catch (error) {
    options.onListenError(error);
  }
  const { live, connections, webhooks, rejectedCounts } = built;
  return {
    addr: server.addr,
    stop: (stopPeriodic, giveBackLease) =>
      stopServer({
        server,
        connections,
        live,
        webhooks,
        requests,
        rejectedCounts,
        stopPeriodic,
        giveBackLease,
      }, {
        boundMs: options.shutdownMs,
        drainMs: options.drainMs,
      }),
  };
}

/** Whether `request` asks for `/healthz` or `/readyz`, answered before the server is ready. */
function isProbe(request: Request): boolean {
  // Deno makes the URL from the Host header: one that does not parse (`Host: a, b`) waits, and
  // the app answers it as it answers such a request once ready.
  try {
    const { pathname } = new URL(request.url);
    return PROBE_PATHS.includes(pathname);
  } catch {
    return false;
  }
}

/**
 * The one line (`fail`) for an error of `Deno.serve` listening on `hostname`:`port`, naming the
 * setting at fault: `PORT` when the port is taken or not allowed, `HOST` for anything else (an
 * address of no interface, a name that does not resolve, an empty one).
 */
export function failToListen(error: unknown, hostname: string, port: number | undefined): never {
  if (error instanceof Deno.errors.AddrInUse) fail(`PORT: ${hostname}:${port} is already in use`);
  if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
    fail(`PORT: cannot listen on ${hostname}:${port}: ${error.message}`);
  }
  fail(
    `HOST: cannot listen on ${hostname}:${port}: ${error instanceof Error ? error.message : error}`,
  );
}

/** Options for {@linkcode serve}. */
export interface ServeOptions {
  /**
   * Called once the server listens, before the config streams are recorded in the store (which
   * waits for a slow store up to its deadline): from then on a stop must not wait for that.
   */
  onListening?(server: RunningServer): void;
}

/**
 * Starts the server; resolves once it listens and the config streams are recorded (or logged).
 *
 * It starts in a trace context of its own making (no span): Deno's `fetch` (every Redis call)
 * leaves its span active after it where no context was, so the timers started after the first
 * store call (the sweep, the definitions poll) would run under that call's span, and every store
 * call of theirs for the life of the process would join its trace.
 */
export function serve(config: ServerConfig, options: ServeOptions = {}): Promise<RunningServer> {
  return detached(() => startServing(config, options));
}

async function startServing(config: ServerConfig, options: ServeOptions): Promise<RunningServer> {
  const { streams, store, webhooks } = config;
  // Listening first, then the endpoints loaded (requests but the probes wait for them).
  const gated = createGatedServerApp(config);
  const serving = serveApp(gated.built, {
    hostname: config.hostname,
    port: config.port,
    shutdownMs: config.shutdownMs,
    drainMs: config.drainMs,
    onListenError: (error) => failToListen(error, config.hostname, config.port),
    ready: gated.ready,
  });
  let sweeping: { stop(): Promise<void> } | undefined;
  let backlog: WebhookBacklogGauges | undefined;
  let stopping: Promise<StopReport> | undefined;
  const running: RunningServer = {
    addr: serving.addr,
    stop() {
      stopping ??= serving.stop(
        async () => {
          streams.stop();
          await sweeping?.stop();
        },
        // Its lease given back, another process reports the backlog from its next sweep rather
        // than once the lease ran out (three sweeps).
        async () => {
          await backlog?.close().catch((error) =>
            logger.warn("Cannot give back the webhook backlog lease: {error}", { error })
          );
        },
      );
      return stopping;
    },
  };
  options.onListening?.(running);
  await gated.open();
  // Listening first: a process that cannot (its port taken) stops before it records anything in
  // the store. An event for a config stream not recorded yet waits for its record.
  await registerStreams(config);
  if (stopping) {
    // Stopped while the streams were recorded: the poll they started just now stops too.
    streams.stop();
    return running;
  }
  // Once up: a startup mistake above stays the one line it prints (a notice may be a warning).
  logNotices(config.notices);
  logStoreWarnings(config);
  if (config.sweepEveryMs > 0) {
    // The webhook backlog is shared: one sweeping process at a time reports it.
    const gauges = new WebhookBacklogGauges(config.deliveries, {
      leaseMs: 3 * config.sweepEveryMs,
    });
    backlog = gauges;
    const counting = backlogCountLog();
    // A sweep resolves once deliveries are stored and sends them in the
    // background; a later tick during slow sends claims none of them again.
    sweeping = startSweeping(
      async () => {
        const report = await sweepOnce(streams.values(), store, { consumers: [webhooks] });
        await gauges.refresh().then(
          () => counting.success(),
          (error) => counting.failure(error),
        );
        return report;
      },
      config.sweepEveryMs,
    );
  }
  return running;
}

/** What a stop before the server listens reports: nothing was started, so nothing is left. */
export const NOTHING_STARTED: StopReport = {
  clean: true,
  unfinished: [],
  leftIdle: [],
  elapsedMs: 0,
};

if (import.meta.main) {
  const config = await configFromEnvOrFail();
  configureLogging({ level: config.logLevel, secrets: config.secrets });
  // A signal right after "listening on" must stop it well, and within the bound: without waiting
  // for the config streams to be recorded in a store that is slow to answer.
  let running: RunningServer | undefined;
  const serving = serve(config, { onListening: (server) => running = server });
  exitOnStopSignal(
    () => running?.stop() ?? Promise.resolve(NOTHING_STARTED),
    config.shutdownMs,
  );
  await serving;
}
