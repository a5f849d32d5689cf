/**
 * A client that records what the Redis store sends its apply script, for tests of what form a
 * batch goes in (the counters alone cannot tell: each form counts the same).
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import type { RedisClient } from "../../../src/store/redis/store.ts";
import { APPLY_FIELDS } from "../../../src/store/redis/_scripts.ts";

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
        // Only the apply script's header is an array (of its fields in APPLY_FIELDS' order):
        // named here as the script's documentation names them, absent ones (false) left out.
        const sent = JSON.parse(args[0]);
        if (Array.isArray(sent) && !headers.some((seen) => seen.tk === sent[0])) {
          const header: Record<string, unknown> = {};
          sent.forEach((value, i) => {
            if (value !== false) header[APPLY_FIELDS[i]] = value;
          });
          headers.push(header);
        }
        return value.call(target, script, keys, args);
      };
    },
  });
  return { client, headers };
}
