/**
 * Stream definitions in Redis. A stream's record lives in its own hash slot,
 * at `<prefix>:{<stream>}:def` (hash: `v` version, `g` generation, `s`
 * source, `d` definition JSON, `c` counter identities JSON, `x` "1" when
 * deleted), so the store's apply script reads the version in the same
 * atomic step as the stream's data. An index `<prefix>:{@definitions}:index`
 * (hash: stream → version; `@` cannot start a stream name) is what instances
 * poll; it is written after the record and never lowered, so a poll may
 * briefly miss a write but never goes back. Every raise of the index also sets
 * its change mark, `<prefix>:{@definitions}:index:mark` (a random id of the
 * write), so a poll that names the mark it last saw gets the whole index only
 * when it changed: one short reply otherwise, whatever the number of names.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import type {
  DefinitionStore,
  DefinitionWrite,
  StoredDefinition,
  VersionsSince,
  WriteResult,
} from "../definitions.ts";
import { fromJson, REDIS_CALL_TIMEOUT_MS, RedisCalls } from "./call.ts";
import { LUA_COMMON } from "./_lua_common.ts";

/** The part of the `@upstash/redis` client the definition store uses. */
export type RedisDefinitionClient = Pick<Redis, "evalsha" | "eval">;

/** Options for {@linkcode RedisDefinitionStore}. */
export interface RedisDefinitionStoreOptions {
  /** Key prefix, the same as the {@linkcode RedisStore}'s. @default {"es"} */
  prefix?: string;
  /** A call that takes longer fails with `StoreUnavailableError`. @default {5000} */
  timeoutMs?: number;
}

/** The record of KEYS[1] as JSON, or JSON null when there is none. */
const GET_SCRIPT = LUA_COMMON + `
local flat = redis.call("HGETALL", P)
if #flat == 0 then return "null" end
local record = {}
for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
return cjson.encode(record)
`;

/**
 * Writes the record at KEYS[1] if its version is `args.expected`. ARGV[1]:
 * `{expected, g, s, d, c, x}`. Returns `[1, version]` written or
 * `[0, current]` refused. The very record at the version after the expected one is this write
 * sent again (fetch, or the client's retry, after a connection lost once Redis ran it), or an
 * identical one: `[1, current]`, as written.
 */
const WRITE_SCRIPT = LUA_COMMON + `
local current = tonumber(redis.call("HGET", P, "v")) or 0
if current ~= args.expected then
  if current == args.expected + 1 then
    local held = redis.call("HMGET", P, "g", "s", "d", "c", "x")
    if tonumber(held[1]) == args.g and held[2] == args.s and held[3] == args.d and held[4] == args.c
      and held[5] == args.x then
      return { 1, current }
    end
  end
  return { 0, current }
end
local version = current + 1
redis.call("HSET", P, "v", version, "g", args.g, "s", args.s, "d", args.d, "c", args.c, "x", args.x)
return { 1, version }
`;

/**
 * Raises the index entry ARGV[1].name (KEYS[1] is the index) to ARGV[1].v, never lowering it;
 * a raise sets the index's change mark to ARGV[1].mark.
 */
const INDEX_SCRIPT = LUA_COMMON + `
local current = tonumber(redis.call("HGET", P, args.name)) or 0
if args.v > current then
  redis.call("HSET", P, args.name, args.v)
  redis.call("SET", P .. ":mark", args.mark)
end
return 1
`;

/**
 * The index (KEYS[1]) as JSON `[mark, [[name, version], …]]`, or \`[mark]\` when its change mark
 * is ARGV[1].since (a mark never set reads as "").
 */
const VERSIONS_SCRIPT = LUA_COMMON + `
local mark = redis.call("GET", P .. ":mark") or ""
if args.since == mark then return cjson.encode({ mark }) end
local flat = redis.call("HGETALL", P)
local out = {}
for i = 1, #flat, 2 do out[#out + 1] = { flat[i], tonumber(flat[i + 1]) } end
return cjson.encode({ mark, out })
`;

/** The key of a stream's definition record: in the stream's hash slot, outside every generation. */
export function definitionKey(prefix: string, stream: string): string {
  return `${prefix}:{${stream}}:def`;
}

/** A {@linkcode DefinitionStore} in Redis, shared by every instance with the same prefix. */
export class RedisDefinitionStore implements DefinitionStore {
  #prefix: string;
  #calls: RedisCalls;

  constructor(redis: RedisDefinitionClient, options: RedisDefinitionStoreOptions = {}) {
    this.#prefix = options.prefix ?? "es";
    this.#calls = new RedisCalls(redis, options.timeoutMs ?? REDIS_CALL_TIMEOUT_MS);
  }

  get #index(): string {
    return `${this.#prefix}:{@definitions}:index`;
  }

  get(name: string): Promise<StoredDefinition | null> {
    return this.#calls.call("getDefinition", async () => {
      const raw = fromJson<Record<string, string> | null>(
        await this.#calls.script(GET_SCRIPT, [definitionKey(this.#prefix, name)], [{}]),
      );
      if (raw === null || raw.v === undefined) return null;
      return {
        name,
        source: raw.s === "config" ? "config" : "api",
        version: Number(raw.v),
        generation: Number(raw.g),
        definition: raw.x === "1" ? null : JSON.parse(raw.d),
        counters: JSON.parse(raw.c),
        deleted: raw.x === "1",
      };
    });
  }

  async versions(): Promise<Map<string, number>> {
    return (await this.versionsSince()).versions!;
  }

  versionsSince(mark?: string): Promise<VersionsSince> {
    return this.#calls.call("definitionVersions", async () => {
      const [now, rows] = fromJson<[string, Array<[string, number]>?]>(
        await this.#calls.script(VERSIONS_SCRIPT, [this.#index], [{ since: mark }]),
      );
      if (rows === undefined) return { mark: now, versions: null };
      // cjson encodes an empty table as an object: no names.
      return {
        mark: now,
        versions: new Map(Array.isArray(rows) ? rows.map(([name, v]) => [name, Number(v)]) : []),
      };
    });
  }

  write(name: string, record: DefinitionWrite, expectedVersion: number): Promise<WriteResult> {
    return this.#calls.call("writeDefinition", async () => {
      const [written, version] = (await this.#calls.script(
        WRITE_SCRIPT,
        [definitionKey(this.#prefix, name)],
        [{
          expected: expectedVersion,
          g: record.generation,
          s: record.source,
          d: JSON.stringify(record.definition ?? null),
          c: JSON.stringify(record.counters),
          x: record.deleted ? "1" : "0",
        }],
      )) as [number, number];
      if (Number(written) !== 1) return { status: "conflict", version: Number(version) };
      await this.#calls.script(INDEX_SCRIPT, [this.#index], [{
        name,
        v: Number(version),
        mark: crypto.randomUUID(),
      }]);
      return { status: "written", version: Number(version) };
    });
  }
}
