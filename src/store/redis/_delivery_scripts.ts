/**
 * Lua scripts of the Redis delivery store. Each runs atomically in Redis;
 * every key starts with KEYS[1], the hash-tagged prefix (`es:{wh}:`), so all
 * webhook keys share one Redis Cluster slot.
 *
 * Key layout under the prefix:
 * - `ep:<id>` — endpoint config as JSON (no TTL: endpoints are few and deleted by hand).
 * - `eps:<id>` — endpoint state hash: `dis` ("1"/"0"), `why`, `fail` (failing since, ms),
 *   `rate` (deliveries/s, absent for no limit), `upd` (when an attempt disabled it, ms: its
 *   `updatedMs` until the config is written again).
 * - `endpoints` — zset of endpoint ids by creation time.
 * - `epv` — the endpoint list's version: the one-time token of the last call that created,
 *   changed (disabled included) or deleted an endpoint (absent: none did).
 * - `d:<id>` — delivery hash: `id`, `mid`, `ep`, `stream`, `type`, `payload`, `created`,
 *   `status`, `attempts`, `tries`, `intr` (interruptions in a row; absent for 0), `first` (first
 *   attempt's start, ms; absent before one, and for a delivery attempted before the field was
 *   written), `next`, `lst` (last HTTP status), `lerr`, `updated`,
 *   and while claimed `claim` (token) and `until` (lease end); PX = retention.
 * - `a:<id>` — attempt log, newest first, JSON per attempt, the newest 50 kept; PX = retention.
 * - `q:<ep>` — due queue: zset delivery id → due time (claimed ones at their lease end).
 * - `qe` — zset endpoint id → earliest due time of its queue: which endpoints have work.
 * - `f:<ep>` — in flight: zset delivery id → lease end.
 * - `rl:<ep>` — rate limit token bucket: `tk` tokens, `ts` the time it refills from (ms: the last
 *   claim's, or an earlier claim's by a clock ahead); expires when it would be full again (a
 *   missing bucket is a full one).
 * - `ix:<ep>` — zset delivery id → creation time, for listing and replay; PX = retention.
 * - `dd:<ep>` — dead deliveries: zset delivery id → when its hash expires, for counting;
 *   PX = retention.
 * - `cur:<stream>` — dispatch cursor hash: `c` cursor, `p` planned page end; PX 30 days.
 * - `lease:<name>` — a lease token, PX = lease.
 * - `gone:<token>` — a lease token given back before the call that would take it ran (its reply
 *   lost, the give-back first); PX = lease: that call, when it runs, takes nothing.
 * - `call:<token>` — the reply of one writing call (an endpoint's put or delete, an attempt
 *   record, a retry, a replay; of a claim or stored page, what it created and the ids it
 *   claimed), PX 60 s (`CALL_REPLY_TTL_MS`): the same call sent again returns it, doing nothing.
 *
 * Numbers cross the Lua boundary as `%.17g` text so no precision is lost.
 *
 * Redis keeps what a script wrote before one of its commands failed, so every writing script reads
 * or checks each key it may write (its type; a delivery's `attempts` and `tries` as HINCRBY takes
 * them) before its first write, and one that finds a key of another type writes nothing and fails
 * naming it (see `refuseKey` in `_lua_common.ts`). A claim plans every endpoint it visits before
 * writing; a stored page with a claim also checks, before creating its deliveries, the keys of the
 * endpoints the claim may then visit. What only this store reads and never needs whole is taken
 * as what it would have written: a rate-limit bucket holding no numbers is a full one, a rate that
 * is no positive number no limit, a `next` of NaN now.
 */

import { LUA_BYTES_BEFORE, LUA_COMMON, LUA_READ_KEY, LUA_REFILL_FROM } from "./_lua_common.ts";

