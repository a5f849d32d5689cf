/**
 * Run-time API keys in Redis, shared by every instance with the same prefix.
 * Two hashes under one hash tag (`es:{$apikeys}:`; `$` is never in a stream
 * name, so no stream's keys share it): `id` maps a key id to its record as
 * JSON, `hash` maps a key digest to its id; `call:<token>` keeps a deletion's answer for a minute
 * (see `callReply` in `_lua_common.ts`). Each operation is one EVALSHA.
 *
 * @module
 */
import { decodeCursor, encodeCursor, type Page, type PageOptions } from "../deliveries.ts";
import { type ApiKeyRecord, compareKeys, KeyConflictError, type KeyStore } from "../keys.ts";
import { checkedMax, DEFAULT_KEYS_MAX, StoredLimitError } from "../limits.ts";
import { LUA_COMMON } from "./_lua_common.ts";
import {
  asArray,
  fromJson,
  REDIS_CALL_TIMEOUT_MS,
  RedisCalls,
  type RedisScriptClient,
} from "./call.ts";

// The very record held already is this call sent again (fetch, or the client's retry, after a
// connection lost once Redis ran it): its id, the digest of a random key and its creation time
// are the same only then. It succeeds again rather than answering a conflict with itself. At the
// bound (`args.max` keys held) it creates nothing and answers -count, so two instances cannot both
// take the last place.
const CREATE_SCRIPT = LUA_COMMON + `
local held = redis.call("HGET", P .. "id", args.id)
if held == args.json then return 1 end
if held or redis.call("HEXISTS", P .. "hash", args.hash) == 1 then return 0 end
local count = redis.call("HLEN", P .. "id")
if count >= args.max then return -count end
redis.call("HSET", P .. "id", args.id, args.json)
redis.call("HSET", P .. "hash", args.hash, args.id)
return 1
`;

const BY_HASH_SCRIPT = LUA_COMMON + `
local id = redis.call("HGET", P .. "hash", args.hash)
if not id then return false end
return redis.call("HGET", P .. "id", id)
`;

// A record's digest, creation time and id. cjson refuses a record whose text holds a lone
// surrogate (a description stored before POST /v1/keys refused one, written by JSON.stringify as
// \ud800): such a key failed every page of the list and its own deletion. Its fields are then
// read from the text, where JSON.stringify put them: no string value can hold '"hash":"' and the
// like, as a quote in it is escaped.
const RECORD_FIELDS_LUA = `
local function recordFields(json)
  local ok, key = pcall(cjson.decode, json)
  if ok then return key.hash, key.createdAt, key.id end
  return string.match(json, '"hash":"([^"]*)"'),
    tonumber(string.match(json, '"createdAt":([-+.%deE]+)')), string.match(json, '"id":"([^"]*)"')
end
`;

// The same deletion sent again (fetch, or the client's retry, after a connection lost once Redis
// ran it) answers as the first, by its one-time token.
const DELETE_SCRIPT = LUA_COMMON + RECORD_FIELDS_LUA + `
local callKey, first = callReply(args.tk)
if first then return tonumber(first) end
local json = redis.call("HGET", P .. "id", args.id)
if not json then return 0 end
local hash = recordFields(json)
if hash then redis.call("HDEL", P .. "hash", hash) end
redis.call("HDEL", P .. "id", args.id)
keepReply(callKey, "1")
return 1
`;

const GET_SCRIPT = LUA_COMMON + `
if args.id then return redis.call("HGET", P .. "id", args.id) or false end
return redis.call("HVALS", P .. "id")
`;

