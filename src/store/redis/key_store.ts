/**
 * Run-time API keys in Redis, shared by every instance with the same prefix.
 * Under one hash tag (`es:{$apikeys}:`; `$` is never in a stream name, so no
 * stream's keys share it): the hash `id` maps a key id to its record as JSON,
 * the hash `hash` maps a key digest to its id, the sorted set `order` holds
 * every key's place in the list (see `orderMember`), so that a page reads only
 * its own records; `call:<token>` keeps a deletion's answer for a minute (see
 * `callReply` in `_lua_common.ts`). Each operation is one EVALSHA, except the
 * page that finds `order` out of step with `id` (keys stored before it
 * existed, or by an older release): it rebuilds `order` first, a batch of
 * records per call.
 *
 * @module
 */
import { decodeCursor, encodeCursor, type Page, type PageOptions } from "../deliveries.ts";
import {
  type ApiKeyRecord,
  compareKeys,
  KEY_PAGE_MAX_BYTES,
  KeyConflictError,
  type KeyStore,
} from "../keys.ts";
import { checkedMax, DEFAULT_KEYS_MAX, StoredLimitError } from "../limits.ts";
import { LUA_COMMON } from "./_lua_common.ts";
import {
  asArray,
  fromJson,
  REDIS_CALL_TIMEOUT_MS,
  RedisCalls,
  type RedisScriptClient,
} from "./call.ts";

// A key's place in the list: a member of the sorted set `order`, where every member has the score
// 0, so that members sort by their bytes (ZRANGEBYLEX). The member is the key's creation time (ms)
// as 16 digits, then '.', then its id: byte order is then creation time, then id in byte order, as
// compareKeys orders these ASCII ids, for every time a cursor can name (0 to 16 digits). A time
// that could not be read from a record (see recordFields) takes the place of 0, the same in every
// script, so that the record is indexed, and deleted from the index, once.
const ORDER_LUA = `
local ORDER = P .. "order"
local function orderMember(ms, id)
  return string.format("%016d", ms or 0) .. "." .. id
end
`;

