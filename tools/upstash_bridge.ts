/**
 * A local server that speaks the Upstash Redis REST protocol on top of a real Redis server, so
 * that the real `@upstash/redis` client can run against real Redis in development and tests.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createClient, ErrorReply, RESP_TYPES } from "redis";

/** Options for {@linkcode startUpstashBridge}. */
export interface UpstashBridgeOptions {
  /** Redis server to forward commands to, e.g. `redis://127.0.0.1:6379`. */
  redisUrl: string;
  /** Token every request must present as `Authorization: Bearer <token>`. */
  token: string;
  /** TCP port to listen on; `0` picks a free one. @default {0} */
  port?: number;
  /** Interface to listen on. @default {"127.0.0.1"} */
  hostname?: string;
  /** How long to wait for Redis to accept a connection and answer its handshake, in ms. @default {2000} */
  connectTimeoutMs?: number;
  /**
   * How long one request may wait for Redis replies before the bridge answers 503 and drops the
   * connection, in ms. @default {10000}
   */
  commandTimeoutMs?: number;
}

/** A running bridge started by {@linkcode startUpstashBridge}. */
export interface UpstashBridge {
  /** Base URL to give the client as `url`, e.g. `http://127.0.0.1:8079`. */
  readonly url: string;
  /** Token to give the client as `token`. */
  readonly token: string;
  /** Stops accepting requests, waits for open ones and disconnects from Redis. */
  close(): Promise<void>;
}

/**
 * Starts an HTTP server that serves the Upstash Redis REST protocol (`POST /`, `/pipeline`,
 * `/multi-exec`) by forwarding commands to `redisUrl`; rejects when Redis is unreachable.
 *
 * @example
 * ```ts
 * import { Redis } from "@upstash/redis";
 *
 * const bridge = await startUpstashBridge({ redisUrl: "redis://127.0.0.1:6379", token: "dev" });
 * const redis = new Redis({ url: bridge.url, token: bridge.token, enableTelemetry: false });
 * await redis.set("greeting", "hello");
 * await bridge.close();
 * ```
 */