/** The shared prelude and the helpers of the delivery store's scripts. */
const COMMON = LUA_COMMON + LUA_READ_KEY + `
local ENDPOINTS_KEY = P .. "endpoints"
local ENDPOINTS_VERSION_KEY = P .. "epv"
-- The endpoint list's version ("" when none was written). Read only by this store: text of
-- another type is no version (SET, which writes it, replaces whatever is there).
local function endpointsVersion()
  local version = redis.pcall("GET", ENDPOINTS_VERSION_KEY)
  if type(version) ~= "string" then return "" end
  return version
end
local DUE_ENDPOINTS_KEY = P .. "qe"
local function endpointKey(ep) return P .. "ep:" .. ep end
local function endpointStateKey(ep) return P .. "eps:" .. ep end
local function deliveryKey(id) return P .. "d:" .. id end
local function attemptsKey(id) return P .. "a:" .. id end
local function queueKey(ep) return P .. "q:" .. ep end
local function inFlightKey(ep) return P .. "f:" .. ep end
local function rateKey(ep) return P .. "rl:" .. ep end
local function indexKey(ep) return P .. "ix:" .. ep end
local function deadKey(ep) return P .. "dd:" .. ep end
local function cursorKey(stream) return P .. "cur:" .. stream end
local function leaseKey(name) return P .. "lease:" .. name end
local function goneKey(token) return P .. "gone:" .. token end
-- Every key a writing script may write is read or checked before its first write (see refuseKey).
local function expectZsets(...)
  for _, key in ipairs({ ... }) do expectType(key, "zset") end
end
local function finite(x) return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge end
-- cjson refuses the escape of a lone surrogate (u+d800 alone), which JSON.stringify writes for one:
-- an endpoint stored with one before the API refused it failed every list of endpoints, and
-- dispatch. Such text is decoded with each surrogate escape read as U+FFFD, only to check it here:
-- the text handed back is the one stored, which JavaScript reads as written.
local BACKSLASH = string.char(92)
local function decodeStored(json)
  local ok, value = pcall(cjson.decode, json)
  if ok then return ok, value end
  local readable = string.gsub(json, "%" .. BACKSLASH .. "u[dD][89a-fA-F]%x%x", BACKSLASH .. "ufffd")
  return pcall(cjson.decode, readable)
end
local function hash(key)
  local flat = readKey("hash", "HGETALL", key)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
-- Endpoint ep's configuration (JSON text), false when it has none; refuses (see refuseKey) text
-- that is not a JSON object, which no one could deliver by and the store would fail to read.
local function endpointJson(ep)
  local key = endpointKey(ep)
  local json = readKey("string", "GET", key)
  if json then
    local ok, config = decodeStored(json)
    if not ok or type(config) ~= "table" or type(config.url) ~= "string" then
      refuseKey(key, "text that is not an endpoint's JSON", "an endpoint's JSON")
    end
  end
  return json
end
-- Whether endpoint ep is stored at version (an If-Match: false when it is missing or at another
-- version); refuses (see refuseKey) stored text that is no JSON object.
local function endpointAt(ep, version)
  local key = endpointKey(ep)
  local current = readKey("string", "GET", key)
  if not current then return false end
  local ok, stored = decodeStored(current)
  if not ok or type(stored) ~= "table" then refuseKey(key, "text that is no JSON object", "an endpoint") end
  return stored.version == version
end
-- The endpoints of ids (all when false) that exist, as [json, {state}] rows.
local function endpointRows(ids)
  if ids == false then ids = readKey("zset", "ZRANGE", ENDPOINTS_KEY, 0, -1) end
  local rows = {}
  for _, id in ipairs(ids) do
    local json = endpointJson(id)
    if json then rows[#rows + 1] = { json, hash(endpointStateKey(id)) } end
  end
  return rows
end
-- A stream's dispatch cursor and planned page end ("" for none).
local function readCursor(stream)
  local stored = readKey("hash", "HMGET", cursorKey(stream), "c", "p")
  return stored[1] or "", stored[2] or ""
end
-- Moves a stream's cursor to last and clears its plan.
local function moveCursor(stream, last, ttl)
  local key = cursorKey(stream)
  redis.call("HSET", key, "c", last)
  redis.call("HDEL", key, "p")
  redis.call("PEXPIRE", key, ttl)
end
-- Held already by token: this call sent again once it ran (tokens are one per call).
-- Read first: a SET NX would count as a write even where it finds a key of another type.
local function takeLease(name, token, ttl)
  local key = leaseKey(name)
  local held = readKey("string", "GET", key)
  if held then return held == token and 1 or 0 end
  if redis.call("EXISTS", goneKey(token)) == 1 then return 0 end
  redis.call("SET", key, token, "PX", ttl)
  return 1
end
local function holdsLease(name, token) return readKey("string", "GET", leaseKey(name)) == token end
-- Keeps qe's score of an endpoint at the earliest due time of its queue.
local function refresh(ep)
  local first = redis.call("ZRANGE", queueKey(ep), 0, 0, "WITHSCORES")
  if first[1] then
    redis.call("ZADD", DUE_ENDPOINTS_KEY, first[2], ep)
  else
    redis.call("ZREM", DUE_ENDPOINTS_KEY, ep)
  end
end
-- Refuses (see refuseKey) a delivery's counter fields (names, values as read) that HINCRBY
-- cannot add to.
local function expectCounters(key, fields, values)
  for i, field in ipairs(fields) do
    local value = values[i]
    if value and not isIntegerText(value) then
      refuseKey(key .. " field " .. field, "'" .. value .. "'", "a number it adds to")
    end
  end
end
-- Logs an attempt (JSON) as the newest of delivery id's attempt log, keeping the newest maxLog,
-- for retention from now. Its key was checked to be a list (or absent) before the first write.
local function logAttempt(id, attempt, maxLog, retention)
  local attempts = attemptsKey(id)
  redis.call("LPUSH", attempts, attempt)
  redis.call("LTRIM", attempts, 0, maxLog - 1)
  redis.call("PEXPIRE", attempts, retention)
end
-- bytesBefore(a, b): byte order, as zset members of one score sort.
${LUA_BYTES_BEFORE}-- The rank, in the order asked, of the first member of a zset after the position
-- (score, member): the member's own rank + 1 while it holds that score, else counted.
local function rankAfter(key, descending, score, member)
  local current = redis.call("ZSCORE", key, member)
  if current and tonumber(current) == score then
    if descending then return redis.call("ZREVRANK", key, member) + 1 end
    return redis.call("ZRANK", key, member) + 1
  end
  -- The member is gone (deleted, trimmed): count the members that sort before the position.
  local before
  if descending then
    before = redis.call("ZCOUNT", key, "(" .. num(score), "+inf")
  else
    before = redis.call("ZCOUNT", key, "-inf", "(" .. num(score))
  end
  for _, other in ipairs(redis.call("ZRANGEBYSCORE", key, num(score), num(score))) do
    if descending then
      if bytesBefore(member, other) then before = before + 1 end
    elseif bytesBefore(other, member) then
      before = before + 1
    end
  end
  return before
end
-- Indexes a delivery that just died until its hash expires, for countDeliveries.
local function markDead(ep, id, key, now, retention)
  local ttl = redis.call("PTTL", key)
  if ttl < 0 then ttl = retention end
  local dead = deadKey(ep)
  redis.call("ZREMRANGEBYSCORE", dead, "-inf", num(now))
  redis.call("ZADD", dead, num(now + ttl), id)
  redis.call("PEXPIRE", dead, retention)
end
-- The items of createDeliveries that do not exist yet (with onlyStored, and go to a stored
-- endpoint: one deleted since the caller read it gets none), and the endpoints they go to
-- (ep → true), whose keys it writes checked.
local function newDeliveries(items, onlyStored)
  local fresh, touched, seen, any, stored = {}, {}, {}, false, {}
  for _, item in ipairs(items) do
    local id, ep = item[1], item[3]
    if stored[ep] == nil then
      stored[ep] = not onlyStored or redis.call("EXISTS", endpointKey(ep)) == 1
    end
    if stored[ep] and not seen[id] and redis.call("EXISTS", deliveryKey(id)) == 0 then
      seen[id] = true
      fresh[#fresh + 1] = item
      if not touched[ep] then
        expectZsets(queueKey(ep), indexKey(ep))
        touched[ep] = true
        any = true
      end
    end
  end
  if any then expectType(DUE_ENDPOINTS_KEY, "zset") end
  return fresh, touched
end
-- Drops from endpoint ep's index (at most 256 of) the deliveries created a retention ago that
-- are gone. One an attempt, a retry or a replay kept longer stays listed and replayable while it
-- is kept, as in the memory store: each of those extends the index's life with the delivery's.
local function forgetIndexed(ep, now, retention)
  local index = indexKey(ep)
  for _, old in ipairs(redis.call("ZRANGEBYSCORE", index, "-inf", num(now - retention),
    "LIMIT", 0, 256)) do
    if redis.call("EXISTS", deliveryKey(old)) == 0 then redis.call("ZREM", index, old) end
  end
end
-- Creates the deliveries of newDeliveries (see CREATE_SCRIPT); returns how many.
local function createDeliveries(fresh, touched, now, retention)
  for _, item in ipairs(fresh) do
    local id, messageId, ep, stream, eventType, payload, createdMs =
      item[1], item[2], item[3], item[4], item[5], item[6], item[7]
    local key = deliveryKey(id)
    local at = num(createdMs)
    redis.call("HSET", key, "id", id, "mid", messageId, "ep", ep, "stream", stream,
      "type", eventType, "payload", payload, "created", at, "status", "pending",
      "attempts", "0", "tries", "0", "next", at, "lst", "", "lerr", "", "updated", at)
    redis.call("PEXPIRE", key, retention)
    local queue, index = queueKey(ep), indexKey(ep)
    redis.call("ZADD", queue, at, id)
    redis.call("PEXPIRE", queue, retention)
    redis.call("ZADD", index, at, id)
    redis.call("PEXPIRE", index, retention)
  end
  for ep in pairs(touched) do
    refresh(ep)
    forgetIndexed(ep, now, retention)
  end
  return #fresh
end
-- refillFrom(now, updated, window): where a rate bucket refills from (LUA_REFILL_FROM).
${LUA_REFILL_FROM}-- What claimDue does at endpoint ep, read with every key it writes checked: at most most claims.
-- Returns { ep, cfg (false: gone), st, due (of a disabled endpoint: [id, exists]), entries ([id,
-- {hash}] to claim, {} for a hash gone), available, rate, tokens, claimed }; with onlyCheck, of the
-- deliveries only how many it would claim (no hash read whole).
local function planEndpoint(ep, now, most, concurrency, onlyCheck)
  local plan = { ep = ep, cfg = endpointJson(ep), claimed = 0 }
  if not plan.cfg then return plan end
  local queue, inFlight = queueKey(ep), inFlightKey(ep)
  local st = hash(endpointStateKey(ep))
  plan.st = st
  if st.dis == "1" then
    plan.due = {}
    for _, id in ipairs(readKey("zset", "ZRANGEBYSCORE", queue, "-inf", num(now), "LIMIT", 0, 1000)) do
      plan.due[#plan.due + 1] = { id, expectType(deliveryKey(id), "hash") ~= "none" }
    end
    -- (Checked for a call that creates deliveries first, which may make some due.)
    if #plan.due > 0 or onlyCheck then expectZsets(inFlight, deadKey(ep)) end
    return plan
  end
  -- In flight after the lapsed leases are dropped.
  local busy = readKey("zset", "ZCOUNT", inFlight, "(" .. num(now), "+inf")
  local available = math.min(concurrency - busy, most)
  -- A rate that is no number of deliveries/s (not one this store writes) is no limit.
  local rate, tokens, from = tonumber(st.rate), 0, now
  if not (finite(rate) and rate > 0) then rate = nil end
  if rate then
    local burst = math.max(1, rate)
    local bucket = hash(rateKey(ep))
    local tk, ts = tonumber(bucket.tk), tonumber(bucket.ts)
    tokens = burst
    -- What this script never writes (something else did, text or fewer than no tokens) is a full
    -- bucket: no error, no lockout. One updated "later" than now (by an instance whose clock is
    -- ahead) refills nothing and takes nothing away; it goes on refilling from that update when
    -- it is ahead by at most the time the bucket takes to refill from empty, else from now (a
    -- clock gone wrong): moved back to now, the clock ahead refilled the time between the two
    -- clocks again at its next claim (refillFrom).
    if finite(tk) and finite(ts) and tk >= 0 then
      tokens = math.min(burst, tk + math.max(0, now - ts) * rate / 1000)
      from = refillFrom(now, ts, burst * 1000 / rate)
    end
    available = math.min(available, math.floor(tokens))
  end
  plan.available, plan.rate, plan.tokens, plan.entries = available, rate, tokens, {}
  plan.from = from
  -- Its queue is read after the writes either way (refresh).
  if available <= 0 then expectType(queue, "zset") end
  if available > 0 then
    for _, id in ipairs(readKey("zset", "ZRANGEBYSCORE", queue, "-inf", num(now), "LIMIT", 0, available)) do
      local key = deliveryKey(id)
      if onlyCheck then
        plan.claimed = plan.claimed + readKey("hash", "HEXISTS", key, "id")
      else
        local d = hash(key)
        plan.entries[#plan.entries + 1] = { id, d }
        if d.id ~= nil then plan.claimed = plan.claimed + 1 end
      end
    end
  end
  return plan
end
-- The slow endpoints of a claim (its slow option, or false): { ids (ep -> true), count, left
-- (claims of them still allowed) }. A slow endpoint has at most one claim in flight.
local function slowEndpoints(slow)
  local out = { ids = {}, count = 0, left = 0 }
  if not slow then return out end
  for _, ep in ipairs(slow.ids) do
    if not out.ids[ep] then out.count = out.count + 1 end
    out.ids[ep] = true
  end
  out.left = slow.limit
  return out
end
-- Whether ep is slow and no claim of slow endpoints is left: not visited at all (left due as it
-- is, not pushed back as an endpoint at its cap is).
local function heldBack(ep, slow)
  return slow.ids[ep] == true and slow.left <= 0
end
-- Endpoint ep's cap and most claims in this call, of a claim with room for most more and slow
-- endpoints slow (see slowEndpoints).
local function capOf(ep, most, concurrency, slow)
  if not slow.ids[ep] then return concurrency, most end
  return math.min(1, concurrency), math.min(most, slow.left)
end
-- Checks the keys claimDue may write once this call has created deliveries for the endpoints
-- touched (see newDeliveries), before the first write: every touched endpoint with room for the
-- limit, and the others due in the order claimDue visits them until their claims alone reach it.
-- Touched ones may move ahead of them (limit * 4 + their count), and each claim they add only
-- makes claimDue stop sooner (one claim more ahead leaves at most one fewer to an endpoint).
local function checkClaimKeys(now, limit, concurrency, touched, slowOption)
  local slow = slowEndpoints(slowOption)
  local count = 0
  for ep in pairs(touched) do
    count = count + 1
    local conc = capOf(ep, limit, concurrency, slow)
    planEndpoint(ep, now, limit, conc, true)
  end
  local planned = 0
  for _, ep in ipairs(readKey("zset", "ZRANGEBYSCORE", DUE_ENDPOINTS_KEY, "-inf", num(now), "LIMIT", 0,
    limit * 4 + count + slow.count)) do
    if planned >= limit then break end
    if not touched[ep] and not heldBack(ep, slow) then
      local conc, most = capOf(ep, limit - planned, concurrency, slow)
      local claimed = planEndpoint(ep, now, most, conc, true).claimed
      planned = planned + claimed
      if slow.ids[ep] then slow.left = slow.left - claimed end
    end
  end
end
-- Claims due deliveries (see CLAIM_SCRIPT); returns the claims. Plans every endpoint visited (the
-- reads and checks) before the first write. Slow endpoints (see slowEndpoints) may be left out:
-- the endpoints read go that many past limit * 4, so they hold back no other.
local function claimDue(now, limit, lease, concurrency, tokenPrefix, retention, slowOption)
  local slow = slowEndpoints(slowOption)
  local plans, planned = {}, 0
  local endpoints = readKey("zset", "ZRANGEBYSCORE", DUE_ENDPOINTS_KEY, "-inf", num(now), "LIMIT", 0,
    limit * 4 + slow.count)
  for _, ep in ipairs(endpoints) do
    if planned >= limit then break end
    if not heldBack(ep, slow) then
      local conc, most = capOf(ep, limit - planned, concurrency, slow)
      local plan = planEndpoint(ep, now, most, conc)
      plans[#plans + 1] = plan
      planned = planned + plan.claimed
      if slow.ids[ep] then slow.left = slow.left - plan.claimed end
    end
  end
  local out, seq = {}, 0
  for _, plan in ipairs(plans) do
    local ep = plan.ep
    local queue, inFlight = queueKey(ep), inFlightKey(ep)
    if not plan.cfg then
      redis.call("DEL", queue)
      redis.call("ZREM", DUE_ENDPOINTS_KEY, ep)
    elseif plan.due then
      for _, due in ipairs(plan.due) do
        local id = due[1]
        local key = deliveryKey(id)
        if due[2] then
          redis.call("HSET", key, "status", "dead", "next", "", "lerr", "Endpoint is disabled",
            "updated", num(now))
          markDead(ep, id, key, now, retention)
          -- A lapsed claim must not record over the dead status later.
          redis.call("HDEL", key, "claim", "until")
        end
        redis.call("ZREM", queue, id)
        redis.call("ZREM", inFlight, id)
      end
      refresh(ep)
    else
      redis.call("ZREMRANGEBYSCORE", inFlight, "-inf", num(now))
      local available, rate, tokens, from = plan.available, plan.rate, plan.tokens, plan.from
      local claimed = 0
      if available > 0 then
        local untilMs = now + lease
        for _, entry in ipairs(plan.entries) do
          local id, d = entry[1], entry[2]
          if d.id == nil then
            redis.call("ZREM", queue, id)
          else
            seq = seq + 1
            local token = tokenPrefix .. ":" .. seq
            redis.call("HSET", deliveryKey(id), "claim", token, "until", num(untilMs))
            redis.call("ZADD", queue, num(untilMs), id)
            redis.call("ZADD", inFlight, num(untilMs), id)
            out[#out + 1] = { d, plan.cfg, plan.st, token }
            claimed = claimed + 1
          end
        end
        redis.call("PEXPIRE", inFlight, lease * 2)
      end
      if rate then
        local bucket = rateKey(ep)
        local left = tokens - claimed
        redis.call("HSET", bucket, "tk", num(left), "ts", num(from))
        -- Kept until it refills (from its update, which may be ahead of now): expiring earlier
        -- would hand a slow endpoint (under one delivery a minute) a full bucket too soon.
        local burst = math.max(1, rate)
        redis.call("PEXPIRE", bucket,
          num(math.max(1, math.ceil((burst - left) * 1000 / rate + (from - now)))))
      end
      refresh(ep)
      if available <= 0 then
        -- Blocked by its cap: look again when a token is due (a finished attempt refreshes sooner),
        -- by this clock (the bucket refills from its update, which may be ahead of now).
        local wait = 1000
        if rate and tokens < 1 then wait = math.ceil((1 - tokens) * 1000 / rate + (from - now)) end
        local first = redis.call("ZRANGE", queue, 0, 0, "WITHSCORES")
        if first[1] and tonumber(first[2]) <= now then
          redis.call("ZADD", DUE_ENDPOINTS_KEY, num(now + wait), ep)
        end
      end
    end
  end
  return out
end
-- What a call keeps of its claims for a send of it again: [id, endpoint, token] each.
local function claimedIds(claims)
  local ids = {}
  for i, claim in ipairs(claims) do ids[i] = { claim[1].id, claim[1].ep, claim[4] } end
  return ids
end
-- The claims of claimedIds again, those their tokens still hold (not recorded or given back since).
local function claimsAgain(ids)
  local out = {}
  for _, claimed in ipairs(ids) do
    local id, ep, token = claimed[1], claimed[2], claimed[3]
    local d = hash(deliveryKey(id))
    local cfg = readKey("string", "GET", endpointKey(ep))
    if d.claim == token and cfg then out[#out + 1] = { d, cfg, hash(endpointStateKey(ep)), token } end
  end
  return out
end
-- Of a delivery to requeue: its id and endpoint ({id, ep}), refused (see refuseKey) when its hash
-- lacks them; the endpoint's keys requeue writes checked, once per endpoint in checked (ep → true).
local function toRequeue(key, checked)
  local stored = readKey("hash", "HMGET", key, "id", "ep")
  local d = { id = stored[1], ep = stored[2] }
  if not (d.id and d.ep) then refuseKey(key, "a hash without its id or ep", "a delivery") end
  if not checked[d.ep] then
    expectZsets(deadKey(d.ep), queueKey(d.ep), inFlightKey(d.ep), DUE_ENDPOINTS_KEY)
    checked[d.ep] = true
  end
  return d
end
-- Makes the delivery d (of toRequeue) at key due now.
local function requeue(key, d, now, retention)
  redis.call("ZREM", deadKey(d.ep), d.id)
  redis.call("HSET", key, "status", "pending", "tries", "0", "next", num(now), "updated", num(now))
  redis.call("HDEL", key, "claim", "until", "intr")
  redis.call("PEXPIRE", key, retention)
  redis.call("PEXPIRE", indexKey(d.ep), retention)
  local queue = queueKey(d.ep)
  redis.call("ZADD", queue, num(now), d.id)
  redis.call("PEXPIRE", queue, retention)
  redis.call("ZREM", inFlightKey(d.ep), d.id)
  refresh(d.ep)
end
`;

