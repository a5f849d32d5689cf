/**
 * Lua scripts of the Redis store. Each runs atomically in Redis; every key a
 * script touches starts with KEYS[1], the stream's hash-tagged prefix
 * (`es:{orders}:`), so one script's keys share one Redis Cluster slot.
 *
 * Key layout under the prefix:
 * - `stats` — hash: watermark `wm`, `accepted`, `applied`, `duplicates`,
 *   `late`, `filtered`, `overflow:<counter>`.
 * - `ids:<bucket>` — hash of dedupe ids seen in one TTL-wide time bucket, PX = 2 × TTL.
 * - `p:<counter>:<pane>` — pane hash; per group `c:<group>` (count),
 *   `s:<group>` (sum, for sum/avg), `m:<group>` (min or max).
 * - `h:<counter>:<pane>:<group>` — HyperLogLog of a distinct counter.
 * - `panes:<counter>` — zset of live panes, score = expiry time.
 * - `open:<counter>` — zset of windows holding data, not yet closed, score = end.
 * - `log` — Redis stream (XADD, capped near 100,000 entries): the result log;
 *   field `r` holds a JSON log record.
 * - `alert:<alert>:<counter>:<start>:<group>` — marker of a fired alert, PX = window TTL.
 *
 * Numbers cross the Lua boundary as `%.17g` text so no precision is lost.
 */

import { LUA_COMMON } from "./_lua_common.ts";

/** The shared prelude and the helpers of the window store's scripts. */
const COMMON = LUA_COMMON + `
local function appendLog(recordJson, ttl)
  redis.call("XADD", P .. "log", "MAXLEN", "~", "100000", "*", "r", recordJson)
  redis.call("PEXPIRE", P .. "log", ttl)
end
-- An idle stream's watermark follows the clock: at least now - idle.
local function raiseToClock(wm, now, idle)
  if type(idle) ~= "number" then return wm end
  if wm == nil or now - idle > wm then return now - idle end
  return wm
end
local function fieldsPerGroup(kind)
  if kind == "count" or kind == "distinct" then return 1 end
  return 2
end
-- Reads and merges panes into per-group cells, in first-seen group order.
local function mergePanes(name, kind, panes)
  local cells, order = {}, {}
  for _, pane in ipairs(panes) do
    local flat = redis.call("HGETALL", P .. "p:" .. name .. ":" .. num(pane))
    for i = 1, #flat, 2 do
      local field, value = flat[i], tonumber(flat[i + 1])
      local kindChar, group = string.sub(field, 1, 1), string.sub(field, 3)
      local cell = cells[group]
      if not cell then
        cell = { n = 0, s = 0, panes = {} }
        cells[group] = cell
        order[#order + 1] = group
      end
      if kindChar == "c" then
        cell.n = cell.n + value
        cell.panes[#cell.panes + 1] = pane
      elseif kindChar == "s" then
        cell.s = cell.s + value
      elseif kindChar == "m" then
        if cell.m == nil or (kind == "min" and value < cell.m) or (kind == "max" and value > cell.m) then
          cell.m = value
        end
      end
    end
  end
  local rows = {}
  for _, group in ipairs(order) do
    local cell = cells[group]
    local distinct = 0
    if kind == "distinct" and #cell.panes > 0 then
      local keys = {}
      for i, pane in ipairs(cell.panes) do keys[i] = P .. "h:" .. name .. ":" .. num(pane) .. ":" .. group end
      distinct = redis.call("PFCOUNT", unpack(keys))
    end
    local m = cell.m
    rows[#rows + 1] = { group, num(cell.n), num(cell.s), m and num(m) or "", num(distinct) }
  end
  return rows
end
`;

/**
 * Applies one ingest batch. Three arguments, so the common case decodes little:
 * - ARGV[1], JSON: `{now, late, idle, dttl, filtered, statsTtl, logp, logl,
 *   counters: [[name, kind, maxGroups, ttl, hop, size]], ids: [id|false, …],
 *   times: [ms, …], payloads?: [json|false, …]}` — one entry per event.
 * - ARGV[2], JSON: the batch pre-aggregated in the process as if every event
 *   applies: `[[counterIndex, pane, group, count, sum, min|false, max|false, [value, …]], …]`.
 * - ARGV[3], JSON: each event's own updates
 *   `[[[counterIndex, pane, group, value?], …], …]`, decoded only when some
 *   event turns out duplicate or late and the cells must be rebuilt without it.
 *
 * Dedupe ids live in hashes per TTL-wide time bucket (`ids:<bucket>`); an id
 * is a duplicate while it is in the current or the previous bucket, so it is
 * remembered for at least the TTL and at most twice that, at one hash field
 * per id instead of one key.
 *
 * Returns JSON `{"o": "<one digit per event: 0 applied, 1 duplicate, 2 late>", "wm": "<ms>",
 * "d": [type, …]}`, `d` naming the log record types live subscribers want now.
 */
