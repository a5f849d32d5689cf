/**
 * What a redis-server must keep for the Redis store's promises, checked once at startup with
 * `CONFIG GET`: the append-only file (`appendonly yes`), without which a redis-server killed or
 * crashed loses what it acknowledged since its last snapshot, and `maxmemory-policy noeviction`,
 * without which Redis at its `maxmemory` drops keys: stream data, or (`allkeys-*`) definitions, API
 * keys and webhook endpoints, which have no TTL. Upstash refuses `CONFIG` (and is durable): a REST
 * URL of Upstash's (`*.upstash.io`) is not asked ({@linkcode asksSetup}). A server that renamed it
 * refuses it too: then nothing is said. And whether it runs a Lua script the way the store does,
 * which every write here is: by SHA (`EVALSHA`, every call) and by text (`EVAL`, when Redis does
 * not have it yet): an ACL user without `@scripting`, or without just one of the two, or a server
 * that renamed one, is refused every write (or, without `EVAL` only, after its next restart).
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import { redisErrorText, sha1 } from "./call.ts";
import { PING_SCRIPT } from "./store.ts";

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
      `Redis refused a Lua script (${scripting}): edgestream applies every write as one, by EVALSHA (and EVAL when Redis does not have it yet), so nothing can be stored; allow both, not renamed (an ACL user needs +@scripting, or +evalsha +eval)`,
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
 * Redis's refusal of {@linkcode PING_SCRIPT} (`return "PONG"`: no key, no write, not the `/readyz`
 * script) by text (`EVAL`) or by SHA (`EVALSHA`), as the store runs every script (`NOPERM …`,
 * `ERR unknown command …`), or undefined when it runs both or cannot be reached (the store's own
 * errors say that). Not knowing the SHA (`NOSCRIPT`: a script cache flushed meanwhile) is no
 * refusal: the command itself is allowed.
 */
async function scriptingRefusal(redis: Pick<Redis, "exec">): Promise<string | undefined> {
  const commands: Array<[string, string, string]> = [
    ["EVAL", PING_SCRIPT, "0"],
    ["EVALSHA", await sha1(PING_SCRIPT), "0"],
  ];
  for (const command of commands) {
    try {
      await redis.exec(command);
    } catch (error) {
      const text = redisErrorText(error);
      if (/^(NOPERM|ERR unknown command)\b/i.test(text)) return text;
    }
  }
  return undefined;
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