/**
 * Creates or replaces an endpoint. ARGV[1]: `{id, json, expect (-1: must not exist), created,
 * rate|false, state: {disabled?, reason?, failing?}, disabledIs?, tk, max}`. Returns the state hash
 * as written (JSON text), or 0 on a version mismatch (or a stored `dis` other than `disabledIs`,
 * when given), or -count when a creation finds `max` endpoints (or more) held, creating nothing;
 * the same call again (its one-time token `tk` seen) the first one's reply, changing nothing.
 */
export const PUT_ENDPOINT_SCRIPT = COMMON + `
local id, json, expect, created, rate = args.id, args.json, args.expect, args.created, args.rate
local disabled, reason, failing = args.state.disabled, args.state.reason, args.state.failing
local callKey, first = callReply(args.tk)
if first then return first end
local key = endpointKey(id)
local st = endpointStateKey(id)
if expect == -1 then
  if readKey("string", "GET", key) then return 0 end
  expectType(ENDPOINTS_KEY, "zset")
  local count = redis.call("ZCARD", ENDPOINTS_KEY)
  if count >= args.max then return -count end
elseif not endpointAt(id, expect) then
  return 0
elseif args.disabledIs ~= nil and (readKey("hash", "HGET", st, "dis") == "1") ~= args.disabledIs then
  return 0
end
expectType(ENDPOINTS_KEY, "zset")
local hasDisabled = readKey("hash", "HEXISTS", st, "dis") == 1
redis.call("SET", key, json)
redis.call("HDEL", st, "upd")
redis.call("ZADD", ENDPOINTS_KEY, num(created), id)
if rate == false then redis.call("HDEL", st, "rate") else redis.call("HSET", st, "rate", num(rate)) end
if disabled ~= nil then redis.call("HSET", st, "dis", disabled and "1" or "0") end
if reason ~= nil then
  if reason == cjson.null then redis.call("HDEL", st, "why") else redis.call("HSET", st, "why", reason) end
end
if failing ~= nil then
  if failing == cjson.null then redis.call("HDEL", st, "fail") else redis.call("HSET", st, "fail", num(failing)) end
end
if disabled == nil and not hasDisabled then redis.call("HSET", st, "dis", "0") end
redis.call("SET", ENDPOINTS_VERSION_KEY, args.tk)
return keepReply(callKey, cjson.encode(hash(st)))
`;

