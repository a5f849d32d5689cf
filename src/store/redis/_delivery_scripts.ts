/**
 * Lua scripts of the Redis delivery store. Each runs atomically in Redis;
 * every key starts with KEYS[1], the hash-tagged prefix (`es:{wh}:`), so all
 * webhook keys share one Redis Cluster slot.
 *
 * Key layout under the prefix:
 * - `ep:<id>` — endpoint config as JSON (no TTL: endpoints are few and deleted by hand).
 * - `eps:<id>` — endpoint state hash: `dis` ("1"/"0"), `why`, `fail` (failing since, ms),
 *   `rate` (deliveries/s, absent for no limit).
 * - `endpoints` — zset of endpoint ids by creation time.
 * - `d:<id>` — delivery hash: `id`, `mid`, `ep`, `stream`, `type`, `payload`, `created`,
 *   `status`, `attempts`, `tries`, `next`, `lst` (last HTTP status), `lerr`, `updated`,
 *   and while claimed `claim` (token) and `until` (lease end); PX = retention.
 * - `a:<id>` — attempt log, newest first, JSON per attempt; PX = retention.
 * - `q:<ep>` — due queue: zset delivery id → due time (claimed ones at their lease end).
 * - `qe` — zset endpoint id → earliest due time of its queue: which endpoints have work.
 * - `f:<ep>` — in flight: zset delivery id → lease end.
 * - `rl:<ep>` — rate limit token bucket: `tk` tokens, `ts` last refill (ms); PX 60 s.
 * - `ix:<ep>` — zset delivery id → creation time, for listing and replay; PX = retention.
 * - `cur:<stream>` — dispatch cursor hash: `c` cursor, `p` planned page end; PX 30 days.
 * - `lease:<name>` — a lease token, PX = lease.
 *
 * Numbers cross the Lua boundary as `%.17g` text so no precision is lost.
 */

import { LUA_COMMON } from "./_lua_common.ts";

/** The shared prelude and the helpers of the delivery store's scripts. */
const COMMON = LUA_COMMON + `
local b = cjson.decode(ARGV[1])
local function hash(key)
  local flat = redis.call("HGETALL", key)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
-- Keeps qe's score of an endpoint at the earliest due time of its queue.
local function refresh(ep)
  local first = redis.call("ZRANGE", P .. "q:" .. ep, 0, 0, "WITHSCORES")
  if first[1] then
    redis.call("ZADD", P .. "qe", first[2], ep)
  else
    redis.call("ZREM", P .. "qe", ep)
  end
end
local function requeue(key, now, retention)
  local d = hash(key)
  redis.call("HSET", key, "status", "pending", "tries", "0", "next", num(now), "updated", num(now))
  redis.call("HDEL", key, "claim", "until")
  redis.call("PEXPIRE", key, retention)
  local q = P .. "q:" .. d.ep
  redis.call("ZADD", q, num(now), d.id)
  redis.call("PEXPIRE", q, retention)
  redis.call("ZREM", P .. "f:" .. d.ep, d.id)
  refresh(d.ep)
end
`;

/**
 * Creates or replaces an endpoint. ARGV[1]: `{id, json, expect (-1: must not exist), created,
 * rate|false, state: {disabled?, reason?, failing?}}`. Returns 1, or 0 on a version mismatch.
 */
export const PUT_ENDPOINT_SCRIPT = COMMON + `
local key = P .. "ep:" .. b.id
local current = redis.call("GET", key)
if b.expect == -1 then
  if current then return 0 end
else
  if not current or cjson.decode(current).version ~= b.expect then return 0 end
end
redis.call("SET", key, b.json)
redis.call("ZADD", P .. "endpoints", num(b.created), b.id)
local st = P .. "eps:" .. b.id
if b.rate == false then redis.call("HDEL", st, "rate") else redis.call("HSET", st, "rate", num(b.rate)) end
if b.state.disabled ~= nil then redis.call("HSET", st, "dis", b.state.disabled and "1" or "0") end
if b.state.reason ~= nil then
  if b.state.reason == cjson.null then redis.call("HDEL", st, "why") else redis.call("HSET", st, "why", b.state.reason) end
end
if b.state.failing ~= nil then
  if b.state.failing == cjson.null then redis.call("HDEL", st, "fail") else redis.call("HSET", st, "fail", num(b.state.failing)) end
end
if redis.call("HEXISTS", st, "dis") == 0 then redis.call("HSET", st, "dis", "0") end
return 1
`;