export async function startUpstashBridge(options: UpstashBridgeOptions): Promise<UpstashBridge> {
  const link = new RedisLink(options.redisUrl, {
    connectTimeoutMs: options.connectTimeoutMs ?? 2_000,
    commandTimeoutMs: options.commandTimeoutMs ?? 10_000,
  });
  try {
    await link.acquire();
  } catch (error) {
    await link.close();
    throw new Error(
      `Cannot start the Upstash bridge as Redis is unreachable at ${
        describeRedisUrl(options.redisUrl)
      }: ${errorMessage(error)}`,
      { cause: error },
    );
  }

  const expectedAuthorization = new TextEncoder().encode(`Bearer ${options.token}`);
  const server = Deno.serve(
    {
      port: options.port ?? 0,
      hostname: options.hostname ?? "127.0.0.1",
      onListen() {},
      // Keep the client's `{error}` envelope even for bridge bugs.
      onError(error) {
        return jsonResponse(500, { error: `ERR Upstash bridge failed: ${errorMessage(error)}` });
      },
    },
    (request) => handleRequest(request, { link, expectedAuthorization }),
  );
  const address = server.addr;
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;

  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${address.port}`,
    token: options.token,
    close() {
      closing ??= (async () => {
        await server.shutdown();
        await link.close();
      })();
      return closing;
    },
  };
}

const ENDPOINTS = new Set(["/", "/pipeline", "/multi-exec"]);

/**
 * Commands that would block the shared connection or change its state for every other request.
 * Upstash's REST API has no use for them either: transactions go through `/multi-exec`.
 */
const UNSUPPORTED_COMMANDS = new Set([
  "auth",
  "blmove",
  "blmpop",
  "blpop",
  "brpop",
  "brpoplpush",
  "bzmpop",
  "bzpopmax",
  "bzpopmin",
  "discard",
  "exec",
  "hello",
  "monitor",
  "multi",
  "psubscribe",
  "psync",
  "punsubscribe",
  "quit",
  "replconf",
  "reset",
  "select",
  "ssubscribe",
  "subscribe",
  "sunsubscribe",
  "sync",
  "unsubscribe",
  "unwatch",
  "wait",
  "waitaof",
  "watch",
]);

/**
 * Replies keep bulk and simple strings as raw bytes (binary-safe, and distinguishable from
 * integers) and integers as their digits (no precision loss above 2^53).
 */
const TYPE_MAPPING = {
  [RESP_TYPES.BLOB_STRING]: Buffer,
  [RESP_TYPES.SIMPLE_STRING]: Buffer,
  [RESP_TYPES.NUMBER]: String,
} as const;

type Command = string[];

interface RequestContext {
  link: RedisLink;
  expectedAuthorization: Uint8Array;
}

async function handleRequest(request: Request, context: RequestContext): Promise<Response> {
  const path = new URL(request.url).pathname;
  if (!ENDPOINTS.has(path)) {
    return jsonResponse(404, { error: `ERR Unknown endpoint: ${path}` });
  }
  if (!isAuthorized(request.headers.get("authorization"), context.expectedAuthorization)) {
    return jsonResponse(401, { error: "Unauthorized: missing or wrong bearer token" });
  }
  if (request.method !== "POST") {
    return jsonResponse(405, {
      error: `Method ${request.method} is not allowed on ${path}: use POST`,
    }, {
      allow: "POST",
    });
  }

  let body: unknown;
  try {
    body = JSON.parse(await request.text());
  } catch (error) {
    return jsonResponse(400, {
      error: `ERR Request body is not valid JSON: ${errorMessage(error)}`,
    });
  }
  const encoding = request.headers.get("upstash-encoding")?.toLowerCase() === "base64"
    ? "base64"
    : "utf8";

  try {
    if (path === "/") {
      const command = parseCommand(body);
      if (typeof command === "string") return jsonResponse(400, { error: command });
      return await runSingle(context.link, command, encoding);
    }
    const commands = parseCommandList(body);
    if (typeof commands === "string") return jsonResponse(400, { error: commands });
    return path === "/pipeline"
      ? await runPipeline(context.link, commands, encoding)
      : await runTransaction(context.link, commands, encoding);
  } catch (error) {
    if (error instanceof RedisUnavailableError) {
      return jsonResponse(503, { error: error.message });
    }
    throw error;
  }
}

async function runSingle(link: RedisLink, command: Command, encoding: Encoding): Promise<Response> {
  const unsupported = unsupportedReason(command);
  if (unsupported) return jsonResponse(400, { error: unsupported });
  const [outcome] = await link.send([command]);
  return outcome.ok
    ? jsonResponse(200, { result: encodeReply(outcome.value, encoding) })
    : jsonResponse(400, { error: outcome.error });
}

async function runPipeline(
  link: RedisLink,
  commands: Command[],
  encoding: Encoding,
): Promise<Response> {
  const items: Array<{ result: unknown } | { error: string }> = new Array(commands.length);
  const allowed: Command[] = [];
  const allowedIndexes: number[] = [];
  commands.forEach((command, index) => {
    const unsupported = unsupportedReason(command);
    if (unsupported) {
      items[index] = { error: unsupported };
    } else {
      allowed.push(command);
      allowedIndexes.push(index);
    }
  });
  const outcomes = allowed.length ? await link.send(allowed) : [];
  outcomes.forEach((outcome, position) => {
    items[allowedIndexes[position]] = outcome.ok
      ? { result: encodeReply(outcome.value, encoding) }
      : { error: outcome.error };
  });
  return jsonResponse(200, items);
}

async function runTransaction(
  link: RedisLink,
  commands: Command[],
  encoding: Encoding,
): Promise<Response> {
  for (const command of commands) {
    const unsupported = unsupportedReason(command);
    if (unsupported) {
      return jsonResponse(400, {
        error: `EXECABORT Transaction discarded because of previous errors: ${unsupported}`,
      });
    }
  }
  // One chain on the shared connection: nothing else can be written between MULTI and EXEC.
  const outcomes = await link.send([["MULTI"], ...commands, ["EXEC"]]);
  const exec = outcomes[outcomes.length - 1];
  if (!exec.ok) {
    const queueError = outcomes.slice(1, -1).find((outcome) => !outcome.ok);
    const cause = queueError && !queueError.ok ? ` (${queueError.error})` : "";
    return jsonResponse(400, { error: `${exec.error}${cause}` });
  }
  if (!Array.isArray(exec.value)) {
    return jsonResponse(400, { error: "EXECABORT Transaction was aborted by Redis" });
  }
  return jsonResponse(
    200,
    exec.value.map((reply) =>
      reply instanceof ErrorReply
        ? { error: reply.message }
        : { result: encodeReply(reply, encoding) }
    ),
  );
}

/** Returns the command as RESP arguments, or the error text when `value` is no command. */
function parseCommand(value: unknown): Command | string {
  if (!Array.isArray(value) || value.length === 0) {
    return `ERR Command must be a non-empty JSON array, got: ${truncate(JSON.stringify(value))}`;
  }
  const args: Command = [];
  for (const [index, arg] of value.entries()) {
    if (typeof arg === "string") {
      args.push(arg);
    } else if ((typeof arg === "number" || typeof arg === "boolean") && index > 0) {
      args.push(String(arg));
    } else {
      return `ERR Command argument ${index} must be a ${
        index === 0 ? "string" : "string, number or boolean"
      }, got: ${truncate(JSON.stringify(arg))}`;
    }
  }
  return args;
}

function parseCommandList(value: unknown): Command[] | string {
  if (!Array.isArray(value) || value.length === 0) {
    return `ERR Request body must be a non-empty JSON array of commands, got: ${
      truncate(JSON.stringify(value))
    }`;
  }
  const commands: Command[] = [];
  for (const item of value) {
    const command = parseCommand(item);
    if (typeof command === "string") return command;
    commands.push(command);
  }
  return commands;
}

function unsupportedReason(command: Command): string | undefined {
  const name = command[0].toLowerCase();
  const blocks = UNSUPPORTED_COMMANDS.has(name) ||
    ((name === "xread" || name === "xreadgroup") &&
      command.some((arg) => arg.toLowerCase() === "block")) ||
    (name === "client" && ["reply", "pause"].includes(command[1]?.toLowerCase()));
  return blocks
    ? `ERR Command '${name}' is not supported by the Upstash bridge as it would block or change the shared connection`
    : undefined;
}

type Encoding = "base64" | "utf8";

/**
 * Turns a RESP2 reply into its JSON form: strings base64 encoded when asked (Upstash encodes
 * simple strings such as "OK" too), integers as JSON numbers of any size, arrays recursively.
 */
function encodeReply(reply: unknown, encoding: Encoding): unknown {
  if (reply === null || reply === undefined) return null;
  if (Buffer.isBuffer(reply)) return reply.toString(encoding);
  if (typeof reply === "string") {
    // Strings arrive as Buffers (see TYPE_MAPPING): a JS string is an integer reply.
    return /^-?\d+$/.test(reply) ? rawJson(reply) : Buffer.from(reply).toString(encoding);
  }
  if (Array.isArray(reply)) return reply.map((item) => encodeReply(item, encoding));
  if (reply instanceof ErrorReply) return encodeReply(reply.message, encoding);
  if (typeof reply === "number") return reply;
  return encodeReply(String(reply), encoding);
}

/** `JSON.rawJSON` (V8 11.4+) emits the digits as they are; TypeScript's lib does not know it yet. */
function rawJson(text: string): unknown {
  return (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON(text);
}

function jsonResponse(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function isAuthorized(header: string | null, expected: Uint8Array): boolean {
  if (header === null) return false;
  const actual = new TextEncoder().encode(header);
  // Compare every byte so the time taken does not reveal how much of the token matched.
  let difference = actual.length ^ expected.length;
  for (let index = 0; index < expected.length; index++) {
    difference |= expected[index] ^ (actual[index] ?? 0);
  }
  return difference === 0;
}

/** Thrown when Redis cannot be reached or stops answering; the bridge turns it into a 503. */
class RedisUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RedisUnavailableError";
  }
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: string };

/** The part of a node-redis client the bridge uses. */
interface RawClient {
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  destroy(): void;
  sendCommand(args: Command, options?: { chainId?: symbol }): Promise<unknown>;
  on(event: "error", listener: (error: Error) => void): unknown;
}

interface RedisLinkOptions {
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

/**
 * One connection to Redis, opened on demand. node-redis's own reconnection is off: a broken
 * connection fails its commands at once, and the next request opens a fresh one. That keeps
 * requests from queueing while Redis is down and leaves no retry timers running after close.
 */
class RedisLink {
  #url: string;
  #options: RedisLinkOptions;
  #client: RawClient | undefined;
  #connecting: Promise<RawClient> | undefined;
  #closed = false;

  constructor(url: string, options: RedisLinkOptions) {
    this.#url = url;
    this.#options = options;
  }

  /** Returns a ready client, connecting first when there is none. */
  acquire(): Promise<RawClient> {
    if (this.#closed) {
      return Promise.reject(new RedisUnavailableError("Upstash bridge is closed"));
    }
    if (this.#client?.isReady) return Promise.resolve(this.#client);
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  /**
   * Writes all commands back to back on one connection and returns each reply or Redis error in
   * order; throws {@linkcode RedisUnavailableError} when the connection fails or times out.
   */
  async send(commands: Command[]): Promise<Outcome[]> {
    const client = await this.acquire();
    const chainId = Symbol("bridge request");
    const settled = Promise.allSettled(
      commands.map((command) => client.sendCommand(command, { chainId })),
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#options.commandTimeoutMs);
    });
    const results = await Promise.race([settled, timedOut]);
    clearTimeout(timer);
    if (results === "timeout") {
      // Replies still owed on this connection would be matched to later commands: drop it.
      this.#discard(client);
      await settled;
      throw new RedisUnavailableError(
        `Redis at ${
          describeRedisUrl(this.#url)
        } did not reply within ${this.#options.commandTimeoutMs} ms`,
      );
    }
    return results.map((result) => {
      if (result.status === "fulfilled") return { ok: true, value: result.value };
      if (result.reason instanceof ErrorReply) return { ok: false, error: result.reason.message };
      this.#discard(client);
      throw new RedisUnavailableError(
        `Redis is unavailable at ${describeRedisUrl(this.#url)}: ${errorMessage(result.reason)}`,
        { cause: result.reason },
      );
    });
  }

  /** Disconnects and refuses further commands. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#connecting?.catch(() => {});
    if (this.#client) this.#discard(this.#client);
  }

  async #connect(): Promise<RawClient> {
    if (this.#client) this.#discard(this.#client);
    const client = createClient({
      url: this.#url,
      RESP: 2,
      disableOfflineQueue: true,
      disableClientInfo: true,
      commandOptions: { typeMapping: TYPE_MAPPING },
      socket: { connectTimeout: this.#options.connectTimeoutMs, reconnectStrategy: false },
    }) as unknown as RawClient;
    // Without a listener an 'error' event would crash the process; failures surface per command.
    client.on("error", () => {});

    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#options.connectTimeoutMs);
    });
    const connecting = client.connect();
    try {
      // The handshake can hang on a server that accepts TCP connections but never answers.
      const result = await Promise.race([connecting, timedOut]);
      if (result === "timeout") {
        client.destroy();
        await connecting.catch(() => {});
        throw new Error(`no handshake within ${this.#options.connectTimeoutMs} ms`);
      }
    } catch (error) {
      client.destroy();
      throw new RedisUnavailableError(
        `Redis is unavailable at ${describeRedisUrl(this.#url)}: ${errorMessage(error)}`,
        { cause: error },
      );
    } finally {
      clearTimeout(timer);
    }
    if (this.#closed) {
      client.destroy();
      throw new RedisUnavailableError("Upstash bridge is closed");
    }
    this.#client = client;
    return client;
  }

  #discard(client: RawClient): void {
    if (this.#client === client) this.#client = undefined;
    client.destroy();
  }
}

/** Host and port of a Redis URL, leaving out any credentials. */
function describeRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || "6379"}`;
  } catch {
    return "an invalid URL";
  }
}

function errorMessage(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length) {
    return error.errors.map(errorMessage).join("; ");
  }
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

function truncate(text: string | undefined, max = 100): string {
  if (text === undefined) return "undefined";
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