export const APPLY_SCRIPT = COMMON + `
local b = cjson.decode(ARGV[1])
local statsKey = P .. "stats"
local wm = tonumber(redis.call("HGET", statsKey, "wm"))
local now, lateness, dttl = b.now, b.late, b.dttl
wm = raiseToClock(wm, now, b.idle)
local outcomes = {}
local applied, duplicates, lates = 0, 0, 0
local idsKey, oldIdsKey
if dttl > 0 then
  local bucket = math.floor(now / dttl)
  idsKey = P .. "ids:" .. num(bucket)
  oldIdsKey = P .. "ids:" .. num(bucket - 1)
end
local insertedIds = false
for i, t in ipairs(b.times) do
  local id, outcome = b.ids[i], 0
  if idsKey and type(id) == "string" then
    -- The older bucket first, so a duplicate does not extend the id's life.
    if redis.call("HEXISTS", oldIdsKey, id) == 1 or redis.call("HSETNX", idsKey, id, "1") == 0 then
      outcome = 1
    else
      insertedIds = true
    end
  end
  if outcome == 0 and wm ~= nil and t < wm - lateness then outcome = 2 end
  local payload = b.payloads and b.payloads[i]
  if type(payload) == "string" and ((outcome == 0 and b.logp) or (outcome == 2 and b.logl)) then
    local kind = "event.processed"
    if outcome == 2 then kind = "event.late" end
    appendLog('{"type":"' .. kind .. '","timeMs":' .. num(t) .. ',"event":' .. payload .. '}', b.statsTtl)
  end
  if outcome == 0 then
    if wm == nil or t > wm then wm = t end
    applied = applied + 1
  elseif outcome == 1 then
    duplicates = duplicates + 1
  else
    lates = lates + 1
  end
  outcomes[i] = outcome
end
if insertedIds then redis.call("PEXPIRE", idsKey, 2 * dttl) end

-- The cells to add: pre-aggregated by the process when every event applies,
-- else rebuilt here from the applied events' own updates.
local cells
if applied == #b.times then
  cells = cjson.decode(ARGV[2])
else
  cells = {}
  local index = {}
  for i, updates in ipairs(cjson.decode(ARGV[3])) do
    if outcomes[i] == 0 then
      for _, u in ipairs(updates) do
        local key = u[1] .. "|" .. num(u[2]) .. "|" .. u[3]
        local cell = index[key]
        if not cell then
          cell = { u[1], u[2], u[3], 0, 0, false, false, {} }
          index[key] = cell
          cells[#cells + 1] = cell
        end
        cell[4] = cell[4] + 1
        local v = u[4]
        if type(v) == "number" then
          cell[5] = cell[5] + v
          if cell[6] == false or v < cell[6] then cell[6] = v end
          if cell[7] == false or v > cell[7] then cell[7] = v end
        elseif type(v) == "string" then
          cell[8][#cell[8] + 1] = v
        end
      end
    end
  end
end

-- Whether a pane already holds a group (asking Redis once per group).
local function hasGroup(pane, group)
  if pane.known[group] then return true end
  if pane.isNew then return false end
  if redis.call("HEXISTS", pane.key, "c:" .. group) == 1 then
    pane.known[group] = true
    return true
  end
  return false
end

-- Per pane: existence, group count and TTL once; per cell: the group's fields.
local panes, paneOrder = {}, {}
local touchedCounters = {}
for _, cell in ipairs(cells) do
  local ci = cell[1] + 1
  local meta = b.counters[ci]
  local name, kind, maxGroups, ttl = meta[1], meta[2], meta[3], meta[4]
  local paneText = num(cell[2])
  local paneKey = P .. "p:" .. name .. ":" .. paneText
  local pane = panes[paneKey]
  if not pane then
    pane = { key = paneKey, text = paneText, start = cell[2], meta = meta, known = {},
      isNew = redis.call("EXISTS", paneKey) == 0 }
    if pane.isNew then pane.groups = 0 end
    panes[paneKey] = pane
    paneOrder[#paneOrder + 1] = pane
    touchedCounters[ci] = meta
  end
  local group = cell[3]
  if not hasGroup(pane, group) then
    if pane.groups == nil then pane.groups = redis.call("HLEN", paneKey) / fieldsPerGroup(kind) end
    if pane.groups >= maxGroups then
      group = "__other__"
      redis.call("HINCRBY", statsKey, "overflow:" .. name, cell[4])
    end
    if not hasGroup(pane, group) then pane.groups = pane.groups + 1 end
    pane.known[group] = true
  end
  redis.call("HINCRBY", paneKey, "c:" .. group, cell[4])
  if kind == "sum" or kind == "avg" then
    redis.call("HINCRBYFLOAT", paneKey, "s:" .. group, num(cell[5]))
  elseif kind == "min" or kind == "max" then
    local value = cell[6]
    if kind == "max" then value = cell[7] end
    local current = tonumber(redis.call("HGET", paneKey, "m:" .. group))
    if current == nil or (kind == "min" and value < current) or (kind == "max" and value > current) then
      redis.call("HSET", paneKey, "m:" .. group, num(value))
    end
  elseif kind == "distinct" and #cell[8] > 0 then
    local hll = P .. "h:" .. name .. ":" .. paneText .. ":" .. group
    for i = 1, #cell[8], 500 do
      redis.call("PFADD", hll, unpack(cell[8], i, math.min(i + 499, #cell[8])))
    end
    redis.call("PEXPIRE", hll, ttl)
  end
end
for _, pane in ipairs(paneOrder) do
  local meta = pane.meta
  local name, ttl, hop, size = meta[1], meta[4], meta[5], meta[6]
  redis.call("PEXPIRE", pane.key, ttl)
  redis.call("ZADD", P .. "panes:" .. name, now + ttl, pane.text)
  if pane.isNew then
    local openKey = P .. "open:" .. name
    local start = math.floor(pane.start / hop) * hop
    while start + size > pane.start do
      redis.call("ZADD", openKey, "NX", num(start + size), num(start))
      start = start - hop
    end
  end
end
for _, meta in pairs(touchedCounters) do
  local name, ttl = meta[1], meta[4]
  redis.call("PEXPIRE", P .. "panes:" .. name, ttl)
  redis.call("ZREMRANGEBYSCORE", P .. "panes:" .. name, "-inf", num(now))
  if redis.call("EXISTS", P .. "open:" .. name) == 1 then redis.call("PEXPIRE", P .. "open:" .. name, ttl) end
end

redis.call("HINCRBY", statsKey, "accepted", #b.times + b.filtered)
if applied > 0 then redis.call("HINCRBY", statsKey, "applied", applied) end
if duplicates > 0 then redis.call("HINCRBY", statsKey, "duplicates", duplicates) end
if lates > 0 then redis.call("HINCRBY", statsKey, "late", lates) end
if b.filtered > 0 then redis.call("HINCRBY", statsKey, "filtered", b.filtered) end
if wm ~= nil then redis.call("HSET", statsKey, "wm", num(wm)) end
redis.call("PEXPIRE", statsKey, b.statsTtl)
local demand = {}
local wanted = redis.call("HGETALL", P .. "demand")
for i = 1, #wanted, 2 do
  if tonumber(wanted[i + 1]) > now then demand[#demand + 1] = wanted[i] end
end
return cjson.encode({ o = table.concat(outcomes), wm = wm and num(wm) or "", d = demand })
`;
/**
 * Reads windows of one counter. ARGV[1] is JSON `{name, kind, windows: [[start, [pane, …]], …]}`.
 * Returns JSON `[[start, group, count, sum, minOrMax, distinct], …]` with numbers as text.
 */