/** Reads endpoints. ARGV[1]: `{ids: [...] | false}` (false: all). Returns JSON `[[json, {state}], …]`. */
export const GET_ENDPOINTS_SCRIPT = COMMON + `
local ids = b.ids
if ids == false then ids = redis.call("ZRANGE", P .. "endpoints", 0, -1) end
local out = {}
for _, id in ipairs(ids) do
  local json = redis.call("GET", P .. "ep:" .. id)
  if json then out[#out + 1] = { json, hash(P .. "eps:" .. id) } end
end
return cjson.encode(out)
`;

/** Deletes an endpoint with its queues. ARGV[1]: `{id}`. Returns 1 if it existed. */
export const DELETE_ENDPOINT_SCRIPT = COMMON + `
local existed = redis.call("DEL", P .. "ep:" .. b.id)
redis.call("DEL", P .. "eps:" .. b.id, P .. "q:" .. b.id, P .. "f:" .. b.id, P .. "rl:" .. b.id, P .. "ix:" .. b.id)
redis.call("ZREM", P .. "endpoints", b.id)
redis.call("ZREM", P .. "qe", b.id)
return existed
`;

/** Reads a dispatch cursor. ARGV[1]: `{stream}`. Returns JSON `[cursor, plan]` ("" for none). */
export const CURSOR_SCRIPT = COMMON + `
local key = P .. "cur:" .. b.stream
local c = redis.call("HGET", key, "c") or ""
local p = redis.call("HGET", key, "p") or ""
return cjson.encode({ c, p })
`;

/**
 * Plans a page. ARGV[1]: `{stream, cursor ("" for none), last, ttl}`. Sets the plan when the
 * cursor is as given and no plan exists. Returns JSON `[cursor, plan]`.
 */
export const BEGIN_PAGE_SCRIPT = COMMON + `
local key = P .. "cur:" .. b.stream
local c = redis.call("HGET", key, "c") or ""
local p = redis.call("HGET", key, "p") or ""
if c == b.cursor and p == "" then
  redis.call("HSET", key, "c", c, "p", b.last)
  p = b.last
end
redis.call("PEXPIRE", key, b.ttl)
return cjson.encode({ c, p })
`;

/** Moves a cursor. ARGV[1]: `{stream, cursor, last, ttl}`. Returns 1, or 0 if it moved already. */
export const COMMIT_PAGE_SCRIPT = COMMON + `
local key = P .. "cur:" .. b.stream
local c = redis.call("HGET", key, "c") or ""
if c ~= b.cursor then return 0 end
redis.call("HSET", key, "c", b.last)
redis.call("HDEL", key, "p")
redis.call("PEXPIRE", key, b.ttl)
return 1
`;

/** Takes a lease. ARGV[1]: `{name, token, ttl}`. Returns 1 if taken. */
export const ACQUIRE_LEASE_SCRIPT = COMMON + `
if redis.call("SET", P .. "lease:" .. b.name, b.token, "NX", "PX", b.ttl) then return 1 end
return 0
`;

/** Gives a lease back. ARGV[1]: `{name, token}`. */
export const RELEASE_LEASE_SCRIPT = COMMON + `
local key = P .. "lease:" .. b.name
if redis.call("GET", key) == b.token then redis.call("DEL", key) end
return 1
`;

/**
 * Creates deliveries that do not exist. ARGV[1]:
 * `{now, retention, items: [[id, messageId, endpointId, stream, type, payload, created], …]}`.
 * Returns how many were created.
 */
export const CREATE_SCRIPT = COMMON + `
local created, touched = 0, {}
for _, d in ipairs(b.items) do
  local key = P .. "d:" .. d[1]
  if redis.call("EXISTS", key) == 0 then
    local at = num(d[7])
    redis.call("HSET", key, "id", d[1], "mid", d[2], "ep", d[3], "stream", d[4], "type", d[5],
      "payload", d[6], "created", at, "status", "pending", "attempts", "0", "tries", "0",
      "next", at, "lst", "", "lerr", "", "updated", at)
    redis.call("PEXPIRE", key, b.retention)
    local q, ix = P .. "q:" .. d[3], P .. "ix:" .. d[3]
    redis.call("ZADD", q, at, d[1])
    redis.call("PEXPIRE", q, b.retention)
    redis.call("ZADD", ix, at, d[1])
    redis.call("PEXPIRE", ix, b.retention)
    touched[d[3]] = true
    created = created + 1
  end
end
for ep in pairs(touched) do
  refresh(ep)
  redis.call("ZREMRANGEBYSCORE", P .. "ix:" .. ep, "-inf", num(b.now - b.retention))
end
return created
`;