// A page of the keys, oldest first: the ones after the cursor's position (createdAt, then id, in
// byte order as compareKeys for these ASCII ids), sorted here, so only the page leaves Redis. The
// keys are one hash without an order of their own: each page reads every record (an admin route).
const PAGE_SCRIPT = LUA_COMMON + RECORD_FIELDS_LUA + `
local limit, after = args.limit, args.after
local rest = {}
for _, json in ipairs(redis.call("HVALS", P .. "id")) do
  local _, ms, id = recordFields(json)
  if after == nil or ms > after.ms or (ms == after.ms and id > after.id) then
    rest[#rest + 1] = { ms, id, json }
  end
end
table.sort(rest, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
local rows, next = {}, false
for i = 1, math.min(#rest, limit) do rows[i] = rest[i][3] end
if #rest > limit then next = { num(rest[limit][1]), rest[limit][2] } end
return cjson.encode({ rows = rows, next = next })
`;

/** Options for {@linkcode RedisKeyStore}. */
export interface RedisKeyStoreOptions {
  /** Key prefix, shared with the stream store. @default {"es"} */
  prefix?: string;
  /** A call that takes longer fails with `StoreUnavailableError`. @default {5000} */
  timeoutMs?: number;
  /** Most keys held; a creation past it throws `StoredLimitError`. @default {10000} */
  maxKeys?: number;
}

function record(value: unknown): ApiKeyRecord | null {
  return value === null || value === undefined || value === false
    ? null
    : fromJson<ApiKeyRecord>(value);
}

/** {@linkcode KeyStore} in Redis. */
export class RedisKeyStore implements KeyStore {
  /** Always `redis`. */
  readonly kind = "redis";
  #calls: RedisCalls;
  #prefix: string;
  #maxKeys: number;

  constructor(redis: RedisScriptClient, options: RedisKeyStoreOptions = {}) {
    this.#maxKeys = checkedMax("maxKeys", options.maxKeys ?? DEFAULT_KEYS_MAX);
    this.#calls = new RedisCalls(redis, options.timeoutMs ?? REDIS_CALL_TIMEOUT_MS);
    this.#prefix = `${options.prefix ?? "es"}:{$apikeys}:`;
  }

  #run(what: string, script: string, args: object): Promise<unknown> {
    return this.#calls.call(what, () => this.#calls.script(script, [this.#prefix], [args]));
  }

  async createKey(key: ApiKeyRecord): Promise<void> {
    const created = await this.#run("createKey", CREATE_SCRIPT, {
      id: key.id,
      hash: key.hash,
      json: JSON.stringify(key),
      max: this.#maxKeys,
    });
    if (Number(created) < 0) throw new StoredLimitError("keys", this.#maxKeys, -Number(created));
    if (Number(created) !== 1) throw new KeyConflictError(`Key '${key.id}' exists already`);
  }

  async keyByHash(hash: string): Promise<ApiKeyRecord | null> {
    return record(await this.#run("keyByHash", BY_HASH_SCRIPT, { hash }));
  }

  async getKey(id: string): Promise<ApiKeyRecord | null> {
    return record(await this.#run("getKey", GET_SCRIPT, { id }));
  }

  async listKeys(): Promise<ApiKeyRecord[]> {
    const values = asArray<unknown>(await this.#run("listKeys", GET_SCRIPT, {}));
    return values.map((value) => record(value)!).sort(compareKeys);
  }

  async pageKeys(options: PageOptions): Promise<Page<ApiKeyRecord>> {
    const after = options.cursor == null ? null : decodeCursor("keys", options.cursor);
    const reply = fromJson<{ rows: unknown; next: [string, string] | false }>(
      await this.#run("pageKeys", PAGE_SCRIPT, {
        limit: options.limit,
        ...(after ? { after: { ms: after.createdMs, id: after.id } } : {}),
      }),
    );
    return {
      items: asArray<unknown>(reply.rows).map((value) => record(value)!),
      nextCursor: reply.next === false
        ? null
        : encodeCursor("keys", { createdMs: Number(reply.next[0]), id: reply.next[1] }),
    };
  }

  async deleteKey(id: string): Promise<boolean> {
    const tk = crypto.randomUUID();
    return Number(await this.#run("deleteKey", DELETE_SCRIPT, { id, tk })) === 1;
  }
}
