/**
 * A client that records what the Redis store sends its apply script, for tests of what form a
 * batch goes in (the counters alone cannot tell: each form counts the same).
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import type { RedisClient } from "../../../src/store/redis/store.ts";
import { APPLY_FIELDS } from "../../../src/store/redis/_scripts.ts";
import { type CompiledStream, StreamRegistry } from "../../../src/config/mod.ts";
import {
  type RedisDefinitionClient,
  RedisDefinitionStore,
} from "../../../src/store/redis/definition_store.ts";
import type { Store } from "../../../src/store/types.ts";

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

/**
 * A stream created through the API as the registry does it: a {@linkcode StreamRegistry} over a
 * {@linkcode RedisDefinitionStore} on `definitions` under `prefix` creates `name` with `put()`,
 * and `data` is wrapped by that registry, so each batch goes to `data` with what the registry's
 * store adds (the generation key, the definition version, recorded), not a copy of it.
 */
export async function createdThroughApi(
  definitions: RedisDefinitionClient,
  data: Store,
  options: { prefix: string; name: string; definition: unknown },
): Promise<{ store: Store; stream: CompiledStream; version: number; generation: number }> {
  const registry = new StreamRegistry(new Map(), {
    definitions: new RedisDefinitionStore(definitions, { prefix: options.prefix }),
  });
  const { created, registered } = await registry.put(options.name, options.definition);
  if (!created) throw new Error(`stream '${options.name}' was there already`);
  return {
    store: registry.wrap(data),
    stream: registered.stream,
    version: registered.version,
    generation: registered.generation,
  };
}