export const READ_SCRIPT = COMMON + `
local b = cjson.decode(ARGV[1])
local out = {}
for _, window in ipairs(b.windows) do
  for _, row in ipairs(mergePanes(b.name, b.kind, window[2])) do
    out[#out + 1] = { num(window[1]), row[1], row[2], row[3], row[4], row[5] }
  end
end
return cjson.encode(out)
`;

/**
 * Claims windows that became final. ARGV[1] is JSON
 * `{late, limit, logTtl, idle, now, peek, counters: [[name, kind, hop, size]]}`. Returns JSON
 * `[[counter, start, end, [[group, count, sum, minOrMax, distinct], …]], …]`.
 * The ZREM inside the script makes each window close exactly once.
 */
export const CLOSE_SCRIPT = COMMON + `
local b = cjson.decode(ARGV[1])
local wm = tonumber(redis.call("HGET", P .. "stats", "wm"))
local raised = raiseToClock(wm, b.now, b.idle)
if raised ~= wm then
  wm = raised
  redis.call("HSET", P .. "stats", "wm", num(wm))
  redis.call("PEXPIRE", P .. "stats", b.logTtl)
end
local out = {}
if wm == nil then return cjson.encode(out) end
local cutoff = wm - b.late
for _, meta in ipairs(b.counters) do
  local name, kind, hop, size = meta[1], meta[2], meta[3], meta[4]
  local openKey = P .. "open:" .. name
  local due = redis.call("ZRANGEBYSCORE", openKey, "-inf", num(cutoff), "LIMIT", 0, b.limit)
  if #due > 0 then
    if not b.peek then redis.call("ZREM", openKey, unpack(due)) end
    local live = redis.call("ZRANGE", P .. "panes:" .. name, 0, -1)
    for _, startText in ipairs(due) do
      local start = tonumber(startText)
      local panes = {}
      for _, paneText in ipairs(live) do
        local pane = tonumber(paneText)
        if pane >= start and pane < start + size then panes[#panes + 1] = pane end
      end
      local rows = mergePanes(name, kind, panes)
      out[#out + 1] = { name, num(start), num(start + size), rows }
      for _, row in ipairs(b.peek and {} or rows) do
        local extreme = row[4]
        if extreme == "" then extreme = "null" end
        local minText, maxText = "null", "null"
        if kind == "min" then minText = extreme elseif kind == "max" then maxText = extreme end
        appendLog('{"type":"window.closed","counter":' .. cjson.encode(name) .. ',"start":' .. num(start)
          .. ',"end":' .. num(start + size) .. ',"group":' .. cjson.encode(row[1])
          .. ',"state":{"count":' .. row[2] .. ',"sum":' .. row[3] .. ',"min":' .. minText
          .. ',"max":' .. maxText .. ',"distinct":' .. row[5] .. ',"approximate":'
          .. tostring(kind == "distinct") .. '}}', b.logTtl)
      end
    end
  end
end
return cjson.encode(out)
`;