/** Reads one delivery. ARGV[1]: `{id}`. Returns JSON of its hash, or `{}`. */
export const GET_DELIVERY_SCRIPT = COMMON + `
return cjson.encode(hash(P .. "d:" .. b.id))
`;

/**
 * Lists an endpoint's deliveries, newest first. ARGV[1]: `{ep, limit, status|false, scan}`.
 * Returns JSON `[{hash}, …]`.
 */
export const LIST_DELIVERIES_SCRIPT = COMMON + `
local out = {}
local ids = redis.call("ZREVRANGE", P .. "ix:" .. b.ep, 0, b.scan - 1)
for _, id in ipairs(ids) do
  if #out >= b.limit then break end
  local d = hash(P .. "d:" .. id)
  if d.id and (b.status == false or d.status == b.status) then out[#out + 1] = d end
end
return cjson.encode(out)
`;

/** Reads an attempt log. ARGV[1]: `{id}`. Returns its JSON entries, newest first. */
export const LIST_ATTEMPTS_SCRIPT = COMMON + `
return redis.call("LRANGE", P .. "a:" .. b.id, 0, -1)
`;

/**
 * Claims due deliveries. ARGV[1]: `{now, limit, lease, conc, token}`. Visits endpoints with
 * due work, earliest first; per endpoint claims up to its free concurrency and rate-limit
 * tokens. Due deliveries of a disabled endpoint become dead. Returns JSON
 * `[[{delivery hash}, endpointJson, {state}, token], …]`.
 */
export const CLAIM_SCRIPT = COMMON + `
local out, seq = {}, 0
local endpoints = redis.call("ZRANGEBYSCORE", P .. "qe", "-inf", num(b.now), "LIMIT", 0, b.limit * 4)
for _, ep in ipairs(endpoints) do
  if #out >= b.limit then break end
  local cfg = redis.call("GET", P .. "ep:" .. ep)
  local q = P .. "q:" .. ep
  if not cfg then
    redis.call("DEL", q)
    redis.call("ZREM", P .. "qe", ep)
  else
    local st = hash(P .. "eps:" .. ep)
    if st.dis == "1" then
      for _, id in ipairs(redis.call("ZRANGEBYSCORE", q, "-inf", num(b.now), "LIMIT", 0, 1000)) do
        local key = P .. "d:" .. id
        if redis.call("EXISTS", key) == 1 then
          redis.call("HSET", key, "status", "dead", "next", "", "lerr", "Endpoint is disabled",
            "updated", num(b.now))
        end
        redis.call("ZREM", q, id)
      end
      refresh(ep)
    else
      local f = P .. "f:" .. ep
      redis.call("ZREMRANGEBYSCORE", f, "-inf", num(b.now))
      local available = math.min(b.conc - redis.call("ZCARD", f), b.limit - #out)
      local rate, tokens = tonumber(st.rate), 0
      if rate then
        local burst = math.max(1, rate)
        local rl = hash(P .. "rl:" .. ep)
        tokens = burst
        if rl.tk then tokens = math.min(burst, tonumber(rl.tk) + (b.now - tonumber(rl.ts)) * rate / 1000) end
        available = math.min(available, math.floor(tokens))
      end
      local claimed = 0
      if available > 0 then
        local untilMs = b.now + b.lease
        for _, id in ipairs(redis.call("ZRANGEBYSCORE", q, "-inf", num(b.now), "LIMIT", 0, available)) do
          local key = P .. "d:" .. id
          local d = hash(key)
          if d.id == nil then
            redis.call("ZREM", q, id)
          else
            seq = seq + 1
            local token = b.token .. ":" .. seq
            redis.call("HSET", key, "claim", token, "until", num(untilMs))
            redis.call("ZADD", q, num(untilMs), id)
            redis.call("ZADD", f, num(untilMs), id)
            out[#out + 1] = { d, cfg, st, token }
            claimed = claimed + 1
          end
        end
        redis.call("PEXPIRE", f, b.lease * 2)
      end
      if rate then
        local rl = P .. "rl:" .. ep
        redis.call("HSET", rl, "tk", num(tokens - claimed), "ts", num(b.now))
        redis.call("PEXPIRE", rl, 60000)
      end
      refresh(ep)
      if available <= 0 then
        -- Blocked by its cap: look again when a token is due (a finished attempt refreshes sooner).
        local wait = 1000
        if rate and tokens < 1 then wait = math.ceil((1 - tokens) * 1000 / rate) end
        local first = redis.call("ZRANGE", q, 0, 0, "WITHSCORES")
        if first[1] and tonumber(first[2]) <= b.now then
          redis.call("ZADD", P .. "qe", num(b.now + wait), ep)
        end
      end
    end
  end
end
return cjson.encode(out)
`;

