/**
 * `Deno.serve` that survives its accept loop failing. When accepting a
 * connection fails (`Too many open files` once the process reaches its
 * open-file limit, for instance under a flood of idle connections),
 * `Deno.serve` ends its accept loop: the listener closes and the server's
 * `finished` promise rejects, which, unhandled, exits the process. Its
 * connections open so far go on (subscribers, WebSockets, requests in
 * flight); only new connections are refused.
 *
 * So a server from {@linkcode serveListening} watches `finished`: on such a
 * failure it logs it (the first one at once, later ones at most once a
 * minute, with how many there were) and listens again on the same address,
 * after 100 ms, doubling up to 5 s while it keeps failing. Until then new
 * connections are refused (a client retries). A failed server still serves
 * the connections it had, so it is kept for the shutdown; past
 * {@linkcode FAILED_KEPT} of them (under a flood lasting minutes) the oldest
 * is shut down, its connections ended as a stop ends them. When listening again fails
 * for a reason a retry cannot help (the port was taken meanwhile), or the
 * address is not a TCP one this can listen on again, `onFatal` gets one
 * line naming the cause: `src/main.ts` prints it and exits with status 1,
 * for a supervisor to restart the process.
 *
 * Errors `Deno.serve` hands to its `onError` (a response body that failed once its head was sent;
 * the app answers every error of its own handlers itself) are logged as one line by
 * {@linkcode serveError}, instead of Deno's default stack trace on stderr; a body ended on purpose
 * with a {@linkcode ResponseCutError} (a subscriber that reads nothing: Deno then drops its
 * connection, where a body that closes would keep it for as long as the client likes) logs
 * nothing.
 *
 * (`Deno.serve` has no request-head timeout either: a client that never
 * finishes its request line and headers holds its connection, and so a file
 * descriptor, until it goes away. Bounding that is the job of a proxy in
 * front; see deploy/README.md, "Slow clients".)
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { withinPeriod } from "../telemetry/mod.ts";

const logger = getLogger(["edgestream", "http"]);

/** Errors of `listen` that pass once descriptors or memory are free again: worth a retry. */
const PASSING = new Set(["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"]);

/** First wait (ms) before listening again; it doubles while listening keeps failing. */
export const RELISTEN_FIRST_MS = 100;
/** Longest wait (ms) before listening again. */
export const RELISTEN_MOST_MS = 5_000;
/** A listener that served this long (ms) before failing starts the waits over. */
const STEADY_MS = 30_000;
/** Most failed servers kept serving their connections; an older one is shut down. */
export const FAILED_KEPT = 8;
/** Listener failures are logged at most once in this time (ms) after the first. */
export const FAILURE_LOG_EVERY_MS = 60_000;

/** Options for {@linkcode serveListening}. */
export interface ServeListeningOptions {
  /** Port to listen on; 0 for any free one (listening again uses the one it got). */
  port?: number;
  /** Address to listen on. */
  hostname?: string;
  /** Called each time it listens (again). */
  onListen?: (addr: Deno.NetAddr) => void;
  /**
   * The listener failed and cannot listen again: one line naming the cause. The server is no
   * longer listening; the caller exits (its open connections go with it).
   */
  onFatal: (message: string) => void;
  /** The clock, for rate-limiting the failure log. @default {performance.now} */
  now?: () => number;
  /** Starts one listener; a seam for tests. @default {Deno.serve} */
  serve?: (
    options: Deno.ServeTcpOptions,
    handler: Deno.ServeHandler<Deno.NetAddr>,
  ) => Deno.HttpServer<Deno.NetAddr>;
}

/** A server that listens again after its listener failed. */
export interface ListeningServer {
  /** Where it listens. */
  readonly addr: Deno.NetAddr;
  /** How many `Deno.HttpServer`s it holds: the listening one and the failed ones kept. */
  readonly listeners: number;
  /**
   * Stops listening and shuts down every connection it took, through each listener it had
   * (`Deno.HttpServer.shutdown`); resolves once they all finished.
   */
  shutdown(): Promise<void>;
}

/**
 * Errors a response body on purpose: `Deno.serve` drops the connection at once (what it still held
 * for the client is let go), where a body that closes is kept writing for as long as the client
 * keeps the connection. {@linkcode serveError} logs nothing for it.
 */