/**
 * Claims alert firings. ARGV[1] is JSON
 * `{logTtl, firings: [[alert, counter, start, end, group, value|false, ttl], …]}`.
 * Returns JSON: the indexes (1-based) of the firings that were new.
 */
export const FIRE_SCRIPT = COMMON + `
local b = cjson.decode(ARGV[1])
local fired = {}
for i, f in ipairs(b.firings) do
  local key = P .. "alert:" .. f[1] .. ":" .. f[2] .. ":" .. num(f[3]) .. ":" .. f[5]
  if redis.call("SET", key, "1", "NX", "PX", f[7]) then
    local value = "null"
    if type(f[6]) == "number" then value = num(f[6]) end
    appendLog('{"type":"alert.fired","alert":' .. cjson.encode(f[1]) .. ',"counter":' .. cjson.encode(f[2])
      .. ',"start":' .. num(f[3]) .. ',"end":' .. num(f[4]) .. ',"group":' .. cjson.encode(f[5])
      .. ',"value":' .. value .. '}', b.logTtl)
    fired[#fired + 1] = i
  end
end
return cjson.encode(fired)
`;

/** Appends records to the log. ARGV[1] is JSON `{logTtl, records: ["<record JSON>", …]}`. */
export const APPEND_SCRIPT = COMMON + `
local b = cjson.decode(ARGV[1])
for _, record in ipairs(b.records) do appendLog(record, b.logTtl) end
return #b.records
`;

/**
 * Records live subscribers' demand. ARGV[1] is JSON `{expiresAt, ttl, types: [type, …]}`;
 * the `demand` hash maps each type to the time (ms) it is wanted until.
 */
export const DEMAND_SCRIPT = COMMON + `
local b = cjson.decode(ARGV[1])
for _, type in ipairs(b.types) do redis.call("HSET", P .. "demand", type, num(b.expiresAt)) end
redis.call("PEXPIRE", P .. "demand", b.ttl)
return #b.types
`;