/** Reads endpoints by id. ARGV[1]: `{ids: [...]}`. Returns JSON `[[json, {state}], …]`. */
export const GET_ENDPOINTS_SCRIPT = COMMON + `
return cjson.encode(endpointRows(args.ids))
`;

/**
 * Reads every endpoint with the endpoint list's version. Returns JSON
 * `{rows: [[json, {state}], …], version}` (version `""` when none was written).
 */
export const LIST_ENDPOINTS_SCRIPT = COMMON + `
return cjson.encode({ rows = endpointRows(false), version = endpointsVersion() })
`;

/**
 * Reads a page of endpoints, oldest first. ARGV[1]: `{limit, after: {score, id} | false}`.
 * Returns JSON `{rows: [[json, {state}], …], next: [score, id] | false}`; `next` is the
 * position of the page's last endpoint when more follow.
 */
export const PAGE_ENDPOINTS_SCRIPT = COMMON + `
local limit, after = args.limit, args.after
local start = 0
if after ~= false then start = rankAfter(ENDPOINTS_KEY, false, after.score, after.id) end
local entries = redis.call("ZRANGE", ENDPOINTS_KEY, start, start + limit, "WITHSCORES")
local rows, next = {}, false
for i = 1, math.min(#entries, limit * 2), 2 do
  local id = entries[i]
  local json = endpointJson(id)
  if json then rows[#rows + 1] = { json, hash(endpointStateKey(id)) } end
end
if #entries > limit * 2 then next = { entries[limit * 2], entries[limit * 2 - 1] } end
return cjson.encode({ rows = rows, next = next })
`;