export class ResponseCutError extends Error {
  /** Says why the response was cut. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ResponseCutError";
  }
}

/**
 * `Deno.serve`'s `onError`: one log line for what failed while serving (a response body that
 * errored once its head was sent), nothing for a {@linkcode ResponseCutError}; the 500 it returns
 * is sent only when no head was sent yet.
 */
export function serveError(error: unknown): Response {
  if (!(error instanceof ResponseCutError)) {
    logger.error("Serving a request failed: {failure}", { failure: describe(error) });
  }
  return new Response(null, { status: 500 });
}

/** The error as `Name: message` (`Http: Error: Too many open files (os error 24)`). */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  return error.message === "" ? error.name : `${error.name}: ${error.message}`;
}

/**
 * Serves `handler` as `Deno.serve` does and listens again whenever the listener fails (see the
 * module doc). The first listen's error is thrown, as `Deno.serve`'s.
 *
 * @example
 * ```ts
 * import { serveListening } from "./listener.ts";
 *
 * const server = serveListening(() => new Response("ok"), {
 *   port: 0,
 *   hostname: "127.0.0.1",
 *   onFatal(message) {
 *     console.error(`edgestream: ${message}`);
 *     Deno.exit(1);
 *   },
 * });
 * await server.shutdown();
 * ```
 */
export function serveListening(
  handler: Deno.ServeHandler<Deno.NetAddr>,
  options: ServeListeningOptions,
): ListeningServer {
  const now = options.now ?? (() => performance.now());
  const serve = options.serve ??
    ((serveOptions, serveHandler) => Deno.serve(serveOptions, serveHandler));
  // The listening server and the failed ones kept, oldest first: a failed one's connections live
  // on until they end, the shutdown, or FAILED_KEPT newer failures.
  const servers: Deno.HttpServer<Deno.NetAddr>[] = [];
  // Failed servers shut down early, until their connections ended: the shutdown waits for them.
  const ending = new Set<Promise<void>>();
  let stopping = false;
  let retry: ReturnType<typeof setTimeout> | undefined;
  let waitMs = RELISTEN_FIRST_MS;
  let listenedAt = now();
  let loggedAt = -Infinity;
  let unlogged = 0;

  function listen(port: number | undefined, hostname: string | undefined) {
    const server = serve({
      port,
      hostname,
      onListen: (addr) => options.onListen?.(addr),
      onError: serveError,
    }, handler);
    servers.push(server);
    // The listening one and FAILED_KEPT failed ones.
    while (servers.length > FAILED_KEPT + 1) {
      const ended = servers.shift()!.shutdown().catch(() => {});
      ending.add(ended);
      ended.then(() => ending.delete(ended));
    }
    listenedAt = now();
    server.finished.catch((error) => failed(server, error));
    return server;
  }

  function failed(server: Deno.HttpServer<Deno.NetAddr>, error: unknown) {
    if (stopping) return;
    const { addr } = server;
    if (addr.transport !== "tcp") {
      options.onFatal(`The HTTP listener failed (${describe(error)}) and cannot listen again`);
      return;
    }
    if (now() - listenedAt >= STEADY_MS) waitMs = RELISTEN_FIRST_MS;
    logFailure(`The HTTP listener stopped accepting connections: ${describe(error)}`);
    again(addr);
  }

  function logFailure(failure: string) {
    // A clock before the last line's time (an injected wall clock stepped back) counts as due.
    const at = now();
    if (withinPeriod(at, loggedAt, FAILURE_LOG_EVERY_MS)) {
      unlogged += 1;
      return;
    }
    const also = unlogged > 0 ? ` (and ${unlogged} more time(s) since the last such line)` : "";
    logger.error(
      "{failure}{also}; listening again (connections already open are kept, new ones are refused until then)",
      { failure, also },
    );
    loggedAt = at;
    unlogged = 0;
  }

  function again(addr: Deno.NetAddr) {
    retry = setTimeout(() => {
      retry = undefined;
      if (stopping) return;
      try {
        current = listen(addr.port, addr.hostname);
        return;
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (typeof code !== "string" || !PASSING.has(code)) {
          options.onFatal(
            `The HTTP listener failed and cannot listen again on ${addr.hostname}:${addr.port}: ${
              describe(error)
            }`,
          );
          return;
        }
        logFailure(`Cannot listen again on ${addr.hostname}:${addr.port} yet: ${describe(error)}`);
      }
      again(addr);
    }, waitMs);
    waitMs = Math.min(2 * waitMs, RELISTEN_MOST_MS);
  }

  let current = listen(options.port, options.hostname);
  return {
    get addr() {
      return current.addr;
    },
    get listeners() {
      return servers.length;
    },
    async shutdown() {
      stopping = true;
      clearTimeout(retry);
      await Promise.all([...servers.map((server) => server.shutdown()), ...ending]);
    },
  };
}
