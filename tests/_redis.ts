/**
 * Test harness for code that talks to Redis: a real `redis-server` plus the Upstash REST bridge
 * on free ports, fresh for every test.
 *
 * @example
 * ```ts
 * import { redisTest, restClient } from "../_redis.ts";
 *
 * redisTest("RedisStore keeps a counter", async (fixture) => {
 *   const redis = restClient(fixture);
 *   await redis.incr("n");
 * });
 * ```
 *
 * @module
 */

import { Redis } from "@upstash/redis";
import { createClient } from "redis";
import {
  isRedisServerInstalled,
  RedisServerNotFoundError,
  startRedisServer,
} from "../tools/redis_server.ts";
import { startUpstashBridge } from "../tools/upstash_bridge.ts";

/** A running Redis server and an Upstash REST bridge in front of it, with an empty database. */
export interface RedisFixture {
  /** Base URL of the Upstash REST bridge, for `new Redis({ url })`. */
  restUrl: string;
  /** Bearer token the bridge expects, for `new Redis({ token })`. */
  restToken: string;
  /** URL of the Redis server itself, for `createClient({ url })` from `npm:redis`. */
  redisUrl: string;
  /** TCP port of the Redis server. */
  redisPort: number;
  /** Stops the bridge and the server; safe to call twice. */
  stop(): Promise<void>;
}

/** Whether tests run under CI, where a missing `redis-server` must fail instead of skip. */
const IN_CI = Deno.env.get("CI") === "true";

let installed: boolean | undefined;
let warned = false;

/** Returns whether `redis-server` is on PATH, checking only once per test run. */
export function redisServerInstalled(): boolean {
  installed ??= isRedisServerInstalled();
  return installed;
}

/**
 * Starts `redis-server` and the Upstash bridge on free ports. Resolves to `null` when
 * `redis-server` is not installed, except under `CI=true`, where it rejects with
 * {@linkcode RedisServerNotFoundError}.
 */
export async function withRedis(): Promise<RedisFixture | null> {
  if (!redisServerInstalled() && !IN_CI) return null;
  const server = await startRedisServer();
  let bridge;
  try {
    bridge = await startUpstashBridge({ redisUrl: server.url, token: randomToken() });
  } catch (error) {
    await server.stop();
    throw error;
  }
  let stopping: Promise<void> | undefined;
  return {
    restUrl: bridge.url,
    restToken: bridge.token,
    redisUrl: server.url,
    redisPort: server.port,
    stop() {
      stopping ??= bridge.close().finally(() => server.stop());
      return stopping;
    },
  };
}

/**
 * Registers a `Deno.test` that gets its own fresh Redis server and bridge, stopped afterwards.
 * Without `redis-server` the test is ignored (with a hint on how to install it), but under
 * `CI=true` it fails.
 */
export function redisTest(name: string, fn: (fixture: RedisFixture) => Promise<void>): void {
  const skip = !redisServerInstalled() && !IN_CI;
  if (skip && !warned) {
    warned = true;
    console.warn(
      "redis-server is not on PATH, so Redis tests are ignored: install it with apt-get install -y redis-server",
    );
  }
  Deno.test({
    name,
    ignore: skip,
    async fn() {
      const fixture = await withRedis();
      if (fixture === null) throw new RedisServerNotFoundError("redis-server");
      try {
        await fn(fixture);
      } finally {
        await fixture.stop();
      }
    },
  });
}

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** An Upstash REST client of the fixture's bridge, with the client's telemetry off. */
export function restClient(fixture: Pick<RedisFixture, "restUrl" | "restToken">): Redis {
  return new Redis({ url: fixture.restUrl, token: fixture.restToken, enableTelemetry: false });
}

/** Runs `fn` with a plain RESP2 connection to the fixture's Redis. */
export async function withDirect<T>(
  url: string,
  fn: (send: (...args: string[]) => Promise<unknown>) => Promise<T>,
): Promise<T> {
  const client = createClient({ url, RESP: 2 });
  client.on("error", () => {});
  await client.connect();
  try {
    return await fn((...args) => client.sendCommand(args));
  } finally {
    client.destroy();
  }
}