/**
 * Deletes an endpoint with its queues. ARGV[1]: `{id, tk, expect}` (`expect`: the version it must
 * be at, or false for any). Returns 1 if it existed (and was at `expect`); the same
 * call again (its one-time token `tk` seen) the first one's answer.
 */
export const DELETE_ENDPOINT_SCRIPT = COMMON + `
local callKey, first = callReply(args.tk)
if first then return tonumber(first) end
local id = args.id
-- If-Match: only the version the caller read (0, nothing deleted, when it is not).
if args.expect ~= false and not endpointAt(id, args.expect) then return 0 end
expectZsets(ENDPOINTS_KEY, DUE_ENDPOINTS_KEY)
local existed = redis.call("DEL", endpointKey(id))
redis.call("DEL", endpointStateKey(id), queueKey(id), inFlightKey(id), rateKey(id), indexKey(id),
  deadKey(id))
redis.call("ZREM", ENDPOINTS_KEY, id)
redis.call("ZREM", DUE_ENDPOINTS_KEY, id)
if existed == 1 then redis.call("SET", ENDPOINTS_VERSION_KEY, args.tk) end
keepReply(callKey, num(existed))
return existed
`;

/** Reads a dispatch cursor. ARGV[1]: `{stream}`. Returns JSON `[cursor, plan]` ("" for none). */
export const CURSOR_SCRIPT = COMMON + `
local cursor, plan = readCursor(args.stream)
return cjson.encode({ cursor, plan })
`;

/**
 * Plans a page. ARGV[1]: `{stream, cursor ("" for none), last, ttl}`. Sets the plan when the
 * cursor is as given and no plan exists. Returns JSON `[cursor, plan]`.
 */
export const BEGIN_PAGE_SCRIPT = COMMON + `
local stream, expected, last, ttl = args.stream, args.cursor, args.last, args.ttl
local key = cursorKey(stream)
local cursor, plan = readCursor(stream)
if cursor == expected and plan == "" then
  redis.call("HSET", key, "c", cursor, "p", last)
  plan = last
end
redis.call("PEXPIRE", key, ttl)
return cjson.encode({ cursor, plan })
`;

