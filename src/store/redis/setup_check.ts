/**
 * What a redis-server must keep for the Redis store's promises, checked once at startup with
 * `CONFIG GET`: the append-only file (`appendonly yes`), without which a redis-server killed or
 * crashed loses what it acknowledged since its last snapshot, and `maxmemory-policy noeviction`,
 * without which Redis at its `maxmemory` drops keys: stream data, or (`allkeys-*`) definitions, API
 * keys and webhook endpoints, which have no TTL. Upstash refuses `CONFIG` (and is durable): a REST
 * URL of Upstash's (`*.upstash.io`) is not asked ({@linkcode asksSetup}). A server that renamed it
 * refuses it too: then nothing is said. And whether it runs a Lua script at all (`EVAL`), which
 * every write here is: an ACL user without `@scripting` is refused every one.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import { redisErrorText } from "./call.ts";

/**
 * Whether the Redis behind the REST URL `restUrl` is asked its settings: not Upstash's own
 * (a host under `upstash.io`), which refuses `CONFIG` and keeps data durably; a bridge in front
 * of a redis-server is.
 */
export function asksSetup(restUrl: string): boolean {
  if (!URL.canParse(restUrl)) return true;
  const host = new URL(restUrl).hostname.toLowerCase().replace(/\.$/, "");
  return host !== "upstash.io" && !host.endsWith(".upstash.io");
}

/**
 * Returns one warning per unsafe setting the Redis behind `redis` reports, and none when it
 * refuses `CONFIG GET` or cannot be reached (the store's own errors say that).
 *
 * @example
 * ```ts
 * import { Redis } from "@upstash/redis";
 *
 * const redis = new Redis({ url: "http://127.0.0.1:8079", token: "dev" });
 * for (const warning of await redisSetupWarnings(redis)) console.warn(warning);
 * ```
 */
export async function redisSetupWarnings(redis: Pick<Redis, "exec">): Promise<string[]> {
  const [appendonly, policy, scripting] = await Promise.all([
    configValue(redis, "appendonly"),
    configValue(redis, "maxmemory-policy"),
    scriptingRefusal(redis),
  ]);
  const warnings: string[] = [];
  if (scripting !== undefined) {
    warnings.push(
      `Redis refused a Lua script (${scripting}): edgestream applies every write as one (EVALSHA, EVAL), so nothing can be stored; allow scripting (an ACL user needs +@scripting)`,
    );
  }
  if (appendonly !== undefined && appendonly !== "yes") {
    warnings.push(
      `Redis has appendonly ${appendonly}: a redis-server killed or crashed loses every event acknowledged since its last snapshot; set appendonly yes (see the README's Redis persistence and eviction)`,
    );
  }
  if (policy !== undefined && policy !== "noeviction") {
    warnings.push(
      `Redis has maxmemory-policy ${policy}: at its maxmemory it deletes keys edgestream relies on (counted data, or stream definitions, API keys and webhook endpoints, kept without a TTL) instead of refusing writes; set maxmemory-policy noeviction (see the README's Redis persistence and eviction)`,
    );
  }
  return warnings;
}

/**
 * Redis's refusal of a script (`NOPERM …`, `ERR unknown command …`), or undefined when it runs
 * one or cannot be reached (the store's own errors say that).
 */
async function scriptingRefusal(redis: Pick<Redis, "exec">): Promise<string | undefined> {
  try {
    await redis.exec(["EVAL", "return 1", "0"]);
    return undefined;
  } catch (error) {
    const text = redisErrorText(error);
    return /^(NOPERM|ERR unknown command)\b/i.test(text) ? text : undefined;
  }
}

/** A setting's value, or undefined when `CONFIG GET` is refused, fails or does not know it. */
async function configValue(
  redis: Pick<Redis, "exec">,
  name: string,
): Promise<string | undefined> {
  let reply: unknown;
  try {
    reply = await redis.exec(["CONFIG", "GET", name]);
  } catch {
    return undefined;
  }
  if (!Array.isArray(reply)) return undefined;
  for (let index = 0; index + 1 < reply.length; index += 2) {
    if (String(reply[index]).toLowerCase() === name) return String(reply[index + 1]);
  }
  return undefined;
}