/**
 * Records an attempt. ARGV[1]: `{id, ep, token, now, outcome, next|false, status|false,
 * err|false, attempt (JSON), retention, maxLog, disable|false, disableAfter, failingReason}`.
 * Returns JSON `[recorded (0/1), disabled (0/1)]`.
 */
export const RECORD_SCRIPT = COMMON + `
local key = P .. "d:" .. b.id
if redis.call("HGET", key, "claim") ~= b.token then return cjson.encode({ 0, 0 }) end
redis.call("HINCRBY", key, "attempts", 1)
redis.call("HINCRBY", key, "tries", 1)
redis.call("HSET", key, "status", b.outcome,
  "next", (b.next == false) and "" or num(b.next),
  "lst", (b.status == false) and "" or num(b.status),
  "lerr", (b.err == false) and "" or b.err,
  "updated", num(b.now))
redis.call("HDEL", key, "claim", "until")
redis.call("PEXPIRE", key, b.retention)
local a = P .. "a:" .. b.id
redis.call("LPUSH", a, b.attempt)
redis.call("LTRIM", a, 0, b.maxLog - 1)
redis.call("PEXPIRE", a, b.retention)
redis.call("ZREM", P .. "f:" .. b.ep, b.id)
local q = P .. "q:" .. b.ep
if b.outcome == "retrying" then
  redis.call("ZADD", q, num(b.next), b.id)
  redis.call("PEXPIRE", q, b.retention)
else
  redis.call("ZREM", q, b.id)
end
refresh(b.ep)
local disabled = 0
local st = P .. "eps:" .. b.ep
if redis.call("EXISTS", st) == 1 then
  if b.outcome == "succeeded" then
    redis.call("HDEL", st, "fail")
  else
    local since = tonumber(redis.call("HGET", st, "fail"))
    if not since then
      since = b.now
      redis.call("HSET", st, "fail", num(b.now))
    end
    local reason = b.disable
    if reason == false and b.now - since >= b.disableAfter then reason = b.failingReason end
    if reason ~= false and redis.call("HGET", st, "dis") ~= "1" then
      redis.call("HSET", st, "dis", "1", "why", reason)
      disabled = 1
    end
  end
end
return cjson.encode({ 1, disabled })
`;

/** Makes a delivery due now. ARGV[1]: `{id, now, retention}`. Returns JSON of the outcome. */
export const RETRY_SCRIPT = COMMON + `
local key = P .. "d:" .. b.id
if redis.call("EXISTS", key) == 0 then return cjson.encode("not_found") end
local untilMs = tonumber(redis.call("HGET", key, "until"))
if untilMs and untilMs > b.now then return cjson.encode("in_flight") end
requeue(key, b.now, b.retention)
return cjson.encode("requeued")
`;

/**
 * Requeues an endpoint's retrying and dead deliveries created since a time.
 * ARGV[1]: `{ep, since, now, retention}`. Returns how many.
 */
export const REPLAY_SCRIPT = COMMON + `
local count = 0
for _, id in ipairs(redis.call("ZRANGEBYSCORE", P .. "ix:" .. b.ep, num(b.since), "+inf")) do
  local key = P .. "d:" .. id
  local status = redis.call("HGET", key, "status")
  local untilMs = tonumber(redis.call("HGET", key, "until"))
  if (status == "retrying" or status == "dead") and not (untilMs and untilMs > b.now) then
    requeue(key, b.now, b.retention)
    count = count + 1
  end
end
return count
`;