/** Moves a cursor. ARGV[1]: `{stream, cursor, last, ttl}`. Returns 1, or 0 if it moved already. */
export const COMMIT_PAGE_SCRIPT = COMMON + `
local stream, expected, last, ttl = args.stream, args.cursor, args.last, args.ttl
if readCursor(stream) ~= expected then return 0 end
moveCursor(stream, last, ttl)
return 1
`;

/**
 * Opens a stream's dispatch in one call. ARGV[1]: `{stream, lease, token, ttl, list, unless}`.
 * Lists the endpoints when `list`, or when `unless` (a version, or false) is not the endpoint
 * list's version (then takes no lease when there is none), takes the lease
 * `lease` for `ttl` ms when free, and reads the cursor. Returns JSON
 * `[leased (1/0), cursor, plan, [[json, {state}], …] | false, version]` ("" for no cursor or
 * plan; version: the endpoint list's).
 */
export const OPEN_DISPATCH_SCRIPT = COMMON + `
local stream, lease, token, ttl, list = args.stream, args.lease, args.token, args.ttl, args.list
-- The caller's list is older than the last change of an endpoint: listed again.
if not list and args.unless ~= false and args.unless ~= endpointsVersion() then list = true end
local endpoints = false
if list then endpoints = endpointRows(false) end
-- Read before the lease is taken, its one write.
local cursor, plan = readCursor(stream)
local leased = 0
if endpoints == false or #endpoints > 0 then leased = takeLease(lease, token, ttl) end
return cjson.encode({ leased, cursor, plan, endpoints, endpointsVersion() })
`;

/**
 * Stores a page atomically. ARGV[1]: `{stream, cursor, last, ttl, now, retention, items (as
 * CREATE_SCRIPT's), lease: {name, token} | false, claim: {now, limit, lease, conc, token,
 * slow: {ids, limit} | false} | false, version: <text> | false}`. When the cursor is as given,
 * no page ending elsewhere is planned and the endpoint list's version is `version` (when one is
 * given): creates the deliveries, moves the cursor to `last`, clears the plan, gives
 * the lease back and, when asked, claims due deliveries as CLAIM_SCRIPT does. Returns JSON
 * `{created, claims}` (claims as CLAIM_SCRIPT's), `created` -1 when nothing was done as the cursor
 * or plan is elsewhere, -2 when nothing was done as the endpoint list's version is not `version`.
 * ARGV[1].tk is the call's one-time token: the same call again returns what it created and the
 * claims it made that are still held.
 */
export const STORE_PAGE_SCRIPT = COMMON + `
local callKey, first = callReply(args.tk)
if first then
  local kept = cjson.decode(first)
  return cjson.encode({ created = kept.created, claims = claimsAgain(kept.ids) })
end
local stream, expected, last, ttl = args.stream, args.cursor, args.last, args.ttl
local cursor, plan = readCursor(stream)
if cursor ~= expected or (plan ~= "" and plan ~= last) then
  return cjson.encode({ created = -1, claims = {} })
end
-- Made for a list of endpoints one was created, changed or deleted since: to be made again.
if args.version ~= false and args.version ~= endpointsVersion() then
  return cjson.encode({ created = -2, claims = {} })
end
local fresh, touched = newDeliveries(args.items)
local held = args.lease ~= false and holdsLease(args.lease.name, args.lease.token)
local claim = args.claim
if claim ~= false then checkClaimKeys(claim.now, claim.limit, claim.conc, touched, claim.slow) end
local created = createDeliveries(fresh, touched, args.now, args.retention)
moveCursor(stream, last, ttl)
if held then redis.call("DEL", leaseKey(args.lease.name)) end
local claims = {}
if claim ~= false then
  claims = claimDue(claim.now, claim.limit, claim.lease, claim.conc, claim.token, args.retention,
    claim.slow)
end
keepReply(callKey, cjson.encode({ created = created, ids = claimedIds(claims) }))
return cjson.encode({ created = created, claims = claims })
`;

/** Takes a lease. ARGV[1]: `{name, token, ttl}`. Returns 1 if taken. */
export const ACQUIRE_LEASE_SCRIPT = COMMON + `
return takeLease(args.name, args.token, args.ttl)
`;

/**
 * Gives a lease back. ARGV[1]: `{name, token, gone}`. With `gone` (ms), a token whose lease is not
 * held is kept that long as given back (`gone:<token>`): a call that would take it and has not run
 * yet then takes nothing.
 */
export const RELEASE_LEASE_SCRIPT = COMMON + `
if holdsLease(args.name, args.token) then
  redis.call("DEL", leaseKey(args.name))
elseif args.gone then
  redis.call("SET", goneKey(args.token), "1", "PX", args.gone)
end
return 1
`;

/**
 * Creates deliveries that do not exist (with `onlyStored`, none for an endpoint not stored).
 * ARGV[1]: `{now, retention, onlyStored,
 * items: [[id, messageId, endpointId, stream, type, payload, created], …]}`.
 * Returns how many were created.
 */
export const CREATE_SCRIPT = COMMON + `
local fresh, touched = newDeliveries(args.items, args.onlyStored)
return createDeliveries(fresh, touched, args.now, args.retention)
`;

/**
 * Reads one delivery. ARGV[1]: `{id}`. Returns JSON of its hash, or `{}`: also for a delivery
 * of a deleted endpoint, left to expire unread (the memory store drops it with its endpoint).
 */
export const GET_DELIVERY_SCRIPT = COMMON + `
local id = args.id
local d = hash(deliveryKey(id))
if d.ep and redis.call("EXISTS", endpointKey(d.ep)) == 0 then return cjson.encode({}) end
return cjson.encode(d)
`;

/**
 * Reads a page of an endpoint's deliveries, newest first. ARGV[1]:
 * `{ep, limit, status|false, scan, after: {score, id} | false}`. Looks at most `scan` index
 * entries. Returns JSON `{rows: [{hash}, …], next: [score, id] | false}`: `next` is the
 * position of the page's last delivery when another one follows, or of the last entry looked
 * at when the scan ran out first.
 */
