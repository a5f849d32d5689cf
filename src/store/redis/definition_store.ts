/**
 * Stream definitions in Redis. A stream's record lives in its own hash slot,
 * at `<prefix>:{<stream>}:def` (hash: `v` version, `g` generation, `s`
 * source, `d` definition JSON, `c` counter identities JSON, `x` "1" when
 * deleted, `w` the random id of the write that made it, and `p`, only when a counter has one, the counters' partial-window bounds as JSON
 * `{"g": <generation>, "b": {<counter>: <ms>}}`), so the store's apply script reads the version in the same
 * atomic step as the stream's data. An index `<prefix>:{@definitions}:index`
 * (hash: stream → version; `@` cannot start a stream name) is what instances
 * poll; it is written after the record and never lowered, so a poll may
 * briefly miss a write but never goes back. Every raise of the index also sets
 * its change mark, `<prefix>:{@definitions}:index:mark` (a random id of the
 * write), so a poll that names the mark it last saw gets the whole index only
 * when it changed: one short reply otherwise, whatever the number of names.
 *
 * The streams created through the API are bounded per deployment (`maxApiStreams`). A record lives
 * in its stream's slot, so the count cannot be taken where the record is written: it is kept in
 * the index's slot, in the hash `<index>:api` (stream → the version that made it count), its
 * places. A write of a live API stream first takes a place there (RESERVE_SCRIPT, atomic: two
 * instances cannot both take the last one; `<index>:api:pending` notes when, until its index step),
 * then writes the record; the index script, run after every write, sets or frees the name's place
 * from the record it indexes, by version, so a place follows the record even when the write that
 * took it lost to another one. The places can drift from the records: a creation cut short
 * between its two steps, a deletion whose index step failed after its record was written, an
 * instance of a release that takes or frees no places. So a creation that finds every place held
 * recounts them from the records (RECOUNT_SCRIPT; also how a store written before places existed
 * gets them, `<index>:api:built` marking that done): refused when the recount still holds every
 * place, else it tries once more.
 * A place taken by a creation still on its way (pending for less than `placeLeaseMs`) survives a
 * recount.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import {
  type DefinitionStore,
  type DefinitionWrite,
  type DefinitionWriteOptions,
  generationKey,
  splitGenerationKey,
  type StoredDefinition,
  type VersionsSince,
  type WriteResult,
} from "../definitions.ts";
import { checkedMax, DEFAULT_STREAMS_MAX, StoredLimitError } from "../limits.ts";
import { fromJson, REDIS_CALL_TIMEOUT_MS, RedisCalls } from "./call.ts";
import { LUA_COMMON, luaRaiseClosedThrough, luaStatsTime } from "./_lua_common.ts";
import { DEFAULT_STATS_TTL_MS, STREAM_KEYS } from "./_scripts.ts";

/** The part of the `@upstash/redis` client the definition store uses. */
export type RedisDefinitionClient = Pick<Redis, "evalsha" | "eval">;

/** Options for {@linkcode RedisDefinitionStore}. */
export interface RedisDefinitionStoreOptions {
  /** Key prefix, the same as the {@linkcode RedisStore}'s. @default {"es"} */
  prefix?: string;
  /** A call that takes longer fails with `StoreUnavailableError`. @default {5000} */
  timeoutMs?: number;
  /**
   * Most streams created through the API (live records of source `api`) held; a write that
   * would add one past it throws `StoredLimitError`. @default {1000}
   */
  maxApiStreams?: number;
  /**
   * A place taken for a creation whose record is not written yet is kept by a recount for this
   * long after it was taken (a creation on its way); past it, it counts as the place of a
   * creation cut short and is freed. Far longer than a write takes (`timeoutMs`). @default {60000}
   */
  placeLeaseMs?: number;
  /**
   * A refusal at the bound recounts the places (a call per name indexed) at most this often on
   * one store object (refusals meanwhile share the recount running, or refuse), so a client
   * creating in a loop at the bound costs one recount per interval, not one per request.
   * @default {10000}
   */
  recountEveryMs?: number;
  /**
   * How long (ms) a stream's stats live after their last write. Must match the
   * {@linkcode RedisStore}'s `statsTtlMs` under the same prefix (both default to
   * `DEFAULT_STATS_TTL_MS`): a definition write that makes a stream's stats hash (one that keeps
   * final before any batch was applied) gives it the life an apply would under this TTL.
   * @default {30 days}
   */
  statsTtlMs?: number;
}

