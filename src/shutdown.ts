/**
 * Stopping a server well, on SIGTERM or SIGINT (Deno Deploy sends SIGINT to
 * an isolate it stops and kills it 5 s later), within a bound
 * (`EDGESTREAM_SHUTDOWN`, default 4 s):
 *
 * 0. With a drain (`EDGESTREAM_DRAIN`, default none), first the server goes
 *    on listening and serving for that long while `/readyz` answers 503
 *    `shutting_down`, so a load balancer that probes it (or one that lags
 *    the signal, as Kubernetes endpoints do) takes it out before new
 *    connections are refused. The drain counts inside the bound: the steps
 *    below get what is left of it.
 * 1. The sweep timer stops; a sweep in progress may finish. Then the webhook
 *    backlog lease is given back (a step that holds no work).
 * 2. WebSocket ingest connections answer every frame they read (the one being
 *    applied with its ack, the others `connection_closing`, not applied) and
 *    close with 1001; new WebSockets and subscriptions get 503
 *    `shutting_down`. At the same time live subscriptions end: WebSocket
 *    subscribers are closed with 1001, SSE subscribers get a final `closed`
 *    event.
 * 3. Then (at the latest at half the bound) the listener closes, so new
 *    connections are refused, and the HTTP requests in flight finish: every
 *    ingest request read is applied and answered. (`Deno.serve`'s shutdown
 *    closes upgraded WebSockets at once, hence step 2 first.) A body still
 *    arriving is cut by that shutdown; its request is answered 503
 *    `body_interrupted`, nothing applied. Once every request was answered,
 *    HTTP is done: a connection whose client goes on sending that body (which
 *    `Deno.serve` would wait for) closes with the process.
 * 4. Meanwhile webhook sends in flight may finish until three quarters of
 *    the bound; those still waiting for an answer then are cut off and their
 *    claims given back, so another instance sends them at once instead of
 *    after their lease.
 * 5. Once the WebSockets and HTTP requests were answered, the rejected events
 *    of requests that accepted none, whose count waits for an apply of its
 *    own (`ingest/rejected_counts.ts`), are counted at once: one apply a
 *    stream, within what is left of the bound.
 *
 * Whatever still runs when the bound ends is left. The stop is unclean (the
 * report names the steps) only when what was left held work: an HTTP request
 * being answered (or answered less than {@linkcode REPLIES_SENT_MS} before, its
 * reply maybe still leaving), a WebSocket ingest connection open, a webhook
 * send in flight, a sweep running, a rejected count not applied. Steps left
 * with none (an idle listener still closing, a read of a live tail, a dispatch
 * that is done again) end with the process and lose nothing, so a server with
 * nothing in flight stops clean whatever the bound. A request cut gets no reply
 * (a reset before any response byte), and one being applied at that moment may
 * count without an ack, which dedupe ids or an `Idempotency-Key` make safe to
 * resend. Live subscribers are told at the stop's start; a publication of
 * running window values in progress is dropped, as those not started are.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { LiveHub } from "./fanout/mod.ts";
import type { RejectedCounts } from "./ingest/mod.ts";
import type { WebhookService } from "./fanout/webhooks/mod.ts";
import type { OpenConnections, RequestsInFlight } from "./http/open_connections.ts";

const logger = getLogger(["edgestream", "shutdown"]);

/** What a stopping server ends, in order. */
export interface StoppingServer {
  /** The HTTP server: its `shutdown()` stops accepting and waits for requests in flight. */
  server: Pick<Deno.HttpServer, "shutdown">;
  /** WebSocket ingest connections, closed before the server's own shutdown would cut them. */
  connections: OpenConnections;
  /** Live subscriptions (WebSocket and SSE). */
  live: Pick<LiveHub, "close">;
  /** Webhook sends. */
  webhooks: Pick<WebhookService, "close" | "sending">;
  /** Stops periodic work (the sweep timer); resolves once a run in progress ended. */
  stopPeriodic?: () => Promise<void>;
  /**
   * Gives back the webhook backlog lease, once periodic work stopped, so that another process
   * reports the gauges from its next sweep. Holds no work: a store that does not answer it in
   * time leaves it to the exit. @default {nothing to give back}
   */
  giveBackLease?: () => Promise<void>;
  /**
   * The server's requests being answered: once none runs (and a moment for the last reply's
   * bytes), HTTP is done though `server.shutdown()` may still wait for a client sending a body
   * that was cut and answered. @default {none: HTTP is done when the shutdown resolves}
   */
  requests?: Pick<RequestsInFlight, "idle" | "running" | "idleForMs">;
  /**
   * The rejected counts of requests that accepted none, waiting for their apply: flushed once the
   * WebSockets and HTTP requests were answered. @default {none}
   */
  rejectedCounts?: Pick<RejectedCounts, "flush" | "waiting">;
}