export const LIST_DELIVERIES_SCRIPT = COMMON + `
local ep, limit, status, scan, after = args.ep, args.limit, args.status, args.scan, args.after
local index = indexKey(ep)
local start = 0
if after ~= false then start = rankAfter(index, true, after.score, after.id) end
local rows, last, seen = {}, false, false
local looked = 0
while looked < scan do
  local size = math.min(scan - looked, math.max(limit + 1, 64))
  local entries = redis.call("ZREVRANGE", index, start + looked, start + looked + size - 1,
    "WITHSCORES")
  if #entries == 0 then break end
  for i = 1, #entries, 2 do
    local id, score = entries[i], entries[i + 1]
    local d = hash(deliveryKey(id))
    if d.id and (status == false or d.status == status) then
      if #rows == limit then return cjson.encode({ rows = rows, next = last }) end
      rows[#rows + 1] = d
      last = { score, id }
    end
    looked = looked + 1
    seen = { score, id }
    if looked >= scan then break end
  end
  if #entries < size * 2 then return cjson.encode({ rows = rows, next = false }) end
end
if looked >= scan and seen then
  -- Out of scan before the list ended: go on after the last entry looked at.
  return cjson.encode({ rows = rows, next = seen })
end
return cjson.encode({ rows = rows, next = false })
`;

/**
 * Reads an attempt log. ARGV[1]: `{id}`. Returns its JSON entries, newest first; none for a
 * delivery of a deleted endpoint.
 */
export const LIST_ATTEMPTS_SCRIPT = COMMON + `
local id = args.id
local ep = readKey("hash", "HGET", deliveryKey(id), "ep")
if ep and redis.call("EXISTS", endpointKey(ep)) == 0 then return {} end
return redis.call("LRANGE", attemptsKey(id), 0, -1)
`;

/**
 * Claims due deliveries. ARGV[1]: `{now, limit, lease, conc, token, retention, slow: {ids,
 * limit} | false}`. Visits endpoints with due work, earliest first; per endpoint claims up to
 * its free concurrency (of a slow one: 1) and rate-limit tokens, slow ones at most `slow.limit`
 * together. Due deliveries of a disabled endpoint become dead. Returns JSON
 * `[[{delivery hash}, endpointJson, {state}, token], …]`. The same call again (its one-time
 * `token` seen) returns the claims it made that are still held, claiming nothing more.
 */
export const CLAIM_SCRIPT = COMMON + `
local callKey, first = callReply(args.token)
if first then return cjson.encode(claimsAgain(cjson.decode(first))) end
local claims = claimDue(args.now, args.limit, args.lease, args.conc, args.token, args.retention,
  args.slow)
keepReply(callKey, cjson.encode(claimedIds(claims)))
return cjson.encode(claims)
`;

/**
 * Records an attempt. ARGV[1]: `{id, ep, token, now, outcome, next|false, status|false,
 * err|false, attempt (JSON), at (its start), retention, maxLog, disable|false, disableAfter,
 * failingReason}`. Sets `first` on the first attempt (`attempts` 0) and clears `intr`.
 * Returns JSON `[recorded (0/1), disabled (0/1)]`; the same call again (its one-time token `tk`
 * seen) the first one's.
 */
export const RECORD_SCRIPT = COMMON + `
local id, ep, token, now, outcome = args.id, args.ep, args.token, args.now, args.outcome
local nextMs, httpStatus, lastError = args.next, args.status, args.err
local attempt, retention, maxLog = args.attempt, args.retention, args.maxLog
local disableReason, disableAfter, failingReason = args.disable, args.disableAfter, args.failingReason
local key = deliveryKey(id)
local callKey, first = callReply(args.tk)
if first then return first end
local stored = readKey("hash", "HMGET", key, "claim", "attempts", "tries")
if stored[1] ~= token then return cjson.encode({ 0, 0 }) end
expectCounters(key, { "attempts", "tries" }, { stored[2], stored[3] })
expectType(attemptsKey(id), "list")
expectZsets(inFlightKey(ep), queueKey(ep), DUE_ENDPOINTS_KEY)
if outcome == "dead" then expectType(deadKey(ep), "zset") end
local st = endpointStateKey(ep)
local state = false
if redis.call("EXISTS", st) == 1 then state = readKey("hash", "HMGET", st, "fail", "dis") end
redis.call("HINCRBY", key, "attempts", 1)
redis.call("HINCRBY", key, "tries", 1)
redis.call("HSET", key, "status", outcome,
  "next", (nextMs == false) and "" or num(nextMs),
  "lst", (httpStatus == false) and "" or num(httpStatus),
  "lerr", (lastError == false) and "" or lastError,
  "updated", num(now))
if tonumber(stored[2]) == 0 then redis.call("HSET", key, "first", num(args.at)) end
redis.call("HDEL", key, "claim", "until", "intr")
redis.call("PEXPIRE", key, retention)
redis.call("PEXPIRE", indexKey(ep), retention)
logAttempt(id, attempt, maxLog, retention)
redis.call("ZREM", inFlightKey(ep), id)
local queue = queueKey(ep)
if outcome == "retrying" then
  redis.call("ZADD", queue, num(nextMs), id)
  redis.call("PEXPIRE", queue, retention)
else
  redis.call("ZREM", queue, id)
end
if outcome == "dead" then markDead(ep, id, key, now, retention) end
refresh(ep)
local disabled = 0
if state then
  if outcome == "succeeded" then
    redis.call("HDEL", st, "fail")
  else
    local since = tonumber(state[1])
    if not since then
      since = now
      redis.call("HSET", st, "fail", num(now))
    end
    local reason = disableReason
    if reason == false and now - since >= disableAfter then reason = failingReason end
    if reason ~= false and state[2] ~= "1" then
      -- A change the endpoint's readers see, as a PATCH disabling it is: read as its updatedMs
      -- (the config's JSON is left as its owner wrote it; putEndpoint drops the field).
      redis.call("HSET", st, "dis", "1", "why", reason, "upd", num(now))
      -- A change of the endpoint list: a dispatch by a list read before makes its page again.
      redis.call("SET", ENDPOINTS_VERSION_KEY, args.tk)
      disabled = 1
    end
  end
end
return keepReply(callKey, cjson.encode({ 1, disabled }))
`;