/** Default {@linkcode RedisDefinitionStoreOptions.placeLeaseMs}. */
export const DEFAULT_PLACE_LEASE_MS = 60_000;
/** Default {@linkcode RedisDefinitionStoreOptions.recountEveryMs}. */
export const DEFAULT_RECOUNT_EVERY_MS = 10_000;

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
 * `{expected, g, s, d, c, x, p, w}` (`p` "" for no partial-window bounds: the field is removed;
 * `w` the write's random id, kept in the record's `w`). Returns `[1, version]` written or
 * `[0, current, api]` refused, `api` 1 when the current record is a live API stream. The very
 * record at the version after the expected one, written by this write (its `w`), is this write
 * sent again (fetch, or the client's retry, after a connection lost once Redis ran it):
 * `[1, current]`, as written. An identical record another write made is a conflict like any
 * other: that write, not this one, made it (two `PUT`s with `If-None-Match: *` do not both create).
 * With `kf` (see `DefinitionWriteOptions.keepFinal`), a write raises the `cl` of KEYS[2] first;
 * with `add` (`DefinitionWriteOptions.addedCounters`), it raises those counters' bounds to the
 * `wm` of KEYS[2] plus 1, and with `api` too records its version in `a` (see the apply). A write
 * replies `[1, version, 0, p]`, `p` the bounds field written. A stats hash KEYS[2] the write makes
 * expires in `lifeOf(ttl)` ms (LUA_COMMON), `ttl` the stats TTL, as the apply gives one.
 */
const WRITE_SCRIPT = LUA_COMMON + luaStatsTime("KEYS[2]") + luaRaiseClosedThrough("KEYS[2]") + `
local current = tonumber(redis.call("HGET", P, "v")) or 0
if current ~= args.expected then
  if current == args.expected + 1 then
    local held = redis.call("HMGET", P, "g", "s", "d", "c", "x", "p", "w")
    -- With \`add\`, the bounds written are the script's, not \`p\`.
    if tonumber(held[1]) == args.g and held[2] == args.s and held[3] == args.d and held[4] == args.c
      and held[5] == args.x and (args.add or (held[6] or "") == args.p) and held[7] == args.w then
      return { 1, current, 0, held[6] or "" }
    end
  end
  local held = redis.call("HMGET", P, "s", "x")
  return { 0, current, (held[1] == "api" and held[2] ~= "1") and 1 or 0 }
end
-- What the replaced definitions called final stays so, read in this step (a batch applied before
-- it counts): KEYS[2] is the stats hash of the written generation, args.kf {now, by: [{l, i}, …]}.
-- The version written goes there too ("dv"): a reader serving an earlier one, whose lateness may
-- be lower, counts only "cl" as final. Before the first write: a key of the wrong type, or "wm" or
-- "cl" holding text no script writes (as the apply reads them), refuses the call, writing nothing.
local version = current + 1
-- A stats hash this write makes (a stream no batch was applied to yet: only \`kf\` writes one)
-- lives as long as the apply gives one (lifeOf of the stats TTL args.ttl), not forever; one
-- that exists keeps its life (the apply's, perhaps longer: never shortened here). Its "wm" is
-- read once, for both \`kf\` and \`add\` (a write with neither reads no stats); its "cl" is
-- checked only where it is used (\`kf\`).
local statsMade, wm, closed = false, nil, nil
if KEYS[2] ~= nil and (args.kf or args.add) then
  statsMade = redis.call("EXISTS", KEYS[2]) == 0
  local stored = redis.call("HMGET", KEYS[2], "wm", "cl")
  wm = expectStatsTime("wm", stored[1])
  if args.kf then closed = expectStatsTime("cl", stored[2]) end
end
if args.kf then
  local through = nil
  for _, by in ipairs(wm and args.kf.by or {}) do
    local mark = wm
    if by.i ~= nil and args.kf.now - by.i > mark then mark = args.kf.now - by.i end
    if through == nil or mark - by.l > through then through = mark - by.l end
  end
  if through ~= nil then raiseClosedThrough(closed, through) end
  redis.call("HSET", KEYS[2], "dv", version)
end
-- Counters the write adds (args.add, see \`DefinitionWriteOptions.addedCounters\`): their bounds
-- rise to the watermark of KEYS[2] now plus 1 (a batch applied before this step is within them).
-- A "wm" holding text no script writes refused the call above, as in the apply, before any write.
local partial = args.p
if args.add then
  if wm ~= nil then
    local bounds = {}
    if partial ~= "" then bounds = cjson.decode(partial).b end
    for _, name in ipairs(args.add) do
      if bounds[name] == nil or wm + 1 > bounds[name] then bounds[name] = wm + 1 end
    end
    -- Written here, not by cjson.encode (14 significant digits).
    local entries = {}
    for name, bound in pairs(bounds) do entries[#entries + 1] = cjson.encode(name) .. ":" .. num(bound) end
    partial = '{"g":' .. num(args.g) .. ',"b":{' .. table.concat(entries, ",") .. "}}"
  end
  -- An API stream's batch under an older version lacks these counters: the apply refuses it.
  if args.api then redis.call("HSET", P, "a", version) end
end
if statsMade and args.kf then redis.call("PEXPIRE", KEYS[2], lifeOf(args.ttl)) end
redis.call("HSET", P, "v", version, "g", args.g, "s", args.s, "d", args.d, "c", args.c, "x", args.x,
  "w", args.w)
if partial == "" then redis.call("HDEL", P, "p") else redis.call("HSET", P, "p", partial) end
return { 1, version, 0, partial }
`;

/**
 * Raises the index entry ARGV[1].name (KEYS[1] is the index) to ARGV[1].v, never lowering it;
 * a raise sets the index's change mark to ARGV[1].mark. Then the name's place among the API
 * streams follows its record at version v (ARGV[1].api: a live API stream): taken, or freed, unless
 * a later version decided it already: one indexed (its index step ran before this one's, so a
 * place freed by a later deletion is not taken back), or a place taken for a version after v.
 */
const INDEX_SCRIPT = LUA_COMMON + `
local current = tonumber(redis.call("HGET", P, args.name)) or 0
if args.v > current then
  redis.call("HSET", P, args.name, args.v)
  redis.call("SET", P .. ":mark", args.mark)
end
-- A later version indexed already decided the place (its record's), whatever this one holds.
if args.v < current then return 1 end
local places = P .. ":api"
local held = tonumber(redis.call("HGET", places, args.name))
if held == nil or held <= args.v then
  if args.api then
    redis.call("HSET", places, args.name, args.v)
  elseif held ~= nil then
    redis.call("HDEL", places, args.name)
  end
  -- The creation that took it (if any) is done: its place is no longer on its way.
  redis.call("HDEL", places .. ":pending", args.name)
end
return 1
`;

/**
 * Takes a place among the API streams (KEYS[1] is the index) for ARGV[1].name, to be written at
 * version ARGV[1].v: a name holding one keeps it (raised to v); another takes one while fewer
 * than ARGV[1].max are held. The place is noted pending since ARGV[1].now (ms) until the write's
 * index step. Returns 1; -count when the bound is held (taking nothing); 0 when the places were
 * never built (see the module doc).
 */
const RESERVE_SCRIPT = LUA_COMMON + `
local places = P .. ":api"
if redis.call("EXISTS", places .. ":built") == 0 then return 0 end
local held = tonumber(redis.call("HGET", places, args.name))
if held == nil then
  local count = redis.call("HLEN", places)
  if count >= args.max then return -count end
end
if held == nil or held < args.v then redis.call("HSET", places, args.name, args.v) end
redis.call("HSET", places .. ":pending", args.name, args.now)
return 1
`;

/** The names holding a place among the API streams (KEYS[1] is the index), as JSON. */
const PLACES_SCRIPT = LUA_COMMON + `
local names = redis.call("HKEYS", P .. ":api")
if #names == 0 then return "[]" end
return cjson.encode(names)
`;

/**
 * Recounts the places of the API streams (KEYS[1] is the index) from ARGV[1].rows
 * (`[[name, version, live], …]`, the records read one by one, version 0 for none; `live` a live
 * API stream), skipping a name whose index moved past that version (a later write, whose index
 * script decides). A live stream without a place gets one. A place of a name not live frees,
 * when taken for that version or an earlier one (a deletion written without its index step,
 * by an old release or failed), or for a later one (a creation not written yet) once pending
 * since ARGV[1].lease ms before ARGV[1].now, or not noted pending (taken by an older release).
 * Marks the places built; returns how many are held.
 */
const RECOUNT_SCRIPT = LUA_COMMON + `
local places = P .. ":api"
local pending = places .. ":pending"
for _, row in ipairs(args.rows) do
  local name, v, live = row[1], row[2], row[3]
  local indexed = tonumber(redis.call("HGET", P, name)) or 0
  if indexed <= v then
    local held = tonumber(redis.call("HGET", places, name))
    if live then
      if held == nil then redis.call("HSET", places, name, v) end
    elseif held ~= nil then
      local free = held <= v
      if not free then
        local since = tonumber(redis.call("HGET", pending, name))
        free = since == nil or since + args.lease <= args.now
      end
      if free then
        redis.call("HDEL", places, name)
        redis.call("HDEL", pending, name)
      end
    end
  end
end
redis.call("SET", places .. ":built", "1")
return redis.call("HLEN", places)
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

/**
 * The `p` field of a record: its partial-window bounds with the generation they belong to, or ""
 * when it has none.
 */
function partialField(record: DefinitionWrite): string {
  const bounds = record.partialBefore ?? {};
  if (Object.keys(bounds).length === 0) return "";
  return JSON.stringify({ g: record.generation, b: bounds });
}

/**
 * The partial-window bounds of a record's `p` field, when it has one of the record's generation.
 * A release before the field writes records without touching it: one it left from another
 * generation (that release deleted the stream and created it again) is not this data's.
 */
function partialBoundsOf(
  field: string | undefined,
  generation: number,
): Record<string, number> | undefined {
  if (field === undefined) return undefined;
  const { g, b } = JSON.parse(field) as { g: number; b: Record<string, number> };
  return g === generation && Object.keys(b).length > 0 ? b : undefined;
}

/**
 * The hash-tagged prefix of a stream's data keys (of a {@linkcode generationKey}): `es:{orders}:`,
 * and `es:{orders}:g2:` for its generation 2.
 */
export function dataKeyPrefix(prefix: string, key: string): string {
  const { stream, generation } = splitGenerationKey(key);
  return `${prefix}:{${stream}}:${generation === 0 ? "" : `g${generation}:`}`;
}

/** The key of a stream's definition record: in the stream's hash slot, outside every generation. */
export function definitionKey(prefix: string, stream: string): string {
  return `${prefix}:{${stream}}:def`;
}

/** A {@linkcode DefinitionStore} in Redis, shared by every instance with the same prefix. */
export class RedisDefinitionStore implements DefinitionStore {
  /** A write keeps final and raises added counters' bounds in its own script (WRITE_SCRIPT). */
  readonly holdsData = true;
  #prefix: string;
  #calls: RedisCalls;
  #maxApiStreams: number;
  #placeLeaseMs: number;
  #recountEveryMs: number;
  #statsTtlMs: number;
  /** The recount running, shared by the refusals meanwhile. */
  #recounting: Promise<number> | undefined;
  /** When (performance.now) the last recount ended. */
  #recountedAt = -Infinity;

  constructor(redis: RedisDefinitionClient, options: RedisDefinitionStoreOptions = {}) {
    this.#prefix = options.prefix ?? "es";
    this.#maxApiStreams = checkedMax("maxApiStreams", options.maxApiStreams ?? DEFAULT_STREAMS_MAX);
    this.#placeLeaseMs = options.placeLeaseMs ?? DEFAULT_PLACE_LEASE_MS;
    this.#recountEveryMs = options.recountEveryMs ?? DEFAULT_RECOUNT_EVERY_MS;
    this.#statsTtlMs = options.statsTtlMs ?? DEFAULT_STATS_TTL_MS;
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
      const generation = Number(raw.g);
      const partialBefore = partialBoundsOf(raw.p, generation);
      return {
        name,
        source: raw.s === "config" ? "config" : "api",
        version: Number(raw.v),
        generation,
        definition: raw.x === "1" ? null : JSON.parse(raw.d),
        counters: JSON.parse(raw.c),
        ...(partialBefore ? { partialBefore } : {}),
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

  async write(
    name: string,
    record: DefinitionWrite,
    expectedVersion: number,
    options: DefinitionWriteOptions = {},
  ): Promise<WriteResult> {
    const keep = options.keepFinal;
    const added = options.addedCounters ?? [];
    const keys = [definitionKey(this.#prefix, name)];
    // The written generation's stats, in the record's slot: read in the same step.
    if (keep || added.length > 0) {
      keys.push(
        dataKeyPrefix(this.#prefix, generationKey(name, record.generation)) + STREAM_KEYS.stats,
      );
    }
    const api = record.source === "api" && !record.deleted;
    const add = added.length > 0 ? added : undefined;
    const writeId = crypto.randomUUID();
    if (api) await this.#takePlace(name, expectedVersion + 1);
    return this.#calls.call("writeDefinition", async () => {
      const [written, version, currentApi, partial] = (await this.#calls.script(
        WRITE_SCRIPT,
        keys,
        [{
          kf: keep && {
            now: keep.nowMs,
            by: keep.by.map(({ latenessMs, idleMs }) => ({
              l: latenessMs,
              i: idleMs ?? undefined,
            })),
          },
          add,
          api: (add && api) || undefined,
          expected: expectedVersion,
          g: record.generation,
          s: record.source,
          d: JSON.stringify(record.definition ?? null),
          c: JSON.stringify(record.counters),
          x: record.deleted ? "1" : "0",
          p: partialField(record),
          // The stats TTL, for a stats hash the write makes (KEYS[2], when it is given).
          ttl: keys.length > 1 ? this.#statsTtlMs : undefined,
          // Made once per call: the same call sent again carries it, another write does not.
          w: writeId,
        }],
      )) as [number, number, number?, unknown?];
      if (Number(written) !== 1) {
        // The place taken for this write follows the record that won instead.
        if (api) await this.#indexWrite(name, Number(version), Number(currentApi) === 1);
        return { status: "conflict", version: Number(version) };
      }
      await this.#indexWrite(name, Number(version), api);
      if (add === undefined) return { status: "written", version: Number(version) };
      // The bounds as written (as a read of the record gives them).
      // JSON text, or parsed already by the client.
      const field = typeof partial === "string" ? partial || undefined : JSON.stringify(partial);
      const partialBefore = partialBoundsOf(field, record.generation) ?? {};
      return { status: "written", version: Number(version), partialBefore };
    });
  }

  async reindex(name: string, record: StoredDefinition): Promise<void> {
    const api = record.source === "api" && !record.deleted;
    await this.#calls.call("reindexDefinition", () => this.#indexWrite(name, record.version, api));
  }

  #indexWrite(name: string, version: number, api: boolean): Promise<unknown> {
    return this.#calls.script(INDEX_SCRIPT, [this.#index], [{
      name,
      v: version,
      mark: crypto.randomUUID(),
      api,
    }]);
  }

  /**
   * Takes a place among the API streams for `name` at `version`. When they are all held (or were
   * never built), recounts them from the records and tries once more; then throws
   * {@linkcode StoredLimitError}, unless `name` is a live API stream already (its place lost by a
   * write cut short): a replacement adds no stream.
   */
  async #takePlace(name: string, version: number): Promise<void> {
    for (let recounted = false;; recounted = true) {
      const reply = Number(
        await this.#calls.call(
          "reserveStream",
          () =>
            this.#calls.script(RESERVE_SCRIPT, [this.#index], [{
              name,
              v: version,
              max: this.#maxApiStreams,
              now: Date.now(),
            }]),
        ),
      );
      if (reply === 1) return;
      if (reply === 0) {
        // Built just now, yet gone (its keys deleted meanwhile): no count to refuse by.
        if (recounted) {
          throw new Error(`Redis lost the places of the API streams while '${name}' took one`);
        }
        await this.#recount(true);
        continue;
      }
      const held = await this.get(name);
      if (held !== null && held.source === "api" && !held.deleted) return;
      const count = recounted ? undefined : await this.#recount(false);
      // Every place still held after the recount: refused by its count, not read again.
      if (count === undefined || count >= this.#maxApiStreams) {
        throw new StoredLimitError("streams", this.#maxApiStreams, count ?? -reply);
      }
    }
  }

  /**
   * Recounts the places, or waits for the recount running, and returns how many are held; unless
   * `always`, not again within `recountEveryMs` of the last one (then undefined: nothing
   * recounted).
   */
  async #recount(always: boolean): Promise<number | undefined> {
    if (this.#recounting === undefined) {
      if (!always && performance.now() - this.#recountedAt < this.#recountEveryMs) return undefined;
      this.#recounting = this.#recountPlaces().finally(() => {
        this.#recounting = undefined;
        this.#recountedAt = performance.now();
      });
    }
    return await this.#recounting;
  }

  /**
   * Recounts the places of the API streams from the records of every name indexed or holding a
   * place (see RECOUNT_SCRIPT); builds them in a store written before they existed. Returns how
   * many are held.
   */
  async #recountPlaces(): Promise<number> {
    const placed = fromJson<string[]>(
      await this.#calls.call(
        "streamPlaces",
        () => this.#calls.script(PLACES_SCRIPT, [this.#index], [{}]),
      ),
    );
    const names = [...new Set([...(await this.versions()).keys(), ...placed])];
    const rows: Array<[string, number, boolean]> = [];
    // A few reads at a time: each record is in its own slot.
    for (let at = 0; at < names.length; at += RECOUNT_READS) {
      const records = await Promise.all(
        names.slice(at, at + RECOUNT_READS).map((name) => this.get(name)),
      );
      records.forEach((record, i) => {
        rows.push([
          names[at + i],
          record?.version ?? 0,
          record !== null && record.source === "api" && !record.deleted,
        ]);
      });
    }
    const held = await this.#calls.call(
      "recountStreamPlaces",
      () =>
        this.#calls.script(RECOUNT_SCRIPT, [this.#index], [{
          rows,
          now: Date.now(),
          lease: this.#placeLeaseMs,
        }]),
    );
    return Number(held);
  }
}

/** How many records a recount of the API streams' places reads at once. */
const RECOUNT_READS = 16;
