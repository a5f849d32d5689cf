/**
 * `deno task redis`: runs a throwaway `redis-server` with the Upstash REST bridge in front of it
 * and prints the environment variables that point `@upstash/redis` at it. Stops on Ctrl+C.
 *
 * ```sh
 * deno task redis            # bridge on a free port
 * PORT=8079 deno task redis  # bridge on port 8079
 * ```
 *
 * @module
 */

import { RedisServerNotFoundError, startRedisServer } from "./redis_server.ts";
import { startUpstashBridge } from "./upstash_bridge.ts";

/** Options for {@linkcode runDevRedis}. */
export interface DevRedisOptions {
  /** Port for the REST bridge; `0` picks a free one. @default {0} */
  port?: number;
  /** Bearer token for the bridge. @default a random 32-character hex string */
  token?: string;
  /** Resolves when the servers should stop. @default the first SIGINT, SIGTERM or SIGHUP */
  until?: Promise<void>;
  /** Where the `export` lines go. @default {console.log} */
  print?: (line: string) => void;
}

/** The bridge may not listen on its port (one below 1024 for a user, or one Deno's flags deny). */
export class PortNotAllowedError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PortNotAllowedError";
  }
}

/**
 * The redis-server exited while the bridge in front of it still ran (killed, crashed, or shut down
 * by a client): every call through the bridge would fail, so the tool stops instead of serving on.
 */
export class RedisServerExitedError extends Error {
  constructor(status: Deno.CommandStatus) {
    super(
      `redis-server exited (${
        status.signal ? `signal ${status.signal}` : `code ${status.code}`
      }) while deno task redis ran, so the bridge stopped too: run deno task redis again for a fresh, empty store, and paste its export lines again (the token is new)`,
    );
    this.name = "RedisServerExitedError";
  }
}

/**
 * Starts Redis and the bridge, prints their `export` lines, and stops both when `until` resolves;
 * rejects with {@linkcode RedisServerExitedError} when the redis-server exits before that.
 */
export async function runDevRedis(options: DevRedisOptions = {}): Promise<void> {
  const print = options.print ?? console.log;
  const token = options.token ?? randomToken();
  // Listened for before anything starts: a signal sent once the lines are printed (a script that
  // waits for them, then stops it) could come before a listener added then, and end this process
  // the default way, redis-server left running.
  const stop = options.until === undefined
    ? terminationSignals()
    : { signalled: options.until, cancel() {} };
  try {
    await serveUntil(stop.signalled, { print, token, port: options.port ?? 0 });
  } finally {
    stop.cancel();
  }
}

async function serveUntil(
  signalled: Promise<void>,
  options: { print: (line: string) => void; token: string; port: number },
): Promise<void> {
  const { print, token } = options;
  const server = await startRedisServer();
  try {
    let bridge;
    try {
      bridge = await startUpstashBridge({
        redisUrl: server.url,
        token,
        port: options.port,
      });
    } catch (error) {
      // Only the bridge's listen is PORT's: a permission denied before (to run redis-server, to
      // make its directory) is not.
      if (
        error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable
      ) {
        throw new PortNotAllowedError(error.message, { cause: error });
      }
      throw error;
    }
    try {
      print(`export UPSTASH_REDIS_REST_URL=${bridge.url}`);
      print(`export UPSTASH_REDIS_REST_TOKEN=${token}`);
      console.error(`Redis at ${server.url} behind the Upstash REST bridge; Ctrl+C stops both`);
      const exited = await Promise.race([signalled.then(() => undefined), server.exited]);
      // Ctrl+C in a terminal signals the whole process group, redis-server too: its exit may be
      // seen just before the signal here. A stop, not a failure.
      if (exited !== undefined && !await settlesWithin(signalled, SIGNAL_GRACE_MS)) {
        throw new RedisServerExitedError(exited);
      }
    } finally {
      await bridge.close();
    }
  } finally {
    await server.stop();
  }
}

/** How long (ms) after redis-server exits a signal still counts as the stop that ended it. */
const SIGNAL_GRACE_MS = 500;

/** Whether `promise` resolves within `ms`, leaving no timer behind. */
async function settlesWithin(promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const elapsed = new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([promise.then(() => true), elapsed]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `signalled` resolves on the first SIGINT, SIGTERM or SIGHUP; `cancel` stops listening for them
 * (so does the first). SIGHUP is the terminal closing: left to its default, it would end this
 * process and leave redis-server running.
 */
function terminationSignals(): { signalled: Promise<void>; cancel(): void } {
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  let resolve = () => {};
  const signalled = new Promise<void>((done) => resolve = done);
  let listening = true;
  function cancel() {
    if (!listening) return;
    listening = false;
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  }
  function onSignal() {
    cancel();
    resolve();
  }
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  return { signalled, cancel };
}

/**
 * Returns the port in `value`, `0` when unset (or empty), or `undefined` when it is not a port
 * number: decimal digits, as the server reads its `PORT` (`Number` would read `" "` as 0, a free
 * port, and `0x1f90` as 8080).
 */
function parsePort(value: string | undefined): number | undefined {
  if (value === undefined || value === "") return 0;
  const port = /^\d{1,5}$/.test(value.trim()) ? Number(value) : NaN;
  return port >= 0 && port <= 65_535 ? port : undefined;
}

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

if (import.meta.main) {
  const port = parsePort(Deno.env.get("PORT"));
  if (port === undefined) {
    console.error(
      `Cannot start the Upstash bridge as PORT is not a port number from 0 to 65535: '${
        Deno.env.get("PORT")
      }'`,
    );
    Deno.exit(1);
  }
  try {
    await runDevRedis({ port });
  } catch (error) {
    console.error(
      error instanceof RedisServerNotFoundError || error instanceof RedisServerExitedError
        ? error.message
        : error instanceof Deno.errors.AddrInUse
        ? `Cannot start the Upstash bridge: PORT ${port} is already in use; set PORT to a free port`
        // A port below 1024 for a user without the privilege (or one Deno's flags deny): one line
        // naming PORT, as for a port in use, not a stack.
        : error instanceof PortNotAllowedError
        ? `Cannot start the Upstash bridge: PORT ${port} is not allowed (${error.message}); set PORT to a port above 1023, or unset it for a free one`
        : error,
    );
    Deno.exit(1);
  }
}