/** How long (ms) the last replies are given to leave once no request runs, before their
 * connections may be closed with the process. */
export const REPLIES_SENT_MS = 250;

/**
 * Resolves once no request runs and none started during the {@linkcode REPLIES_SENT_MS} after:
 * every request read was answered, and the replies had time to leave.
 */
async function answeredAll(requests: Pick<RequestsInFlight, "idle" | "running">): Promise<void> {
  do {
    await requests.idle();
    await delay(REPLIES_SENT_MS);
  } while (requests.running > 0);
}

/** Options for {@linkcode stopServer}. */
export interface StopOptions {
  /** Most time (ms) the stop takes, the drain included; what still runs then is left. */
  boundMs: number;
  /**
   * How long (ms) the server keeps listening and serving first, `/readyz` answering 503, before
   * the steps run within what is left of `boundMs`; below `boundMs`. @default {0}
   */
  drainMs?: number;
  /** Why, as WebSocket close reasons and SSE `closed` events say. @default {"Server is shutting down"} */
  reason?: string;
}

/** What {@linkcode stopServer} did. */
export interface StopReport {
  /** Whether no work was left when the bound ended: every step finished, or held none. */
  clean: boolean;
  /** The steps still running with work when the bound ended. */
  unfinished: string[];
  /** The steps still running without work when the bound ended (left to the process's exit). */
  leftIdle: string[];
  /** How long the stop took (ms). */
  elapsedMs: number;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Stops a server in the order the module doc gives, within
 * `options.boundMs`; resolves by then with what finished.
 *
 * @example
 * ```ts
 * import { stopServer } from "./shutdown.ts";
 * import type { StoppingServer } from "./shutdown.ts";
 *
 * declare const parts: StoppingServer;
 * const report = await stopServer(parts, { boundMs: 4_000 });
 * Deno.exit(report.clean ? 0 : 1);
 * ```
 */
export async function stopServer(
  parts: StoppingServer,
  options: StopOptions,
): Promise<StopReport> {
  const started = performance.now();
  const drainMs = Math.max(0, Math.min(options.drainMs ?? 0, options.boundMs));
  if (drainMs > 0) {
    parts.connections.drain();
    logger.info(
      "draining for {drainMs} ms (EDGESTREAM_DRAIN): still serving, /readyz answers 503 shutting_down",
      { drainMs },
    );
    await delay(drainMs);
  }
  const boundMs = options.boundMs - drainMs;
  const reason = options.reason ?? "Server is shutting down";
  /** Each step still running → whether it holds work now (see the module doc). */
  const running = new Map<string, () => boolean>();
  const step = (name: string, work: Promise<unknown>, holdsWork: () => boolean) => {
    const done: Promise<void> = work.then(
      () => {},
      (error) => logger.error("Stopping {name} failed: {error}", { name, error }),
    ).finally(() => running.delete(name));
    running.set(name, holdsWork);
    return done;
  };
  const { requests, connections, webhooks } = parts;

  // A sweep not ended is a run in progress.
  const sweep = step("sweep", parts.stopPeriodic?.() ?? Promise.resolve(), () => true);
  // Not a sweep: the lease only spares another process a wait, and no one loses work without it.
  const lease = step(
    "webhook backlog lease",
    sweep.then(() => parts.giveBackLease?.()),
    () => false,
  );
  const sockets = step("websockets", connections.close(reason), () => connections.size > 0);
  // Its subscribers are told at once; what it may still wait for is reads and publications.
  const live = step("live subscriptions", parts.live.close(), () => false);
  const http = step(
    "http requests",
    // A socket whose frame waits on a slow store must not keep the listener open for long.
    Promise.race([Promise.all([sockets, live]), delay(boundMs / 2)])
      .then(() => {
        const shutdown = parts.server.shutdown();
        if (!parts.requests) return shutdown;
        // A connection still open once every request was answered: a client sending a body
        // that was cut (its 503 sent), or reading its reply slowly. Left to close with the process.
        let shut = false;
        const answered = answeredAll(parts.requests).then(() => {
          if (!shut) {
            logger.info(
              "every HTTP request answered; connections still open (a body still arriving after its 503, or a reply being read) close with the process",
            );
          }
        });
        return Promise.race([shutdown.then(() => shut = true), answered]);
      }),
    // Without the count, the listener's shutdown is all it knows.
    () => !requests || requests.idleForMs() < REPLIES_SENT_MS,
  );
  const sends = step(
    "webhook sends",
    webhooks.close({ signal: AbortSignal.timeout(Math.max(0, boundMs * 3 / 4)) }),
    () => webhooks.sending,
  );

  // After the requests and frames that add to them were answered; what the flush cannot apply it
  // logs (one line), and an apply still running at the bound is left with its count.
  const rejected = step(
    "rejected counts",
    Promise.all([sockets, http]).then(() => parts.rejectedCounts?.flush()),
    () => parts.rejectedCounts?.waiting ?? false,
  );

  let timer: ReturnType<typeof setTimeout> | undefined;
  const bound = new Promise<void>((resolve) => timer = setTimeout(resolve, boundMs));
  await Promise.race([Promise.all([sweep, lease, sockets, live, http, sends, rejected]), bound]);
  clearTimeout(timer);
  const left = [...running].map(([name, holdsWork]) => ({ name, busy: holdsWork() }))
    // Waiting for the HTTP step with no count to apply, it is not a step of its own yet.
    .filter((item) => item.busy || item.name !== "rejected counts");
  const unfinished = left.filter((item) => item.busy).map((item) => item.name);
  // A frame applied after its connection closed (at half the bound) got no ack: not a clean stop.
  if (connections.answersCut > 0 && !unfinished.includes("websockets")) {
    unfinished.unshift("websockets");
  }
  return {
    clean: unfinished.length === 0,
    unfinished,
    leftIdle: left.filter((item) => !item.busy).map((item) => item.name),
    elapsedMs: Math.round(performance.now() - started),
  };
}

/**
 * Signals within this long (ms) of the first are one stop: `deno run --watch` (`deno task dev`)
 * hands its program one Ctrl-C as SIGINT, at times SIGINT again, then SIGTERM, all within a
 * millisecond.
 */
export const SAME_STOP_MS = 250;

/**
 * On the first SIGTERM or SIGINT (SIGINT only on Windows, which has no
 * SIGTERM) runs `stop` and exits: status 0 when no work was left (everything
 * finished, or what was left held none), 1 when `boundMs` ran out on work,
 * saying what still ran. A second signal exits at once with 1, once
 * {@linkcode SAME_STOP_MS} passed since the first (those before are the
 * same stop). Each step is one log line.
 */
export function exitOnStopSignal(stop: () => Promise<StopReport>, boundMs: number): void {
  let stoppingSince: number | undefined;
  let toldSame = false;
  const onSignal = async (signal: Deno.Signal) => {
    if (stoppingSince !== undefined && performance.now() - stoppingSince < SAME_STOP_MS) {
      if (!toldSame) {
        logger.info(
          "{signal} within {sameStopMs} ms of the first signal: the same stop (deno run --watch sends several for one Ctrl-C)",
          { signal, sameStopMs: SAME_STOP_MS },
        );
      }
      toldSame = true;
      return;
    }
    if (stoppingSince !== undefined) {
      logger.error("{signal} again: exiting now", { signal });
      Deno.exit(1);
    }
    stoppingSince = performance.now();
    logger.info("{signal}: stopping, within {boundMs} ms", { signal, boundMs });
    const report = await stop();
    if (report.clean && report.leftIdle.length === 0) {
      logger.info("stopped in {elapsedMs} ms", { elapsedMs: report.elapsedMs });
    } else if (report.clean) {
      logger.info("stopped in {elapsedMs} ms, nothing in flight; left to the exit: {leftIdle}", {
        elapsedMs: report.elapsedMs,
        leftIdle: report.leftIdle.join(", "),
      });
    } else {
      logger.error(
        "stopped after {elapsedMs} ms (EDGESTREAM_SHUTDOWN) with still running: {unfinished}",
        { elapsedMs: report.elapsedMs, unfinished: report.unfinished.join(", ") },
      );
    }
    Deno.exit(report.clean ? 0 : 1);
  };
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGTERM", "SIGINT"];
  for (const signal of signals) Deno.addSignalListener(signal, () => onSignal(signal));
}
