/**
 * Starts and stops a throwaway `redis-server` process for development and tests.
 *
 * @module
 */

/** Thrown when the `redis-server` executable cannot be found on `PATH`. */
export class RedisServerNotFoundError extends Error {
  /** Creates the error for the executable that was looked up. */
  constructor(command: string, options?: ErrorOptions) {
    super(
      `Cannot start Redis as '${command}' is not on PATH: install it with apt-get install -y redis-server`,
      options,
    );
    this.name = "RedisServerNotFoundError";
  }
}

/** Options for {@linkcode startRedisServer}. */
export interface StartRedisServerOptions {
  /** TCP port to listen on; `0` picks a free one. @default {0} */
  port?: number;
  /** Interface to bind. @default {"127.0.0.1"} */
  hostname?: string;
  /** The executable to run, looked up on `PATH`. @default {"redis-server"} */
  command?: string;
  /** How long to wait for the server to answer, in ms. @default {10000} */
  startTimeoutMs?: number;
  /** Extra command-line arguments appended after the defaults, e.g. `["--maxmemory", "64mb"]`. */
  extraArgs?: string[];
}

/** A running `redis-server` process. */
export interface RedisServer {
  /** Connection URL, e.g. `redis://127.0.0.1:6390`. */
  readonly url: string;
  /** TCP port the server listens on. */
  readonly port: number;
  /**
   * Resolves with the process's exit status once it exits: after {@linkcode RedisServer.stop}, or
   * on its own (killed, crashed, shut down by a client), which a caller that keeps it running for
   * others to use needs to tell them.
   */
  readonly exited: Promise<Deno.CommandStatus>;
  /** Stops the server and deletes its temporary directory; safe to call twice. */
  stop(): Promise<void>;
}

const DEFAULT_COMMAND = "redis-server";
const POLL_INTERVAL_MS = 20;
const STOP_TIMEOUT_MS = 5_000;
const PORT_ATTEMPTS = 5;

/** Returns whether the `redis-server` executable (or `command`) can be run. */
export function isRedisServerInstalled(command: string = DEFAULT_COMMAND): boolean {
  try {
    new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * Starts `redis-server` without persistence in a temporary directory and waits until it answers.
 *
 * @example
 * ```ts
 * const redis = await startRedisServer();
 * try {
 *   console.log(redis.url); // redis://127.0.0.1:40123
 * } finally {
 *   await redis.stop();
 * }
 * ```
 */
export async function startRedisServer(
  options: StartRedisServerOptions = {},
): Promise<RedisServer> {
  const attempts = options.port ? 1 : PORT_ATTEMPTS;
  let lastError: unknown;
  for (let attempt = 0; attempt < attempts; attempt++) {
    try {
      return await startOnce(options);
    } catch (error) {
      // A free port found by probing can be taken by someone else before redis binds it.
      if (!(error instanceof PortInUseError)) throw error;
      lastError = error;
    }
  }
  throw lastError;
}

class PortInUseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PortInUseError";
  }
}

async function startOnce(options: StartRedisServerOptions): Promise<RedisServer> {
  const hostname = options.hostname ?? "127.0.0.1";
  const command = options.command ?? DEFAULT_COMMAND;
  const port = options.port || findFreePort(hostname);
  const dir = await Deno.makeTempDir({ prefix: "edgestream-redis-" });
  const logFile = `${dir}/redis.log`;
  const args = [
    "--port",
    String(port),
    "--bind",
    hostname,
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
    "--logfile",
    logFile,
    ...(options.extraArgs ?? []),
  ];

  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(command, { args, stdin: "null", stdout: "null", stderr: "piped" })
      .spawn();
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    if (error instanceof Deno.errors.NotFound) {
      throw new RedisServerNotFoundError(command, { cause: error });
    }
    throw error;
  }
  const stderr = new Response(child.stderr).text();
  let exitStatus: Deno.CommandStatus | undefined;
  const exited = child.status.then((status) => {
    exitStatus = status;
    return status;
  });

  let stopping: Promise<void> | undefined;
  function stop(): Promise<void> {
    stopping ??= (async () => {
      if (exitStatus === undefined) {
        try {
          child.kill("SIGTERM");
        } catch {
          // The process exited between the check and the signal.
        }
        await raceWithDelay(exited, STOP_TIMEOUT_MS);
        if (exitStatus === undefined) {
          try {
            child.kill("SIGKILL");
          } catch {
            // Already gone.
          }
          await exited;
        }
      }
      await stderr;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    })();
    return stopping;
  }

  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
  while (true) {
    if (exitStatus !== undefined) {
      const details = [await stderr, await readTail(logFile)].join("\n").trim();
      await stop();
      const message =
        `Cannot start redis-server on port ${port} as it exited with code ${exitStatus.code}: ${details}`;
      if (/address already in use/i.test(details)) throw new PortInUseError(message);
      throw new Error(message);
    }
    if (await answersAsProcess(hostname, port, child.pid)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `Cannot start redis-server on port ${port} as it did not answer within ${
          options.startTimeoutMs ?? 10_000
        } ms`,
      );
    }
    await raceWithDelay(exited, POLL_INTERVAL_MS);
  }

  return { url: `redis://${hostname}:${port}`, port, exited, stop };
}

function findFreePort(hostname: string): number {
  const listener = Deno.listen({ hostname, port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Returns whether the server on `port` answers and is the process `pid`: another server that
 * already holds the port answers too, while ours exits with "address already in use".
 */
async function answersAsProcess(hostname: string, port: number, pid: number): Promise<boolean> {
  let connection: Deno.TcpConn | undefined;
  try {
    connection = await Deno.connect({ hostname, port });
    await connection.write(new TextEncoder().encode("INFO server\r\n"));
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(4096);
    let reply = "";
    while (reply.length < 65_536) {
      const read = await connection.read(buffer);
      if (read === null) return false;
      reply += decoder.decode(buffer.subarray(0, read), { stream: true });
      if (reply.startsWith("-")) return false; // e.g. LOADING: not ready yet
      const match = /\r\nprocess_id:(\d+)\r\n/.exec(reply);
      if (match) return Number(match[1]) === pid;
    }
    return false;
  } catch {
    return false;
  } finally {
    connection?.close();
  }
}

async function readTail(path: string): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).split("\n").slice(-10).join("\n");
  } catch {
    return "";
  }
}

/** Waits for `promise` or `ms`, whichever comes first, leaving no timer behind. */
async function raceWithDelay(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const elapsed = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  try {
    await Promise.race([promise, elapsed]);
  } finally {
    clearTimeout(timer);
  }
}