// The very record held already is this call sent again (fetch, or the client's retry, after a
// connection lost once Redis ran it): its id, the digest of a random key and its creation time
// are the same only then. It succeeds again rather than answering a conflict with itself. At the
// bound (`args.max` keys held) it creates nothing and answers -count, so two instances cannot both
// take the last place.
const CREATE_SCRIPT = LUA_COMMON + ORDER_LUA + `
local held = redis.call("HGET", P .. "id", args.id)
if held == args.json then return 1 end
if held or redis.call("HEXISTS", P .. "hash", args.hash) == 1 then return 0 end
local count = redis.call("HLEN", P .. "id")
if count >= args.max then return -count end
expectType(ORDER, "zset")
redis.call("ZADD", ORDER, 0, orderMember(args.createdAt, args.id))
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
const DELETE_SCRIPT = LUA_COMMON + ORDER_LUA + RECORD_FIELDS_LUA + `
local callKey, first = callReply(args.tk)
if first then return tonumber(first) end
local json = redis.call("HGET", P .. "id", args.id)
if not json then return 0 end
local hash, ms = recordFields(json)
expectType(ORDER, "zset")
redis.call("ZREM", ORDER, orderMember(ms, args.id))
if hash then redis.call("HDEL", P .. "hash", hash) end
redis.call("HDEL", P .. "id", args.id)
keepReply(callKey, "1")
return 1
`;

const GET_SCRIPT = LUA_COMMON + `
if args.id then return redis.call("HGET", P .. "id", args.id) or false end
return redis.call("HVALS", P .. "id")
`;

// A page of the keys, oldest first: the places in `order` after the cursor's (exclusive, so a
// place whose key was deleted meanwhile still starts the page), one more than the page to tell
// whether more follow, and the records of the page's keys alone, so that a page's work is bounded by
// its size, not by the number of keys. The page stops before the key whose record would take it
// past `args.maxBytes` (HSTRLEN, before any record is read; at least one key), so that one call
// never builds tens of MB. A place whose record is gone (deleted by an older release, which knew
// no `order`) is left out. `indexed` says whether `order` holds as many places as there are
// records and, with `args.verify` (the first page of a listing), whether every record's id has a
// place: an older release that created one key and deleted another leaves the counts equal, so
// only the ids tell (HKEYS, the ids alone: some 20 bytes a key, never the records). Equal counts
// and every id placed mean one place per id, none stale. When not indexed, the caller rebuilds
// `order` (REINDEX_SCRIPT) and reads the page again.
const PAGE_SCRIPT = LUA_COMMON + ORDER_LUA + `
local limit, after = args.limit, args.after
local start = "-"
if after ~= nil then start = "(" .. orderMember(after.ms, after.id) end
local places = redis.call("ZRANGEBYLEX", ORDER, start, "+", "LIMIT", 0, limit + 1)
local ids, bytes = {}, 0
for i = 1, math.min(#places, limit) do
  local id = string.sub(places[i], 18)
  local size = redis.call("HSTRLEN", P .. "id", id)
  if i > 1 and bytes + size > args.maxBytes then break end
  ids[i], bytes = id, bytes + size
end
local rows, next = {}, false
if #ids > 0 then
  for _, json in ipairs(redis.call("HMGET", P .. "id", unpack(ids))) do
    if json then rows[#rows + 1] = json end
  end
end
if #places > #ids then next = { string.sub(places[#ids], 1, 16), ids[#ids] } end
local indexed = redis.call("ZCARD", ORDER) == redis.call("HLEN", P .. "id")
if indexed and args.verify then
  local placed = {}
  for _, place in ipairs(redis.call("ZRANGE", ORDER, 0, -1)) do placed[string.sub(place, 18)] = true end
  for _, id in ipairs(redis.call("HKEYS", P .. "id")) do
    if not placed[id] then
      indexed = false
      break
    end
  end
end
return cjson.encode({ rows = rows, next = next, indexed = indexed })
`;

// Rebuilds `order` a batch at a time, each call bounded by `args.count` (a hint to HSCAN and
// ZSCAN): phase "records" gives every record of `id` its place (ZADD of a place held already
// changes nothing), phase "places" removes the places whose record is gone. Returns the scan's
// next cursor, "0" when the phase is done. Keys created or deleted meanwhile keep `order` right
// themselves (CREATE_SCRIPT, DELETE_SCRIPT), so the scans' guarantee (what is there from the first
// call to the last is seen) is all a rebuild needs.
const REINDEX_SCRIPT = LUA_COMMON + ORDER_LUA + RECORD_FIELDS_LUA + `
expectType(ORDER, "zset")
if args.phase == "records" then
  local scan = redis.call("HSCAN", P .. "id", args.cursor, "COUNT", args.count)
  local entries = scan[2]
  for i = 1, #entries, 2 do
    local _, ms = recordFields(entries[i + 1])
    redis.call("ZADD", ORDER, 0, orderMember(ms, entries[i]))
  end
  return scan[1]
end
local scan = redis.call("ZSCAN", ORDER, args.cursor, "COUNT", args.count)
local entries = scan[2]
for i = 1, #entries, 2 do
  if redis.call("HEXISTS", P .. "id", string.sub(entries[i], 18)) == 0 then
    redis.call("ZREM", ORDER, entries[i])
  end
end
return scan[1]
`;

/** Records a call of REINDEX_SCRIPT looks at: some 3.5 MB of records at the bounds of a key. */
const REINDEX_BATCH = 100;

/** Options for {@linkcode RedisKeyStore}. */
export interface RedisKeyStoreOptions {
  /** Key prefix, shared with the stream store. @default {"es"} */
  prefix?: string;
  /** A call that takes longer fails with `StoreUnavailableError`. @default {5000} */
  timeoutMs?: number;
  /** Most keys held; a creation past it throws `StoredLimitError`. @default {10000} */
  maxKeys?: number;
}

/** What PAGE_SCRIPT answers: the page's records, the last one's place, whether all are indexed. */
interface PageReply {
  rows: unknown;
  next: [string, string] | false;
  indexed: boolean;
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
      createdAt: key.createdAt,
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
    const args = {
      limit: options.limit,
      maxBytes: KEY_PAGE_MAX_BYTES,
      ...(after ? { after: { ms: after.createdMs, id: after.id } } : {}),
    };
    // The first page of a listing checks every id against the index, so a listing begun after an
    // older release created and deleted keys has them all; later pages compare counts only.
    let reply = await this.#page({ ...args, verify: after === null });
    // Keys stored before the index, or by an older release: index them, then read the page again.
    // Once a call: a page of what is indexed is right, and an older release still writing would
    // otherwise keep this call rebuilding.
    if (!reply.indexed) {
      await this.#reindex();
      reply = await this.#page(args);
    }
    return {
      items: asArray<unknown>(reply.rows).map((value) => record(value)!),
      nextCursor: reply.next === false
        ? null
        : encodeCursor("keys", { createdMs: Number(reply.next[0]), id: reply.next[1] }),
    };
  }

  async #page(args: object): Promise<PageReply> {
    return fromJson<PageReply>(await this.#run("pageKeys", PAGE_SCRIPT, args));
  }

  /** Rebuilds the index of places, a batch of records per call (see REINDEX_SCRIPT). */
  async #reindex(): Promise<void> {
    for (const phase of ["records", "places"]) {
      let cursor = "0";
      do {
        cursor = String(
          await this.#run("pageKeys", REINDEX_SCRIPT, { phase, cursor, count: REINDEX_BATCH }),
        );
      } while (cursor !== "0");
    }
  }

  async deleteKey(id: string): Promise<boolean> {
    const tk = crypto.randomUUID();
    return Number(await this.#run("deleteKey", DELETE_SCRIPT, { id, tk })) === 1;
  }
}
