/**
 * A client that records what the Redis store sends its apply script, for tests of what form a
 * batch goes in (the counters alone cannot tell: each form counts the same).
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import type { RedisClient } from "../../../src/store/redis/store.ts";

/**
 * The apply script's first argument (its header) of each apply `redis` is sent, parsed: once per
 * call, not again for the EVAL that follows a NOSCRIPT (the same token, `tk`).
 */
export function recordingApplies(
  redis: Redis,
): { client: RedisClient; headers: Record<string, unknown>[] } {
  const headers: Record<string, unknown>[] = [];
  const client = new Proxy(redis, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (property !== "evalsha" && property !== "eval") return value;
      return (script: string, keys: string[], args: string[]) => {
        const header = JSON.parse(args[0]);
        // Only the apply script's header carries the batch's latest event time.
        if (
          typeof header === "object" && header !== null && "tmax" in header &&
          !headers.some((seen) => seen.tk === header.tk)
        ) headers.push(header);
        return value.call(target, script, keys, args);
      };
    },
  });
  return { client, headers };
}