/**
 * Gives a claim back. ARGV[1]: `{id, ep, token, now, tk, cut: {attempt (JSON), at (its start),
 * next|false, usesTry, now, retention, maxLog} | false}`. When the token holds the claim, the
 * delivery is due again at its `next` (now when it has none) and leaves the in-flight set; with
 * `cut` (an attempt cut off after its POST started) the attempt is logged as the record script
 * logs one and counted in `attempts` and `intr`, setting `first` on the first attempt and `updated`,
 * keeping `lst` and `lerr`; with `cut.usesTry` also in `tries`, the delivery then `retrying` and
 * due at `cut.next`, or `dead` when it is false. Returns 1, or 0 when the token no longer holds
 * it; the same call again (its one-time token `tk` seen) the first one's answer, so a send
 * repeated after one that gave the claim back does not report it lost.
 */
export const RELEASE_CLAIM_SCRIPT = COMMON + `
local callKey, first = callReply(args.tk)
if first then return tonumber(first) end
local id, ep, token, now, cut = args.id, args.ep, args.token, args.now, args.cut
local key = deliveryKey(id)
local stored = readKey("hash", "HMGET", key, "claim", "next", "attempts", "intr", "tries")
if stored[1] ~= token then return 0 end
local queue = queueKey(ep)
expectZsets(queue, inFlightKey(ep), DUE_ENDPOINTS_KEY)
local usesTry = cut ~= false and cut.usesTry == true
if cut ~= false then
  expectCounters(key, { "attempts", "intr" }, { stored[3], stored[4] })
  expectType(attemptsKey(id), "list")
  if usesTry then expectCounters(key, { "tries" }, { stored[5] }) end
  if usesTry and cut.next == false then expectType(deadKey(ep), "zset") end
end
-- A next that is no number (NaN, which ZADD refuses, included) is now.
local due = tonumber(stored[2])
if due == nil or due ~= due then due = now end
redis.call("HDEL", key, "claim", "until")
redis.call("ZREM", inFlightKey(ep), id)
if cut ~= false then
  redis.call("HINCRBY", key, "attempts", 1)
  redis.call("HINCRBY", key, "intr", 1)
  -- lst and lerr stay the receiver's last answer or failure: the cut-off is in the attempt log.
  redis.call("HSET", key, "updated", num(cut.now))
  if tonumber(stored[3]) == 0 then redis.call("HSET", key, "first", num(cut.at)) end
  redis.call("PEXPIRE", key, cut.retention)
  redis.call("PEXPIRE", indexKey(ep), cut.retention)
  logAttempt(id, cut.attempt, cut.maxLog, cut.retention)
end
if usesTry then
  redis.call("HINCRBY", key, "tries", 1)
  if cut.next == false then
    redis.call("HSET", key, "status", "dead", "next", "")
    redis.call("ZREM", queue, id)
    markDead(ep, id, key, cut.now, cut.retention)
  else
    redis.call("HSET", key, "status", "retrying", "next", num(cut.next))
    redis.call("ZADD", queue, num(cut.next), id)
    redis.call("PEXPIRE", queue, cut.retention)
  end
else
  redis.call("ZADD", queue, num(due), id)
end
refresh(ep)
return tonumber(keepReply(callKey, "1"))
`;

/**
 * Makes a delivery due now. ARGV[1]: `{id, now, retention, tk}`. Returns JSON of the outcome; the
 * same call again (its one-time token `tk` seen) the first one's.
 */
export const RETRY_SCRIPT = COMMON + `
local callKey, first = callReply(args.tk)
if first then return first end
local id, now, retention = args.id, args.now, args.retention
local key = deliveryKey(id)
if redis.call("EXISTS", key) == 0 then return cjson.encode("not_found") end
-- A deleted endpoint's delivery is not found, as GET_DELIVERY_SCRIPT says: requeued, it would
-- bring back the queue DELETE_ENDPOINT_SCRIPT deleted.
local ep = readKey("hash", "HGET", key, "ep")
if ep and redis.call("EXISTS", endpointKey(ep)) == 0 then return cjson.encode("not_found") end
local untilMs = tonumber(readKey("hash", "HGET", key, "until"))
if untilMs and untilMs > now then return cjson.encode("in_flight") end
requeue(key, toRequeue(key, {}), now, retention)
return keepReply(callKey, cjson.encode("requeued"))
`;

/**
 * Requeues an endpoint's retrying and dead deliveries created since a time, one page of its
 * delivery index at a time (oldest first), so that no call holds Redis for the whole history.
 * ARGV[1]: `{ep, since, now, retention, scan, after: {score, id} | false, tk}`. Looks at the
 * `scan` index entries after `after` (from `since` when false). Returns JSON
 * `{count, next: [score, id] | false}`: how many it requeued, and the last entry it looked at when
 * more may follow; the same call again (its one-time token `tk` seen) the first one's reply.
 */
export const REPLAY_SCRIPT = COMMON + `
local callKey, first = callReply(args.tk)
if first then return first end
local ep, since, now, retention = args.ep, args.since, args.now, args.retention
local scan, after = args.scan, args.after
local index = indexKey(ep)
expectType(index, "zset")
local start
if after ~= false then
  start = rankAfter(index, false, after.score, after.id)
else
  start = redis.call("ZCOUNT", index, "-inf", "(" .. num(since))
end
local entries = redis.call("ZRANGE", index, start, start + scan - 1, "WITHSCORES")
local due, checked = {}, {}
for i = 1, #entries, 2 do
  local id = entries[i]
  local key = deliveryKey(id)
  local stored = readKey("hash", "HMGET", key, "status", "until")
  local status, untilMs = stored[1], tonumber(stored[2])
  if (status == "retrying" or status == "dead") and not (untilMs and untilMs > now) then
    due[#due + 1] = { key, toRequeue(key, checked) }
  end
end
for _, item in ipairs(due) do requeue(item[1], item[2], now, retention) end
local next = false
if #entries == scan * 2 then next = { entries[#entries], entries[#entries - 1] } end
return keepReply(callKey, cjson.encode({ count = #due, next = next }))
`;

/**
 * Counts waiting and dead deliveries over the existing endpoints. ARGV[1]: `{now}`. Returns
 * JSON `[pending, dead]`.
 */
export const COUNT_SCRIPT = COMMON + `
local now = args.now
local pending, dead = 0, 0
for _, ep in ipairs(redis.call("ZRANGE", ENDPOINTS_KEY, 0, -1)) do
  pending = pending + redis.call("ZCARD", queueKey(ep))
  dead = dead + redis.call("ZCOUNT", deadKey(ep), "(" .. num(now), "+inf")
end
return cjson.encode({ pending, dead })
`;
