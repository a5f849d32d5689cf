/**
 * Lua scripts of the Redis store. Each runs atomically in Redis; every key a
 * script touches starts with KEYS[1], the stream's hash-tagged prefix
 * (`es:{orders}:`), so one script's keys share one Redis Cluster slot.
 *
 * A stream incarnation of generation n > 0 (see `store/definitions.ts`) has
 * the prefix `es:{orders}:g<n>:`, so its keys never meet an earlier one's.
 *
 * Key layout under the prefix:
 * - `stats` — hash: watermark `wm`, `accepted`, `applied`, `duplicates`, `late`, `filtered`,
 *   `rejected`, `overflow:<counter>`, `repliesForgotten`, `ri` (the Idempotency-Key reply
 *   index's total size, last entry number and expiry: see {@linkcode APPLY_SCRIPT}), `cl`: the latest end (a session's:
 *   end + gap) a close claimed, before which every event is late (`StreamStats.closedThrough`),
 *   `exp`: when (ms) the hash expires, so a write extends its life only when due (see `lifeOf`),
 *   and `dk`: the dedupe TTL (ms) of the last apply, then the earlier TTLs whose buckets are
 *   still asked (see {@linkcode APPLY_SCRIPT}); `qn`: when (ms, -1 never) the last close next has
 *   something to do without a new batch, `qa`, `qw` and `qc`: the `applied`, `wm` and `cl` it
 *   left, `qk`: a hash of its counters and options (see {@linkcode CLOSE_SCRIPT}); `dv`: the
 *   version of the last definition write that kept final (`StreamStats.definitionVersion`,
 *   written by the definition store's write), which a read or a close by an older one judges by.
 * - `ids:<bucket>` — hash of dedupe ids seen in one TTL-wide time bucket (bucket =
 *   floor(now / TTL)), PX = 2 × TTL + TTL/8 from its first id; its field `\xff` (one byte 0xFF,
 *   which no id holds: ids are UTF-8) says that PX is set. The name has no TTL in it, as in the
 *   releases before, so those and this one share the current TTL's buckets in a rolling deploy.
 * - `p:<counter>:<pane>` — pane hash; per group `c:<group>` (count),
 *   `s:<group>` (sum, for sum/avg), `m:<group>` (min or max).
 * - `h:<counter>:<pane>:<group>` — HyperLogLog of a distinct counter.
 * - quantiles counters: pane fields `c:<group>`, `n:<group>` (min), `x:<group>` (max),
 *   and `q:<counter>:<pane>:<group>` — hash of DDSketch bucket counts (`z`, `p<key>`,
 *   `n<key>`; see `sketch.ts`), added to with HINCRBY.
 * - `panes:<counter>` — zset of live panes, score = expiry time (that of the pane's keys).
 * - `open:<counter>` — zset of windows holding data, not yet closed, score = end.
 * - `closing:<counter>` — hash of the window a close claimed and logs over several calls (see
 *   {@linkcode CLOSE_SCRIPT}); `closed:<counter>:<start>` — set of the groups of it logged so far.
 * - `log` — Redis stream (XADD): the result log; field `r` holds a JSON log record. Without
 *   `dispatched` it is capped near {@linkcode MAX_LOG_ENTRIES} (`MAXLEN ~`); with it, it keeps
 *   every entry after `m` up to exactly {@linkcode MAX_LOG_BACKLOG}, and {@linkcode MARK_SCRIPT}
 *   trims the entries at or before `m` beyond the newest `MAX_LOG_ENTRIES`.
 * - `dispatched` — hash: `m`, the log id the webhook dispatch took the log through (it holds
 *   the log while it exists), and `lost`, entries the hard bound trimmed after `m` not yet
 *   reported; PX = the log's TTL from the last mark.
 * - `alert:<alert>:<counter>:<start>:<group>` — marker of a fired alert, PX = twice the window
 *   TTL, given again while its window is open, with the window's panes or when the index is due
 *   (see keepOpen in {@linkcode CLOSE_SCRIPT}); `alerted:<counter>` — sorted set of the counter's
 *   markers by window start, for that (its closed windows' entries dropped then; a firing that
 *   finds a marker of an open window not in it, one an earlier release set, adds it), PX as a
 *   marker's when it is made, and again only with the markers, so it is due before any of them.
 * - `demand` — hash: log record type → time (ms) a live subscriber wants it until.
 * - `idem:<key hash>` — an Idempotency-Key's stored reply; `replies` — the index of those this
 *   release kept, for the bound on them, with the stats' `ri` (see
 *   {@linkcode APPLY_SCRIPT}).
 * - `call:<token>` — the reply of one writing call (an apply, a close, alert firings, a log
 *   append, a dispatch mark), PX 60 s (`CALL_REPLY_TTL_MS`): the same call sent again returns it and does
 *   nothing.
 *
 * Numbers cross the Lua boundary as `%.17g` text so no precision is lost.
 */

import {
  DEFAULT_MAX_REPLY_BYTES,
  MAX_LOG_BACKLOG,
  MAX_LOG_ENTRIES,
  OTHER_GROUP,
  REST_GROUP,
} from "../types.ts";
import {
  LUA_BYTES_BEFORE,
  LUA_COMMON,
  LUA_READ_KEY,
  LUA_REFILL_FROM,
  luaRaiseClosedThrough,
  luaStatsTime,
  luaString,
} from "./_lua_common.ts";
import { SESSION_CLOSE_LUA, SESSION_LUA, SESSION_READ_SCRIPT } from "./_session_scripts.ts";

/**
 * The apply script's ARGV[1] fields, in the order they are sent: a JSON array, each field at its
 * place in this list, \`false\` for one absent (JSON \`null\` would decode as \`cjson.null\`, a
 * true value in Lua), the absent ones after the last present left out. An object's names cost its
 * decoding a string and a hash slot each (~6k redis-server instructions a single-event call of
 * ~511k). What a plain single event sends comes first, then what the registry's store adds (\`dv\`,
 * \`rec\`, and \`gen\`, which every stream created through the API has, its generation being 1
 * or more), then what a batch of several events adds, then the rarer ones. The array goes only
 * from an instance to the script text of its own release (\`EVALSHA\` of that text's SHA), so
 * instances of two releases on one Redis each decode their own form, and the order may change
 * between releases: a new order changes the script's text and SHA with it.
 */
export const APPLY_FIELDS = [
  "tk",
  "now",
  "late",
  "dttl",
  "counters",
  "tmax",
  "id",
  "one",
  "dv",
  "rec",
  "gen",
  "ids",
  "cells",
  "tmin",
  "uq",
  "reqs",
  "idle",
  "sl",
  "statsTtl",
  "logp",
  "logl",
  "logw",
  "payloads",
  "rmax",
  "sess",
] as const;

/** The apply script's ARGV[1] field name. */
export type ApplyField = typeof APPLY_FIELDS[number];

/**
 * The apply script's ARGV[1] from its fields by name: an array in the order of
 * {@linkcode APPLY_FIELDS}, `false` for an absent one (JSON `null` is a true value in the script),
 * and nothing after the last present one (each value sent is work for the script's decoding).
 */
export function applyFields(header: { [name in ApplyField]?: unknown }): unknown[] {
  const sent = APPLY_FIELDS.map((name) => header[name] ?? false);
  let length = sent.length;
  while (length > 0 && sent[length - 1] === false) length--;
  sent.length = length;
  return sent;
}

/** Lua for the apply script's ARGV[1] field \`name\` (see {@linkcode APPLY_FIELDS}): \`args[<place>]\`. */
function arg(name: ApplyField): string {
  return `args[${APPLY_FIELDS.indexOf(name) + 1}]`;
}

/**
 * How long (ms) a stream's stats live after its last write unless the store is told otherwise
 * (`RedisStoreOptions.statsTtlMs`): the apply script's \`statsTtl\` when its ARGV leaves it out.
 */
export const DEFAULT_STATS_TTL_MS = 30 * 86_400_000;

/** Names of the keys under a stream's prefix that the store also reads outside scripts. */
export const STREAM_KEYS = { stats: "stats", log: "log", livePanes: "panes:" } as const;
/**
 * Most earlier dedupe TTLs whose buckets an apply still asks (the stats field `dk`), the latest
 * first: a TTL changed more often than its buckets live has the oldest forgotten.
 */
export const DEDUPE_EARLIER_TTLS = 8;

/**
 * Most earlier incarnations (generations) of a stream whose logs a new incarnation's log looks for
 * the newest id of, to start after it (see `logFloor` in {@linkcode LOG_LUA}): one, unless those
 * before it never logged a result.
 */
export const EARLIER_LOG_GENERATIONS = 100;

/** Entries of a result log a {@linkcode MARK_SCRIPT} trims at most (all read into the script). */
export const LOG_TRIM_STEP = 20_000;

/** The line of a script that sets its log bounds. */
function logBoundsLine(retain: number, max: number): string {
  return `local LOG_RETAIN, LOG_MAX = ${retain}, ${max}\n`;
}

/**
 * `script` with log bounds other than {@linkcode MAX_LOG_ENTRIES} and {@linkcode MAX_LOG_BACKLOG}
 * (a store's options, to test them small).
 */
export function withLogBounds(script: string, retain: number, max: number): string {
  return script.replace(
    logBoundsLine(MAX_LOG_ENTRIES, MAX_LOG_BACKLOG),
    () => logBoundsLine(retain, max),
  );
}

/**
 * The shared prelude and the helpers of the window store's scripts, but those of the result log
 * ({@linkcode LOG_LUA}) and of alert markers.
 */
const PRELUDE = LUA_COMMON + `
local STATS_KEY = P .. ${luaString(STREAM_KEYS.stats)}
local DEMAND_KEY = P .. "demand"
-- A dedupe bucket of any TTL: the same name as in the releases before (see dedupeBuckets).
local function idsKey(bucket) return P .. "ids:" .. num(bucket) end
local function paneKey(counter, paneText) return P .. "p:" .. counter .. ":" .. paneText end
local function hllKey(counter, paneText, group)
  return P .. "h:" .. counter .. ":" .. paneText .. ":" .. group
end
local function quantileKey(counter, paneText, group)
  return P .. "q:" .. counter .. ":" .. paneText .. ":" .. group
end
local function livePanesKey(counter) return P .. ${luaString(STREAM_KEYS.livePanes)} .. counter end
local function openKey(counter) return P .. "open:" .. counter end
-- An idle stream's watermark follows the clock: at least now - idle.
local function raiseToClock(wm, now, idle)
  if type(idle) ~= "number" then return wm end
  if wm == nil or now - idle > wm then return now - idle end
  return wm
end
-- A key that must live ttl after its last write (a pane, the stats hash) is not extended on
-- every write: a write extends it to lifeOf(ttl) (LUA_COMMON) only when less than ttl + ttl/16 is
-- left (dueForRefresh), so it lives between ttl + ttl/16 and lifeOf(ttl) after its last write.
-- The ttl/16 covers instances whose clocks disagree by less than that.
local function dueForRefresh(expiresAt, now, ttl)
  return expiresAt == nil or expiresAt - now < ttl + math.ceil(ttl / 16)
end
-- Whether an index (a counter's live panes or open windows, a session counter's sessions) needs
-- life (ms) from now: it holds members given their own lives, some perhaps longer (under a
-- retention lowered since), so its life is extended, never shortened (PEXPIRE alone would cut it
-- to the new life). A key without a TTL, or none yet (a write deferred until after the reads may
-- make it), needs it.
local function shortOf(key, life) return redis.call("PTTL", key) < life end
-- Writes fields (name, value, …) to the stats, extending the hash's life when due (never
-- shortening it); statsExpireAt is its recorded expiry (nil when unknown).
local function writeStats(fields, statsExpireAt, now, ttl)
  local refresh = dueForRefresh(statsExpireAt, now, ttl)
  if refresh then
    fields[#fields + 1] = "exp"
    fields[#fields + 1] = num(now + lifeOf(ttl))
  end
  redis.call("HSET", STATS_KEY, unpack(fields))
  if refresh then redis.call("PEXPIRE", STATS_KEY, lifeOf(ttl)) end
end
-- A HyperLogLog as PFADD takes one: a string of a 16-byte header (HYLL, then its encoding: 0 dense,
-- 1 sparse), and a dense one exactly 12,304 bytes long; an empty string is none. Returns whether
-- there is one.
local function expectHll(key)
  local head = redis.pcall("GETRANGE", key, "0", "15")
  if type(head) == "table" then refuseKey(key, "a " .. redis.call("TYPE", key).ok, "a HyperLogLog") end
  if head == "" then
    if redis.call("EXISTS", key) == 1 then refuseKey(key, "an empty string", "a HyperLogLog") end
    return false
  end
  -- The magic and the encoding byte: "HYLL\\1" sparse, "HYLL\\0" dense.
  local magic = string.sub(head, 1, 5)
  if #head < 16 or (magic ~= "HYLL\\1" and magic ~= "HYLL\\0") or
    (magic == "HYLL\\0" and redis.call("STRLEN", key) ~= 12304) then
    refuseKey(key, "a string", "a HyperLogLog")
  end
  return true
end
-- Text HINCRBYFLOAT adds to: a finite number without spaces.
local function isFloatText(text)
  local x = tonumber(text)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge and not string.find(text, "%s")
end
${
  luaStatsTime("STATS_KEY")
}-- A hash whose fields named hold what HINCRBY adds to, or (a sum's, named s…) HINCRBYFLOAT. Returns
-- field → value (text) of those it holds.
local function expectNumbers(key, fields)
  local stored = redis.pcall("HMGET", key, unpack(fields))
  if stored.err then refuseKey(key, "a " .. redis.call("TYPE", key).ok, "a hash") end
  local values = {}
  for i = 1, #fields do
    local field, value = fields[i], stored[i]
    if value then
      local valid
      if string.byte(field, 1) == 115 then valid = isFloatText(value) else valid = isIntegerText(value) end
      if not valid then refuseKey(key .. " field " .. field, "'" .. value .. "'", "a number it adds to") end
      values[field] = value
    end
  end
  return values
end
local function fieldsPerGroup(kind)
  if kind == "count" or kind == "distinct" then return 1 end
  if kind == "quantiles" then return 3 end
  return 2
end
-- Whether the stream's definition record (KEYS[2], outside every generation, same slot; record:
-- its fields v, g and x as HMGET reads them) says the incarnation of generation gen (nil for 0)
-- is read no more: deleted (x), or deleted and created again under another generation (g); or,
-- when rec says the caller recorded the stream and the definitions live here, the record is
-- missing (a Redis restored from before it was written). The apply and the close ask it alike: a
-- write to an incarnation gone would count, or log results, where no instance reads.
local function definitionGone(record, gen, rec)
  if not record[1] then return rec == true end
  return record[3] == "1" or (record[2] ~= false and tonumber(record[2]) ~= (gen or 0))
end
`;

/**
 * The names of the result log's helpers, declared by every script of the window store before
 * {@linkcode LOG_LUA} defines them: the apply script defines them only when it logs (each helper
 * is a closure made on every call of a script that defines it, ~0.6k instructions).
 */
const LOG_NAMES = `
local raw, jsonValue, jsonObject, logRecord, logIdAfter, dispatchedThrough, appendLog, expectLog
`;

/**
 * The result log's helpers. Each `function name(…)` assigns the local {@linkcode LOG_NAMES}
 * declares, so a script that defines them inside a block (only where it logs) sees them after it.
 */
const LOG_LUA = logBoundsLine(MAX_LOG_ENTRIES, MAX_LOG_BACKLOG) + `
local LOG_KEY = P .. ${luaString(STREAM_KEYS.log)}
local HOLD_KEY = P .. "dispatched"
-- Log records are JSON built here, not by cjson.encode, which keeps only 14
-- significant digits: numbers go in as %.17g text, so integer sums stay exact up to 2^53.
-- A value is a number, a string, a boolean, nil (null) or raw(json): JSON text
-- taken as is (an event payload, a nested object).
function raw(json) return { json = json } end
function jsonValue(value)
  if value == nil then return "null" end
  local kind = type(value)
  if kind == "number" then return num(value) end
  if kind == "table" then return value.json end
  return cjson.encode(value)
end
-- A JSON object of name, value pairs, in the order given (names are plain words).
function jsonObject(...)
  local fields, parts = { ... }, {}
  for i = 1, select("#", ...), 2 do
    parts[#parts + 1] = '"' .. fields[i] .. '":' .. jsonValue(fields[i + 1])
  end
  return "{" .. table.concat(parts, ",") .. "}"
end
-- A result-log record: its type, then its fields as name, value pairs.
function logRecord(recordType, ...) return jsonObject("type", recordType, ...) end
-- Whether log id a is after log id b (both <ms>-<seq>).
function logIdAfter(a, b)
  local am, as = string.match(a, "^(%d+)-(%d+)$")
  local bm, bs = string.match(b, "^(%d+)-(%d+)$")
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then return am > bm end
  return tonumber(as) > tonumber(bs)
end
-- The id the webhook dispatch took the log through (false: no dispatch holds it), read once.
local logHold = nil
function dispatchedThrough()
  if logHold == nil then logHold = redis.call("HGET", HOLD_KEY, "m") end
  return logHold
end
-- The log's length while a hold keeps it whole: read once a call (XLEN), then counted here.
local logLength = nil
-- Where a log that does not exist yet starts (nil: not looked for, false: anywhere): after the
-- newest id of the log of the stream's latest earlier incarnation that has one, so that an
-- incarnation created again within that id's millisecond, or after the server's clock stepped
-- back, gives none of the old log's ids out again. Webhook message ids and the
-- dispatch cursor are made of log ids: met again, its results would be taken for those sent.
-- expectLog sets false for a log with entries; appendLog looks for the rest at the first entry,
-- so a call that logs nothing (a batch with no late event to log) reads no earlier log.
local logFloor = nil
local function earlierLogId()
  local base, generation = string.match(P, "^(.*}:)g(%d+):$")
  if not base then return false end
  generation = tonumber(generation)
  for g = generation - 1, math.max(0, generation - ${EARLIER_LOG_GENERATIONS}), -1 do
    local key = base .. (g == 0 and "" or "g" .. num(g) .. ":") .. ${luaString(STREAM_KEYS.log)}
    local newest = redis.pcall("XREVRANGE", key, "+", "-", "COUNT", 1)
    -- (A key of another type is no log: passed over. A log is never trimmed empty.)
    if not newest.err and newest[1] then return newest[1][1] end
  end
  return false
end
-- The id of a log's first entry after logFloor: as XADD * would give it (the server's clock), or
-- the id after logFloor when the clock is not past it.
local function firstLogId()
  local ms, seq = string.match(logFloor, "^(%d+)-(%d+)$")
  local time = redis.call("TIME")
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  if now > tonumber(ms) then return num(now) .. "-0" end
  if #seq > 15 then return num(tonumber(ms) + 1) .. "-0" end
  return ms .. "-" .. num(tonumber(seq) + 1)
end
-- Appends a record: without a hold the log keeps about its newest LOG_RETAIN entries; with one,
-- at most LOG_MAX, counting in the hold's "lost" each entry past it trimmed undispatched.
function appendLog(recordJson, ttl)
  local mark = dispatchedThrough()
  local id = "*"
  if logFloor == nil then logFloor = redis.call("EXISTS", LOG_KEY) == 0 and earlierLogId() end
  if logFloor then
    id = firstLogId()
    logFloor = false
  end
  if not mark then
    redis.call("XADD", LOG_KEY, "MAXLEN", "~", LOG_RETAIN, id, "r", recordJson)
  else
    redis.call("XADD", LOG_KEY, id, "r", recordJson)
    if logLength == nil then logLength = redis.call("XLEN", LOG_KEY) else logLength = logLength + 1 end
    if logLength > LOG_MAX then
      logLength = LOG_MAX
      local oldest = redis.call("XRANGE", LOG_KEY, "-", "+", "COUNT", 1)[1][1]
      if logIdAfter(oldest, mark) then redis.call("HINCRBY", HOLD_KEY, "lost", 1) end
      redis.call("XTRIM", LOG_KEY, "MAXLEN", LOG_MAX)
    end
  end
  redis.call("PEXPIRE", LOG_KEY, ttl)
end
-- The result log as XADD * takes it: a stream whose entry ids are not used up; and its dispatch
-- hold as appendLog reads and adds to it: a hash (or none) whose mark is a log id and whose
-- \`lost\` HINCRBY adds to (read here once for appendLog, as dispatchedThrough would).
function expectLog()
  local last = redis.pcall("XREVRANGE", LOG_KEY, "+", "-", "COUNT", 1)
  if last.err then refuseKey(LOG_KEY, "a " .. redis.call("TYPE", LOG_KEY).ok, "a stream") end
  if last[1] and last[1][1] == "18446744073709551615-18446744073709551615" then
    refuseKey(LOG_KEY, "a stream whose entry ids are used up", "a stream")
  end
  if last[1] then logFloor = false end
  if logHold ~= nil then return end
  local hold = redis.pcall("HMGET", HOLD_KEY, "m", "lost")
  if hold.err then refuseKey(HOLD_KEY, "a " .. redis.call("TYPE", HOLD_KEY).ok, "a hash") end
  if hold[1] and not string.match(hold[1], "^%d+%-%d+$") then
    refuseKey(HOLD_KEY .. " field m", "'" .. string.sub(hold[1], 1, 200) .. "'", "a log id")
  end
  if hold[2] and not isIntegerText(hold[2]) then
    refuseKey(HOLD_KEY .. " field lost", "'" .. string.sub(hold[2], 1, 200) .. "'", "a number it adds to")
  end
  logHold = hold[1] or false
end
`;

/** Keys of alert markers, for the scripts that fire and close (not the apply script). */
const ALERT_KEYS_LUA = `
local function alertKey(alert, counter, start, group)
  return P .. "alert:" .. alert .. ":" .. counter .. ":" .. num(start) .. ":" .. group
end
local function alertedKey(counter) return P .. "alerted:" .. counter end
`;

/** The prelude of the window store's scripts but the apply script. */
const COMMON = PRELUDE + LUA_READ_KEY + LOG_NAMES + LOG_LUA + ALERT_KEYS_LUA;

/**
 * The reply of a read script (`readReply(rows)`): JSON of its rows, or with `args.stats` (see
 * `ReadOptions.stats`) `{"r": rows, "s": [wm, cl, dv]}`, the stats fields a read judges finality
 * by (text, `""` when absent), read in the same script as the rows.
 */
const READ_REPLY_LUA = `
local readStats = nil
if args.stats then readStats = readKey("hash", "HMGET", STATS_KEY, "wm", "cl", "dv") end
local function readReply(rows)
  if not readStats then return cjson.encode(rows) end
  return cjson.encode({ r = rows, s = { readStats[1] or "", readStats[2] or "", readStats[3] or "" } })
end
`;

/**
 * Reading windows: merging panes into cells and cells into reply rows, for the read and close
 * scripts only (each helper is a closure made on every call of a script that holds it).
 */
const MERGE_LUA = `
-- A merged cell: {group, count, sum, extreme (min or max; nil when none), distinct, panes (those
-- that count it)}.
local function newCell(group) return { group = group, count = 0, sum = 0, distinct = 0, panes = {} } end
-- Adds one pane field's value (kindChar: the field's first letter) to a cell.
local function addField(cell, kind, kindChar, value, pane)
  if kindChar == "c" then
    cell.count = cell.count + value
    cell.panes[#cell.panes + 1] = pane
  elseif kindChar == "s" then
    cell.sum = cell.sum + value
  elseif kindChar == "m" then
    local extreme = cell.extreme
    if extreme == nil or (kind == "min" and value < extreme) or (kind == "max" and value > extreme) then
      cell.extreme = value
    end
  elseif kindChar == "n" then
    if cell.extreme == nil or value < cell.extreme then cell.extreme = value end
  elseif kindChar == "x" then
    if cell.high == nil or value > cell.high then cell.high = value end
  end
end
-- Merges the HyperLogLogs (distinct) or sketches (quantiles) of the cells' panes into them.
local function finishCells(name, kind, order)
  if kind == "distinct" then
    for _, cell in ipairs(order) do
      if #cell.panes > 0 then
        local keys = {}
        for i, pane in ipairs(cell.panes) do keys[i] = hllKey(name, num(pane), cell.group) end
        cell.distinct = redis.call("PFCOUNT", unpack(keys))
      end
    end
  end
  if kind == "quantiles" then
    -- Merging sketches is adding their bucket counts.
    for _, cell in ipairs(order) do
      local bins, names = {}, {}
      for _, pane in ipairs(cell.panes) do
        local flat = redis.call("HGETALL", quantileKey(name, num(pane), cell.group))
        for i = 1, #flat, 2 do
          local bin = flat[i]
          if bins[bin] == nil then
            bins[bin] = 0
            names[#names + 1] = bin
          end
          bins[bin] = bins[bin] + tonumber(flat[i + 1])
        end
      end
      cell.bins, cell.binNames = bins, names
    end
  end
end
-- Reads and merges panes into one cell per group, in first-seen group order.
local function mergePanes(name, kind, panes)
  local byGroup, order = {}, {}
  for _, pane in ipairs(panes) do
    local flat = redis.call("HGETALL", paneKey(name, num(pane)))
    for i = 1, #flat, 2 do
      local field, value = flat[i], tonumber(flat[i + 1])
      local group = string.sub(field, 3)
      local cell = byGroup[group]
      if not cell then
        cell = newCell(group)
        byGroup[group] = cell
        order[#order + 1] = cell
      end
      addField(cell, kind, string.sub(field, 1, 1), value, pane)
    end
  end
  finishCells(name, kind, order)
  return order
end
-- The pane fields a group has, by kind (see addField).
local GROUP_FIELDS = {
  count = { "c" }, distinct = { "c" }, sum = { "c", "s" }, avg = { "c", "s" }, min = { "c", "m" },
  max = { "c", "m" }, quantiles = { "c", "n", "x" },
}
-- Reads and merges only these groups over panes, one cell each in this order: a pane's fields of
-- 200 groups (by kind) in one HMGET. \`counts\` (group → its count field's value), when the caller
-- read them already, spares the reads of a single pane whose groups have no other field.
local function mergeGroups(name, kind, panes, groups, counts)
  local order, kindChars = {}, GROUP_FIELDS[kind] or GROUP_FIELDS.quantiles
  for i, group in ipairs(groups) do order[i] = newCell(group) end
  if counts and #panes == 1 and #kindChars == 1 then
    for _, cell in ipairs(order) do addField(cell, kind, "c", tonumber(counts[cell.group]), panes[1]) end
  else
    local per = #kindChars
    for _, pane in ipairs(panes) do
      local key = paneKey(name, num(pane))
      for first = 1, #order, 200 do
        local last, fields = math.min(first + 199, #order), {}
        for i = first, last do
          for _, kindChar in ipairs(kindChars) do fields[#fields + 1] = kindChar .. ":" .. order[i].group end
        end
        local values = redis.call("HMGET", key, unpack(fields))
        for i = first, last do
          local at = (i - first) * per
          for j, kindChar in ipairs(kindChars) do
            local value = values[at + j]
            if value then addField(order[i], kind, kindChar, tonumber(value), pane) end
          end
        end
      end
    end
  end
  finishCells(name, kind, order)
  return order
end
-- A quantiles cell's buckets as a flat list {bin, count, …}, counts as text.
local function binsFlat(cell)
  local flat = {}
  for _, bin in ipairs(cell.binNames) do
    flat[#flat + 1] = bin
    flat[#flat + 1] = num(cell.bins[bin])
  end
  return flat
end
-- A quantiles cell's buckets as a JSON object (bucket names are plain words).
local function binsJson(cell)
  local parts = {}
  for _, bin in ipairs(cell.binNames) do parts[#parts + 1] = '"' .. bin .. '":' .. num(cell.bins[bin]) end
  return "{" .. table.concat(parts, ",") .. "}"
end
-- A merged cell as the reply row the store reads: [group, count, sum, minOrMax, distinct],
-- numbers as text, "" for no min or max; a quantiles cell adds [max, {bin, count, …}]
-- (its min in minOrMax).
local function rowText(cell)
  local extreme = cell.extreme
  local row = { cell.group, num(cell.count), num(cell.sum), extreme and num(extreme) or "", num(cell.distinct) }
  if cell.bins then
    row[6] = cell.high and num(cell.high) or ""
    row[7] = binsFlat(cell)
  end
  return row
end
`;

/**
 * Applies one ingest batch. Three arguments (one for a single event), so the common case decodes
 * one:
 * - ARGV[1], JSON: the fields below as an array in the order of {@linkcode APPLY_FIELDS} (named
 *   here as an object for reading; absent ones `false`, or left out after the last present),
 *   `{tk, now, late, dv?, idle?, dttl, reqs?: [request, …], gen?, rec?,
 *   statsTtl?, sl?, logp?, logl?, logw?, counters: [name, kind, ttl, …, cl] (three values a
 *   counter, flat, then cl: the JSON text of [maxGroups, hop, size, …], three a counter, decoded
 *   only when a group or pane is new), ids: [id|false, …] (for a single event `id: id|false`
 *   instead), uq?: true when no id is in `ids` twice (absent for fewer than two events: none is),
 *   tmin?, tmax?, payloads?: [json|false, …], sess?: [[counterIndex, gap, maxSessions], …],
 *   cells | one}`: `ids` and `payloads` one entry per event; `tk`, `gen` and `rec`: see below;
 *   `dv`: the definition version the batch was built for, absent when its caller gives none;
 *   `sess`: the stream's session counters, absent for none; `tmin`, `tmax`: the earliest and
 *   latest event time, `tmin` absent when it is `tmax`; flags absent for false, `gen` for 0,
 *   `statsTtl` for {@linkcode DEFAULT_STATS_TTL_MS}, `reqs` for one request of every event with
 *   nothing but `n` (a field fewer is a value less to decode: a plain single event sends 8
 *   values, `tk`, `now`, `late`, `dttl`, `counters`, `tmax`, `id` and `one`, from a RedisStore
 *   used alone; through the registry's store with the definitions in this Redis, `dv` and `rec`
 *   too, and `gen` for a stream created through the API (generation 1 or more): 11, `idle` and
 *   `sl` further on where given; measured figures in docs/benchmarks.md, 2026-12-07); and per
 *   request `{n, f?, x?, ik?, ib?, ir?, it?, rls?}`:
 *   its event, filtered and rejected counts (absent for 0), its idempotency claim (key hash, body
 *   hash, reply, ttl) and its rate limits `[[bucket, limit, window ms, cost], …]`; `sl`, the
 *   stats' life (ms) where a counter's TTL is longer than `statsTtl` (absent else: `statsTtl`);
 *   `cells`, the batch pre-aggregated in the process as if every event
 *   applies: `[[counterIndex, pane, group, count, sum, min|false, max|false, [value, …],
 *   {bin: count}?], …]` (the bucket counts for quantiles counters), each cut after the
 *   last field its counter's kind reads; a distinct cell's single value, when not empty, bare
 *   rather than `[value]` (a window counter's only: session cells come as they are); or, for a
 *   single event whose cells it can say (no session or quantiles counter), `one` instead:
 *   `[pane, group, value|false (not for a count) | false, …]`, per counter in order its one
 *   cell's pane, group and value, or false for none (the count 1; see singleEventCells in
 *   store.ts).
 * - ARGV[2], JSON: each event's own updates, decoded only when some event turns out duplicate
 *   or late and the cells must be rebuilt without it: `[[update, …], …]`, an update
 *   `[counterIndex, pane, group, value?, bin?]` when the stream has session counters (`sess`),
 *   else `cellIndex` or `[cellIndex, value, bin?]`, its cell's position (0-based) in `cells`.
 * - ARGV[3], JSON: each event's time `[ms, …]`, decoded only when some event may be late, is
 *   not applied, or is logged.
 *
 * A call of one event (or none) sends ARGV[1] alone: its time is `tmax`, and not applied it adds
 * nothing (Redis makes each argument a Lua string, ~2k instructions or more each).
 *
 * Dedupe ids live in hashes per TTL-wide time bucket (`ids:<bucket>`); an id
 * is a duplicate while it is in the current or the previous bucket, so it is
 * remembered for at least the TTL and at most twice that, at one hash field
 * per id instead of one key. After a change of TTL (a new definition, or another instance's
 * config) the buckets of the TTL before are still asked until their time is up, as if it were
 * still in force, so an id is held for the TTL in force when it was sent: the stats field `dk`
 * says which (see dedupeBuckets), read with the stats, so a call asks nothing more while the
 * TTL stays. The bucket keys are named as in the releases before (the name has no TTL), so an
 * instance of the release before, in a rolling deploy, reads and writes the same keys while the
 * TTL stays; it neither reads nor writes `dk`.
 *
 * Stored replies live at `idem:<key hash>` (hash: body hash, reply, duplicates, late, and `p`,
 * its index entry's number; expiring with the claim's ttl), indexed in the order they were kept by
 * `replies` (list of "<key hash> <size> <expires at> <number>"; their total in the stats' `ri`), so
 * that past `rmax` bytes
 * (`RedisStoreOptions.maxReplyBytes`, absent for `DEFAULT_MAX_REPLY_BYTES`) the oldest are
 * deleted and counted in the stats' `repliesForgotten` (see the script); rate-limit buckets at
 * `rl:<bucket>` (tokens, updated ms; expiring when full again): all in the stream's hash slot.
 *
 * `tk` in ARGV[1], when given, is the call's one-time token: a call whose token was seen within
 * 60 s (`CALL_REPLY_TTL_MS`) returns the reply that one returned, applying nothing.
 *
 * KEYS[2] is the stream's definition record (`<prefix>:{<stream>}:def`, see
 * `definition_store.ts`): its version `v` is returned as `v` (0 when there is none). When the
 * record says the stream was deleted, or names another generation than `gen` in ARGV[1], the call
 * writes nothing and returns `{"gone": 1, "v": version}`; so it does, with version 0, when `rec` in
 * ARGV[1] says the record was written (the definitions live here) and it is missing.
 *
 * Returns JSON `{"o": "<one digit per event: 0 applied, 1 duplicate, 2 late, 3 skipped>",
 * "wm": "<ms>", "d": [type, …], "r": [result, …], "v": version, "f"?: forgotten}`, `f` the
 * stored replies this call forgot before their TTL (absent for none), `d` naming the log record
 * types live subscribers want now, and per request `[0, duplicates, late]` applied,
 * `[1, reply, duplicates, late]` replayed, `[2]` conflict, `[3, retryAfterMs, bucket index
 * (0-based), whole tokens left]` rate limited,
 * `[4]` its key earlier in the batch.
 */
export const APPLY_SCRIPT = PRELUDE + LOG_NAMES + LUA_REFILL_FROM + `
-- The same call sent again (its token seen): the first one's reply, nothing applied again.
local callKey, first = callReply(${arg("tk")})
if first then return first end
-- ARGV[1] is an array (see APPLY_FIELDS in _scripts.ts); the session helpers, shared with the
-- close script, read \`args.sess\`: set only for a stream with session counters.
if ${arg("sess")} then args.sess = ${arg("sess")} end
-- The session helpers are closures made on every call: only for a stream with session counters.
local withSessions, guardSessions = nil, nil
if type(args.sess) == "table" then
` + SESSION_LUA + `
withSessions, guardSessions = applySessions, checkSessionKeys
end
local now, lateness, idle, dedupeTtl = ${arg("now")}, ${arg("late")}, ${arg("idle")}, ${arg("dttl")}
local statsTtl, logProcessed, logLate = ${arg("statsTtl")} or ${DEFAULT_STATS_TTL_MS}, ${
  arg("logp")
}, ${arg("logl")}
-- The stats' life: statsTtl, or (\`sl\`) a counter's TTL where that is longer, so the watermark and
-- \`cl\` outlive the windows they say are final.
local statsLife = ${arg("sl")} or statsTtl
-- Live subscribers' demand (any instance): read once, for the reply and, with logw (the caller
-- cannot tell whether a subscriber wants its events), for what to log.
-- The types wanted now: a table only when some are (nil for none).
local demand = nil
local wanted = redis.call("HGETALL", DEMAND_KEY)
for i = 1, #wanted, 2 do
  if tonumber(wanted[i + 1]) > now then
    demand = demand or {}
    demand[#demand + 1] = wanted[i]
  end
end
if ${arg("logw")} then
  local asked = {}
  for _, recordType in ipairs(demand or {}) do asked[recordType] = true end
  logProcessed = logProcessed and asked["event.processed"] == true
  logLate = logLate and asked["event.late"] == true
end
-- The stream's definition version (KEYS[2], outside every generation, same slot):
-- an instance holding an older one reloads the definition.
local definitionVersion = 0
if KEYS[2] then
  local record = redis.call("HMGET", KEYS[2], "v", "g", "x", "a")
  definitionVersion = tonumber(record[1]) or 0
  -- \`a\`, read when the batch says its version: a version as the definition store's write puts it
  -- there (digits, no leading zero); text no write makes is refused naming the field, as the stats'
  -- \`wm\` and \`cl\` are, rather than fail the comparison below or be taken as none (a batch
  -- lacking the counters it names applied). Nothing was written yet.
  local addedIn = nil
  if ${arg("dv")} and record[4] then
    if not isVersionText(record[4]) then
      refuseKey(KEYS[2] .. " field a", "'" .. string.sub(record[4], 1, 200) .. "'", "a definition version")
    end
    addedIn = tonumber(record[4])
  end
  -- The stream deleted, or created again (another generation), since the caller read it, or its
  -- record missing (definitionGone: the version is then 0): what this call wrote would count
  -- nowhere. Or built on a definition (\`dv\`) older than an API write that added counters (\`a\`,
  -- see the definition store's write): it lacks them, and their partial-window bounds are behind
  -- the events it holds. Nothing was written yet (above: reads only).
  if definitionGone(record, ${arg("gen")}, ${arg("rec")}) or (record[1] and addedIn and ${
  arg("dv")
} < addedIn) then
    return cjson.encode({ gone = 1, v = definitionVersion })
  end
end
-- ids: per event its dedupe id (a string), or false for none; a single event's comes bare as
-- \`id\` instead (cjson grows each array from empty: ~1.5k instructions for one value).
local ids, payloads = ${arg("ids")}, ${arg("payloads")}
if not ids then ids = { ${arg("id")} or false } end
local eventCount = #ids
-- Arrays a call fills one value after another are made with room for 8 (a constructor of nils):
-- one grown from empty is rehashed at its 1st, 2nd, 3rd and 5th values (~1k instructions each).
-- (Filled from 1 without a gap, # and unpack see the values set, as in any array.)
local counters = { nil, nil, nil, nil, nil, nil, nil, nil }
-- Three values per counter, in one array (a table fewer per counter to decode); its maxGroups, hop
-- and size come with limitsOf, from the text after them (cl).
local flat = ${arg("counters")}
for i = 1, (#flat - 1) / 3 do
  local at = (i - 1) * 3
  counters[i] = { name = flat[at + 1], kind = flat[at + 2], ttl = flat[at + 3], maxGroups = nil, hop = nil,
    size = nil }
end
-- A single event's cells may come as \`one\` instead of \`cells\` (see singleEventCells in store.ts):
-- per counter in order, false when the event adds to none of its cells, else its pane, its group
-- and, but for a count, the event's value (false for none); made here into the cells \`cells\`
-- holds (a count of 1), each with a constructor of its size (cjson grows each array from empty).
local sentCells = ${arg("cells")}
-- Whether the cells came as \`one\`: a single event's, one a counter at most, so each pane is one
-- cell's, and no pane record is looked up by its key or by itself (see paneByKey and byPane).
local cellsFromOne = not sentCells
if cellsFromOne then
  local one, made, at = ${arg("one")}, { nil, nil, nil, nil, nil, nil, nil, nil }, 1
  for i = 1, #counters do
    local pane = one[at]
    if pane == false then
      at = at + 1
    else
      local kind, group, value = counters[i].kind, one[at + 1], one[at + 2]
      if kind == "count" then
        made[#made + 1] = { i - 1, pane, group, 1 }
        at = at + 2
      else
        if kind == "sum" or kind == "avg" then
          made[#made + 1] = { i - 1, pane, group, 1, value }
        elseif kind == "distinct" then
          -- A text (never empty) is its one value, as in \`cells\`; none is an empty array.
          if value == false then value = {} end
          made[#made + 1] = { i - 1, pane, group, 1, 0, false, false, value }
        else
          -- min or max: the one value is both, and the sum (which they do not read).
          made[#made + 1] = { i - 1, pane, group, 1, value or 0, value, value }
        end
        at = at + 3
      end
    end
  end
  sentCells = made
end
-- A counter with its maxGroups, hop and size, which only a group new in a pane or a new pane asks:
-- cl, the last value of the counters sent, the JSON text of [maxGroups, hop, size, …] (three a
-- counter), decoded only then (each JSON value is work for every call that decodes it).
local limitsRead = false
local function limitsOf(counter)
  if not limitsRead then
    limitsRead = true
    local limits = cjson.decode(flat[#flat])
    for i = 1, #counters do
      local at = (i - 1) * 3
      counters[i].maxGroups, counters[i].hop, counters[i].size = limits[at + 1], limits[at + 2], limits[at + 3]
    end
  end
  return counter
end

-- The stats are read once here and written with one HSET at the end. With them, per counter,
-- \`k:<counter>\`: "<pane> <expiresAt>" of the newest pane whose expiry an apply set or read, so
-- a write to that pane asks Redis nothing to know it is live and not due (see the panes below).
-- \`cl\`: the latest end (a session's: end + gap) a close claimed; an event before it is late
-- whatever the lateness is now, so a raised lateness re-opens no window or session that closed.
-- \`duplicates\` and \`late\` are not asked here: only a call with a duplicate or a late event adds
-- to them, and it reads them once its events' outcomes are known (below).
-- (Room for 16, as the arrays above: the 5 names here, then 8 more for 4 counters with requests.)
local statsAsked = { "wm", "exp", "accepted", "applied", "cl", nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
  nil }
local counterCount = #counters
for i = 1, counterCount do statsAsked[5 + i] = "k:" .. counters[i].name end
-- The dedupe TTLs whose buckets are asked (see dedupeBuckets).
statsAsked[6 + counterCount] = "dk"
-- \`db\`: "<ttl>:<bucket>" of the newest dedupe bucket this release's one-id write found marked
-- (see IDS_MARK below).
statsAsked[7 + counterCount] = "db"
-- The counts only requests (\`reqs\`) add to, asked (and checked) only then: each field an HMGET
-- asks is ~1.8k instructions (a single event's call asks 11 without them).
if ${arg("reqs")} then
  statsAsked[8 + counterCount] = "filtered"
  statsAsked[9 + counterCount] = "rejected"
end
-- The sessions counted past a session counter's maxSessions, added to with HINCRBY: asked only to
-- check them (see refuseKey). A window counter's groups past maxGroups are checked only when a
-- group is new in a pane (below), the only time they may be added to.
if type(args.sess) == "table" then
  for _, session in ipairs(args.sess) do
    statsAsked[#statsAsked + 1] = "overflow:" .. counters[session[1] + 1].name
  end
end
-- The counts checked: those asked so far (the reply index's fields below only save a command).
local countsAsked = #statsAsked
-- A call that may keep an Idempotency-Key reply asks the reply index's \`ri\` and, next to it,
-- \`repliesForgotten\`, checked only past the bound (see REPLIES_KEY below): no command of its own
-- there.
local replyStatsAt = nil
if ${arg("reqs")} then
  for _, request in ipairs(${arg("reqs")}) do
    if type(request.ik) == "string" then
      replyStatsAt = #statsAsked + 1
      statsAsked[replyStatsAt] = "ri"
      statsAsked[replyStatsAt + 1] = "repliesForgotten"
      break
    end
  end
end
local stored = redis.call("HMGET", STATS_KEY, unpack(statsAsked))
-- What the stats hold is checked before any write (see refuseKey): the counts this call adds to
-- (3 and 4, and from 8 + counterCount on: \`filtered\` and \`rejected\` where asked) and the sessions'
-- overflow counts, the watermark and \`cl\` (\`dk\` where read, in
-- dedupeBuckets). \`exp\`, \`k:<counter>\` and \`db\` only save a command: text this script did
-- not write is taken as none. (\`duplicates\` and \`late\` are checked where they are read, below.)
-- Those from \`cl\` to \`db\`, 5 to 7 + counterCount, are no counts: skipped.
do
  local at, asked = 3, countsAsked
  while at <= asked do
    if stored[at] and not isIntegerText(stored[at]) then
      refuseKey(STATS_KEY .. " field " .. statsAsked[at], "'" .. stored[at] .. "'", "a number it adds to")
    end
    at = at + 1
    if at == 5 then at = 8 + counterCount end
  end
end
local storedWm = expectStatsTime("wm", stored[1])
local closedThrough = expectStatsTime("cl", stored[5])
local wm = raiseToClock(storedWm, now, idle)
local statsExpireAt = tonumber(stored[2])
for i = 1, counterCount do
  local counter, known = counters[i], stored[5 + i]
  if known then
    -- A cache of the counter's last pane and its score in the live panes: text this script did
    -- not write (not a pane, a space and an expiry in digits as num() writes it) is as none, and
    -- is written anew below. One match, and the digits turned into a number once by arithmetic
    -- (tonumber reads a text twice); fewer than 25 of them are finite.
    local paneText, expiry = string.match(known, "^([^ ]+) (%-?%d+%.?%d*)$")
    if expiry and #expiry < 25 then
      counter.knownPane = paneText
      counter.knownExpiresAt = expiry + 0
    end
  end
end

-- Requests: each takes the next n events. One that is not admitted (its
-- stored reply, a conflict, its key earlier in this batch, the rate limit)
-- applies nothing and its events are skipped (outcome 3). Nothing here can
-- fail on what a request sent: keys and bodies arrive as hashes.
-- Absent (nil): one request of every event, none filtered or rejected, without a key or limits,
-- whose result is told by the counts below (no tables for it).
local requests = ${arg("reqs")}
-- Per request its result, events skipped (index → true) and rate-limit buckets charged: tables
-- only for \`reqs\`.
local results, skip, chargedBuckets = nil, nil, nil
local first = 1
-- Stored replies' and rate-limit buckets' keys, made (as the helpers below) only for \`reqs\`.
local replyKey, bucketKey
-- Admitted requests with a key (a table only when some are): their replies are kept.
local kept = nil
-- Without \`reqs\` every event's one request is admitted: nothing to ask, no helpers to make.
if requests then
  function replyKey(keyHash) return P .. "idem:" .. keyHash end
  function bucketKey(name) return P .. "rl:" .. name end
  results, skip, chargedBuckets = {}, {}, {}
  local keysInBatch = {}
  -- Rate-limit buckets, each read once and written once, after every check (see refuseKey):
  -- { t = tokens, u = updated ms } as stored, then as charged by the requests admitted so far.
  local buckets = {}
  local function finite(x) return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge end
  local function bucketOf(name)
    local bucket = buckets[name]
    if not bucket then
      local stored = redis.call("HMGET", bucketKey(name), "t", "u")
      local t, u = tonumber(stored[1]), tonumber(stored[2])
      -- What this script never writes (something else did) is a full bucket: no lockout, no error.
      if not (finite(t) and finite(u)) or t < 0 then t, u = nil, nil end
      bucket = { name = name, t = t, u = u }
      buckets[name] = bucket
    end
    return bucket
  end
  local function admit(request)
    local keyHash = request.ik
    if type(keyHash) == "string" then
      local stored = redis.call("HMGET", replyKey(keyHash), "b", "r", "d", "l")
      if stored[1] then
        if stored[1] ~= request.ib then return { 2 } end
        return { 1, stored[2], tonumber(stored[3]), tonumber(stored[4]) }
      end
      if keysInBatch[keyHash] then return { 4 } end
      keysInBatch[keyHash] = true
    end
    -- Every bucket is refilled and checked before any is charged, so a request
    -- one bucket refuses takes nothing from the others.
    local claims = request.rls
    if type(claims) == "table" and #claims > 0 then
      -- Of the buckets short of the cost, the one that takes longest to hold it: the request fits
      -- only then, so that is the wait it is told.
      local levels, refused, longest = {}, nil, -1
      for c, claim in ipairs(claims) do
        local limit, window, cost = claim[2], claim[3], claim[4]
        local perMs = limit / window
        local bucket = bucketOf(claim[1])
        local tokens = limit
        -- Refilled for the time since its update, none when that is "later" than now (written by
        -- an instance whose clock is ahead): a clock behind never takes tokens away.
        -- It refills next from that update when it is ahead of now by at most the bucket's window,
        -- else from now (refillFrom, LUA_REFILL_FROM).
        local from = now
        if bucket.t then
          tokens = math.min(limit, bucket.t + perMs * math.max(0, now - bucket.u))
          from = refillFrom(now, bucket.u, window)
        end
        levels[c] = { tokens = tokens, perMs = perMs, bucket = bucket, from = from }
        local wait = (cost - tokens) / perMs + (from - now)
        if tokens < cost and wait > longest then refused, longest = c, wait end
      end
      for c, claim in ipairs(claims) do
        local level = levels[c]
        local bucket = level.bucket
        bucket.t, bucket.u, bucket.limit, bucket.perMs = level.tokens, level.from, claim[2], level.perMs
        if not refused then bucket.t = bucket.t - claim[4] end
        if not bucket.charged then
          bucket.charged = true
          chargedBuckets[#chargedBuckets + 1] = bucket
        end
      end
      if refused then
        local level = levels[refused]
        return { 3, math.ceil(longest), refused - 1, math.floor(level.tokens) }
      end
    end
    return nil
  end
  for r, request in ipairs(requests) do
    local verdict = admit(request)
    if verdict then
      results[r] = verdict
      for i = first, first + request.n - 1 do skip[i] = true end
    elseif type(request.ik) == "string" then
      -- Admitted with a key: it applies, and its reply is kept (below).
      kept = kept or {}
      kept[#kept + 1] = request
    end
    first = first + request.n
  end
end
-- The stream's stored replies are bounded (\`rmax\` bytes, as the memory store's maxReplyBytes counts
-- them: 128 + the key's and body's hashes and the reply, here in bytes). \`replies\`: a list of the
-- replies this release kept, in the order kept, each "<key hash> <size> <expires at> <number>"
-- (ms, the callers' clock; the number counts the entries made, the reply holding its entry's in
-- \`p\`); the stats' \`ri\`: "<total size> <last number> <when (ms) the list expires at the
-- earliest>", one field the stats' HMGET and HSET carry anyway, so the list's life is asked and
-- extended only when due. A key kept again (its reply gone) gets an entry of its own, its old one
-- counted until dropped; dropping it never deletes the new reply (its \`p\` differs). Read only by
-- a call that keeps a reply, here, before any write (see refuseKey): the oldest (one more than are
-- kept, so the sweep keeps pace with the replies that expire, at one TTL in the order kept; those
-- past it count until the bound forgets them), those of them expired first in the list dropped
-- uncounted, and whether the total goes past the bound, so that the stats' \`repliesForgotten\` is
-- checked too. (Replies kept by a release before, which has no index, are not counted: they
-- expire by their TTL.)
local REPLIES_KEY = P .. "replies"
-- An entry's key hash, size, expiry and number (text this script did not write: none, 0, 0).
local function replyEntry(member)
  local keyHash, size, expiresAt, number = string.match(member, "^(%S+) (%d+) (%-?%d+) (%d+)$")
  return keyHash, tonumber(size) or 0, tonumber(expiresAt) or 0, number
end
local book = nil
if kept then
  local oldest = redis.pcall("LRANGE", REPLIES_KEY, 0, #kept)
  if oldest.err then refuseKey(REPLIES_KEY, "a " .. redis.call("TYPE", REPLIES_KEY).ok, "a list") end
  -- The stats' ri: text this script did not write is taken as none (0 0 0).
  local total, last, indexUntil = string.match(stored[replyStatsAt] or "", "^(%d+) (%d+) (%d+)$")
  -- No \`ri\` while the list holds entries (the stats expired first, as a release before this one let
  -- them: see writeStats below): their sizes and numbers unknown, the list is deleted (with the
  -- writes) and counting starts again (its entries' replies expired by then, as the stats outlive
  -- them; any not are kept until their TTL, uncounted), so that dropping them later takes nothing
  -- off the new total.
  local reset = total == nil and #oldest > 0
  if reset then oldest = {} end
  total, last, indexUntil = tonumber(total) or 0, tonumber(last) or 0, tonumber(indexUntil) or 0
  -- None indexed (none kept yet, expired, or deleted): the total starts again.
  if #oldest == 0 then total = 0 end
  -- The expired first in the list: their entries dropped (Redis deleted their replies by their TTL).
  local expired = 0
  for _, member in ipairs(oldest) do
    local _, size, expiresAt = replyEntry(member)
    if expiresAt > now then break end
    expired = expired + 1
    total = total - size
  end
  local life, entries = 0, {}
  for _, request in ipairs(kept) do
    local size = 128 + #request.ik + #request.ib + #request.ir
    total = total + size
    life = math.max(life, request.it)
    last = last + 1
    request.ip = num(last)
    entries[#entries + 1] = request.ik .. " " .. num(size) .. " " .. num(now + request.it) .. " " .. request.ip
  end
  local max = ${arg("rmax")} or ${DEFAULT_MAX_REPLY_BYTES}
  -- The stats outlive the replies kept (their \`ri\` counts them while they are indexed).
  if life > statsLife then statsLife = life end
  book = { total = math.max(0, total), last = last, max = max, reset = reset,
    life = life, expired = expired, entries = entries, forgotten = nil, now = 0,
    -- The list may hold none once the expired are dropped (all of it was read): a new one's life is
    -- set whatever \`ri\` says.
    emptied = #oldest <= #kept and expired == #oldest, indexUntil = indexUntil }
  if book.total > book.max then
    local count = stored[replyStatsAt + 1]
    if count and not isIntegerText(count) then
      refuseKey(STATS_KEY .. " field repliesForgotten", "'" .. count .. "'", "a number it adds to")
    end
    book.forgotten = tonumber(count) or 0
  end
end

-- A pane start comes as its text in \`cells\` (so neither JSON nor this script turns it into a
-- number and back per cell), as a number from session runs and full updates.
local function paneTextOf(pane)
  if type(pane) == "string" then return pane end
  return num(pane)
end
-- Every key the writes below may touch is checked before the first (see refuseKey): the stats (and
-- session counters' overflow counts), the demand, stored replies, rate-limit buckets, the
-- definition and the call's token were read above; the dedupe ids' HSET is the first write, or
-- their buckets are read first; here the log, the panes (with the fields HINCRBY adds to), their
-- HyperLogLogs and sketches (with their buckets), and where a group is new in its pane the keys and
-- fields of the group it may overflow into and its counter's overflow count; and the counters' live
-- panes and open windows when a pane is new, due, or found empty (its keys evicted). Session
-- counters' keys are checked once their cells are known, below.
-- Records to log, appended once every key is checked: a table, and the log's helpers, made only
-- for a call that logs.
local logged = nil
if payloads and (logProcessed or logLate) then
` + LOG_LUA + `
  expectLog()
  logged = {}
end
-- The session counters (by position), a table only for a stream with some.
local sessionCounters = nil
if withSessions then
  sessionCounters = {}
  for _, session in ipairs(args.sess) do sessionCounters[session[1] + 1] = true end
end
-- The panes of window counters this call may write, by key, each made once (here, or by recordOf
-- below for one no cell here names): its key, text, start (a number, nil until asked: see
-- startOf), counter, expiry (its score in the counter's live panes, or from \`k:<counter>\`; nil
-- for none), whether it is new (none, or past) and whether its life is due to be extended; the
-- count and sum fields its cells add to, as read when checked (\`values\`, field → text); its
-- groups before this call, read here when some cell adds a group to it (\`before\`), and as the
-- writes below count them (\`groups\`); whether it is listed among the panes written (\`listed\`).
-- Its array part lists the fields the checks ask (countField and sumField, given for its first
-- cell, then those of its other cells): no table more per pane, none grown per cell.
-- (None for cells that came as \`one\`.)
local paneByKey = not cellsFromOne and {} or nil
local function paneRecord(counter, key, paneText, paneStart, countField, sumField)
  local expiresAt = counter.knownExpiresAt
  if counter.knownPane ~= paneText then
    expiresAt = tonumber(redis.call("ZSCORE", livePanesKey(counter.name), paneText))
  end
  local isNew = expiresAt == nil or expiresAt <= now
  -- Made with the fields every pane gets (two more, values and listed, fill its hash part); start,
  -- before and groups are added only when asked (a new group or pane).
  local pane = { countField, sumField, key = key, text = paneText, counter = counter,
    expiresAt = expiresAt, isNew = isNew, refresh = isNew or dueForRefresh(expiresAt, now, counter.ttl) }
  if type(paneStart) == "number" then pane.start = paneStart end
  if paneByKey then paneByKey[key] = pane end
  return pane
end
-- A pane's start as a number (its text turned into one only when asked).
local function startOf(pane)
  local start = pane.start
  if not start then
    start = tonumber(pane.text)
    pane.start = start
  end
  return start
end
-- Whether a HyperLogLog a cell adds to was there when checked (so has its PX): key → boolean.
local hllHeld = {}
-- Per cell of \`sentCells\` (by position, not of a session counter): its pane record and count field,
-- for the writes when they add those cells.
local cellPanes = { nil, nil, nil, nil, nil, nil, nil, nil }
local cellFields = { nil, nil, nil, nil, nil, nil, nil, nil }
local OTHER = ${luaString(OTHER_GROUP)}
-- A single event's plain call (no requests, nothing logged, no session counter, a pane per cell):
-- its count and distinct cells' panes are not read here to be checked. Their HINCRBYs, before
-- any other write but the id's, are the checks (see countedNew below): HINCRBY refuses a key that
-- is no hash and a field that is no integer, and its reply says whether the group is new in the
-- pane, which the checks of a new group below then follow. (Each read saved is a command.)
local countFirst = eventCount == 1 and not requests and not logged and not withSessions and
  #sentCells <= counterCount
do
  -- Tables only when a pane is due, new or gains a group (a plain call's panes are none of those).
  local zsetsDue, overflowChecked = nil, nil
  local argCells = sentCells
  -- With more cells than counters (a batch), per counter (by position) the pane of its last cell.
  local lastPanes = #argCells > counterCount and {} or nil
  for i = 1, #argCells do
    local cell = argCells[i]
    local counterAt = cell[1] + 1
    if not (sessionCounters and sessionCounters[counterAt]) then
      local counter = counters[counterAt]
      local paneText, group = paneTextOf(cell[2]), cell[3]
      local countField, sumField = "c:" .. group, nil
      local kind = counter.kind
      if kind == "sum" or kind == "avg" then sumField = "s:" .. group end
      -- The pane of the counter's cell before, when this one is in it too (most are: a batch's
      -- events are near in time), without making its key again.
      local pane, made = lastPanes and lastPanes[counterAt], false
      if not pane or pane.text ~= paneText then
        local key = paneKey(counter.name, paneText)
        if paneByKey then pane = paneByKey[key] end
        if not pane then
          pane, made = paneRecord(counter, key, paneText, cell[2], countField, sumField), true
          if pane.refresh then
            zsetsDue = zsetsDue or {}
            zsetsDue[counter.name] = true
          end
        end
      end
      if not made then
        pane[#pane + 1] = countField
        if sumField then pane[#pane + 1] = sumField end
        countFirst = false
      end
      cellPanes[i], cellFields[i] = pane, countField
      if lastPanes then lastPanes[counterAt] = pane end
    end
  end
  -- Each pane's fields, in the order its first cell came (not a count or distinct pane's counted
  -- first: its values stay nil).
  for i = 1, #argCells do
    local pane = cellPanes[i]
    if pane and not pane.values then
      local kind = pane.counter.kind
      if not (countFirst and (kind == "count" or kind == "distinct")) then
        pane.values = expectNumbers(pane.key, pane)
      end
    end
  end
  for i = 1, #argCells do
    local cell, pane, countField = argCells[i], cellPanes[i], cellFields[i]
    -- A pane counted first (see countFirst) has no values yet: its group's checks come then.
    if pane and pane.values then
      local counter, key, paneText = pane.counter, pane.key, pane.text
      local name, kind, group = counter.name, counter.kind, cell[3]
      -- A group new in its pane may pass maxGroups and go to OTHER's keys instead; and the pane's
      -- groups are counted now (the write would, later), an empty pane being new whatever its score.
      -- (A count of 0, which no apply writes, is taken as new too: HINCRBY would answer so.)
      local stored = pane.values[countField]
      local isNew = stored == nil or stored == "0"
      if isNew and pane.before == nil then
        pane.before = redis.call("HLEN", key) / fieldsPerGroup(kind)
        if pane.before == 0 then
          zsetsDue = zsetsDue or {}
          zsetsDue[name] = true
        end
        overflowChecked = overflowChecked or {}
        if not overflowChecked[name] then
          overflowChecked[name] = true
          local field = "overflow:" .. name
          local count = redis.call("HGET", STATS_KEY, field)
          if count and not isIntegerText(count) then
            refuseKey(STATS_KEY .. " field " .. field, "'" .. count .. "'", "a number it adds to")
          end
        end
        -- OTHER's fields, which a new group past maxGroups adds to: asked only now (mostly absent,
        -- an absent field is a walk through the whole hash when it is small).
        local otherFields = { "c:" .. OTHER }
        if kind == "sum" or kind == "avg" then otherFields[2] = "s:" .. OTHER end
        for field, value in pairs(expectNumbers(key, otherFields)) do pane.values[field] = value end
      end
      if kind == "distinct" then
        -- Its values: an array, or a single one bare (a text, never empty: see trimCells).
        if #cell[8] > 0 then
          local hll = hllKey(name, paneText, group)
          hllHeld[hll] = expectHll(hll)
          if isNew then
            hll = hllKey(name, paneText, OTHER)
            hllHeld[hll] = expectHll(hll)
          end
        end
      elseif kind == "quantiles" then
        local bins = {}
        for bin in pairs(cell[9]) do bins[#bins + 1] = bin end
        expectNumbers(quantileKey(name, paneText, group), bins)
        if isNew then expectNumbers(quantileKey(name, paneText, OTHER), bins) end
      end
    elseif pane and pane.counter.kind == "distinct" and #cell[8] > 0 then
      local hll = hllKey(pane.counter.name, pane.text, cell[3])
      hllHeld[hll] = expectHll(hll)
    end
  end
  if zsetsDue then
    for name in pairs(zsetsDue) do
      expectType(livePanesKey(name), "zset")
      expectType(openKey(name), "zset")
    end
  end
end

-- Per event its outcome when not 0 (see below): a table only when some event has one.
local outcomes = nil
local applied, duplicates, lates, skipped = 0, 0, 0, 0
-- The dedupe buckets: the current TTL's newer one (written) and older one, and the keys of
-- earlier TTLs' buckets whose time is not up (asked, never written).
-- The stats field \`dk\`: the TTL of the last apply, then per earlier TTL whose buckets are
-- still asked "<ttl>:<until ms>". It changes only with the TTL, and as entries run out.
-- Takes the field, the TTL's text and its current bucket (a number and as text); returns the
-- current and older buckets' keys, the earlier TTLs' (nil for none), and the field's new text (nil
-- when it stays).
-- Every TTL's buckets are named \`ids:<floor(now / ttl)>\`, without the TTL: two TTLs' buckets
-- have one name only when their numbers coincide (floor(now / a) = floor(now / b)), which needs
-- the TTLs nearly equal; then they are one key holding the same ids, asked once, with the PX
-- of the TTL that wrote it first: harmless.
local function dedupeBuckets(known, ttlText, bucket, bucketText)
  local current, older = P .. "ids:" .. bucketText, idsKey(bucket - 1)
  if known == ttlText then return current, older, nil, nil end
  -- A TTL's buckets are asked until the newer one it may have written ends (and TTL/8 more,
  -- as its key lives, for clocks that disagree).
  local function untilOf(ttl) return (math.floor(now / ttl) + 2) * ttl + math.ceil(ttl / 8) end
  -- At most DEDUPE_EARLIER_TTLS earlier TTLs, the latest first, each once: a stream whose TTL
  -- changes again and again (or a field written by something else) asks a bounded number of keys.
  local entries, listed = {}, {}
  local function list(ttl, untilMs)
    if #entries < ${DEDUPE_EARLIER_TTLS} and not listed[ttl] then
      listed[ttl] = true
      entries[#entries + 1] = { ttl, untilMs }
    end
  end
  -- No \`dk\`: a stream new to this release (the one before wrote none): nothing more to ask,
  -- its current TTL's buckets have the names they had.
  -- Text this script did not write (words other than "<ttl>", then "<ttl>:<until ms>", one space
  -- apart) is refused (see refuseKey; no write came before), not taken as none and written over:
  -- that would forget the ids of the TTLs it listed.
  if known then
    local first = true
    for word in string.gmatch(known .. " ", "([^ ]*) ") do
      local ttl, untilMs
      if first then
        first = false
        ttl = string.match(word, "^[1-9]%d*$")
        untilMs = ttl and untilOf(tonumber(ttl))
      else
        ttl, untilMs = string.match(word, "^([1-9]%d*):(%d+)$")
      end
      ttl, untilMs = tonumber(ttl), tonumber(untilMs)
      if not ttl then
        refuseKey(STATS_KEY .. " field dk", "'" .. string.sub(known, 1, 200) .. "'", "a list of dedupe TTLs")
      end
      -- The current TTL's own buckets are asked anyway (taken up again when it comes back).
      if untilMs > now and ttl ~= dedupeTtl then list(ttl, untilMs) end
    end
  end
  local keys, words = {}, { ttlText }
  local seen = { [current] = true, [older] = true }
  for _, entry in ipairs(entries) do
    local ttl = entry[1]
    local at = math.floor(now / ttl)
    for _, key in ipairs({ idsKey(at), idsKey(at - 1) }) do
      -- A name the current TTL's buckets (or another earlier TTL's) have already: asked once.
      if not seen[key] then
        seen[key] = true
        keys[#keys + 1] = key
      end
    end
    words[#words + 1] = num(ttl) .. ":" .. num(entry[2])
  end
  local text = table.concat(words, " ")
  if known and text == known then text = nil end
  return current, older, keys, text
end
local newIds, oldIds
-- The earlier TTLs' bucket keys (nil for none, the common case: no table).
local retiredIds, dedupeKeysText = nil, nil
-- \`db\`'s text for this bucket (see markedBucket below), made from the texts dedupeBuckets takes.
local bucketNoted = nil
if dedupeTtl > 0 then
  local ttlText, bucket = num(dedupeTtl), math.floor(now / dedupeTtl)
  local bucketText = num(bucket)
  bucketNoted = ttlText .. ":" .. bucketText
  newIds, oldIds, retiredIds, dedupeKeysText = dedupeBuckets(stored[6 + counterCount], ttlText, bucket, bucketText)
end
-- A field no id can be (ids are UTF-8, this byte never is): the bucket's PX is set, once, at its
-- first id. An id lives at least the TTL: it is asked while now is in its bucket or the next,
-- and the bucket lives until the end of the next, 2 × TTL from its start, and TTL/8 more for
-- instances whose clocks disagree (one that is behind still adds to a bucket that one ahead made).
local IDS_MARK = "\\255"
local idsMarked = false
-- Ids held already, asked with one HMGET per bucket and 500 ids rather than two calls an event.
-- freshIds: the new ids as HSET's field, value pairs. Both tables only when some id is held or
-- new to write with the batch's HSET (a single event's id is written on its own, below).
local heldIds, freshIds, distinctIds = nil, nil, ${arg("uq")} or eventCount < 2
-- One id (a single-event request): asked in the older bucket, then written to the newer one at
-- once, whose HSET answers whether the id was there (0 fields added) and whether the bucket was
-- new (2: the mark too). The id of an event that turns out late is kept as well, as below. Not
-- with session counters, whose keys are checked only after this (their cells depend on it).
-- That answer is 1 both for a new id in a marked bucket and for a held id in a bucket without
-- the mark (one a release before 1d1c4b3 wrote, which set none): so until the stats' \`db\` says
-- this bucket was found marked, the id is asked first (one HEXISTS a bucket).
local idWritten = false
-- That id (the only one asked: not always the first event's, in a batch where the others have none).
local writtenId = nil
-- A refusal after that write (the duplicates/late check, a counted-first cell) undoes it: the id,
-- and the mark when this HSET added it. (Written out in both places: a local function would be a
-- closure of five upvalues made on every call, ~1k instructions, for a path that is rare.)
local markedBucket = nil
if newIds then
  -- The ids asked: when no event is skipped and each has one, the ids themselves (no table more).
  local asked = ids
  for i = 1, eventCount do
    if (skip and skip[i]) or not ids[i] then
      asked = {}
      for j = 1, eventCount do
        if not (skip and skip[j]) and ids[j] then asked[#asked + 1] = ids[j] end
      end
      break
    end
  end
  if #asked == 1 and not withSessions then
    local id = asked[1]
    local held = false
    if retiredIds then
      for _, key in ipairs(retiredIds) do
        if not held and redis.call("HEXISTS", key, id) == 1 then held = true end
      end
    end
    local noted = stored[7 + counterCount] == bucketNoted
    if held or redis.call("HEXISTS", oldIds, id) == 1 or
      (not noted and redis.call("HEXISTS", newIds, id) == 1) then
      heldIds = { [id] = true }
    else
      local added = redis.call("HSET", newIds, id, "1", IDS_MARK, "1")
      if added == 0 then heldIds = { [id] = true } else idWritten, writtenId = true, id end
      idsMarked = added < 2
      -- The bucket holds the mark now: later one-id writes can trust HSET's answer.
      if not noted then markedBucket = bucketNoted end
    end
  else
    heldIds = {}
    for from = 1, #asked, 500 do
      local to = math.min(from + 499, #asked)
      local old = redis.call("HMGET", oldIds, unpack(asked, from, to))
      local new = redis.call("HMGET", newIds, IDS_MARK, unpack(asked, from, to))
      if new[1] then idsMarked = true end
      for k = 1, to - from + 1 do
        if old[k] or new[k + 1] then heldIds[asked[from + k - 1]] = true end
      end
      if retiredIds then
        for _, key in ipairs(retiredIds) do
          local earlier = redis.call("HMGET", key, unpack(asked, from, to))
          for k = 1, to - from + 1 do
            if earlier[k] then heldIds[asked[from + k - 1]] = true end
          end
        end
      end
    end
  end
end
-- Dedupe first, by id alone; then lateness, the watermark and the log, which need the events'
-- times. Those are decoded (ARGV[3]) only when needed: when some event could be late (one is
-- earlier than the latest this batch can raise the watermark to, less the lateness), when some
-- event is not applied (the watermark is the latest applied one's), or when events are logged.
-- An event's outcome is kept only when it is not 0 (applied so far): the common call, every event
-- new, fills no table (\`outcomes[i] or 0\` below, where the times are decoded).
local freshCount = 0
for i = 1, eventCount do
  local id = ids[i]
  if skip and skip[i] then
    outcomes = outcomes or {}
    outcomes[i] = 3
    skipped = skipped + 1
  elseif newIds and id then
    -- Held in either bucket, or earlier in this batch: a duplicate, which does not extend the
    -- id's life (it is added to the newer bucket only when new).
    if heldIds and heldIds[id] then
      outcomes = outcomes or {}
      outcomes[i] = 1
      duplicates = duplicates + 1
    else
      -- Remembered for a later event of this batch, unless the process found no id twice in it.
      -- (A single id written above is not written again.)
      if not distinctIds then
        heldIds = heldIds or {}
        heldIds[id] = true
      end
      if not idWritten then
        freshIds = freshIds or {}
        freshIds[freshCount + 1], freshIds[freshCount + 2] = id, "1"
        freshCount = freshCount + 2
      end
    end
  end
end
local insertedIds = freshCount > 0
-- (false, absent for no events, made nil: the comparisons below take nil for none.)
local latest, earliest = ${arg("tmax")} or nil, ${arg("tmin")} or ${arg("tmax")} or nil
if wm ~= nil and (latest == nil or wm > latest) then latest = wm end
if eventCount == 0 then
  -- Nothing to apply.
elseif not payloads and duplicates + skipped == 0 and earliest >= latest - lateness and
    (closedThrough == nil or earliest >= closedThrough) then
  applied, wm = eventCount, latest
else
  -- A call of one event comes without ARGV[2] and ARGV[3]: its time is tmax.
  local times = eventCount == 1 and { ${arg("tmax")} } or cjson.decode(ARGV[3])
  -- Every outcome is kept from here (the replies and the rebuilt cells below read them).
  outcomes = outcomes or {}
  for i = 1, eventCount do
    local t, outcome = times[i], outcomes[i] or 0
    if outcome == 0 and ((wm ~= nil and t < wm - lateness) or (closedThrough ~= nil and t < closedThrough)) then
      outcome = 2
    end
    local payload = payloads and payloads[i]
    if type(payload) == "string" and ((outcome == 0 and logProcessed) or (outcome == 2 and logLate)) then
      local recordType = "event.processed"
      if outcome == 2 then recordType = "event.late" end
      logged[#logged + 1] = logRecord(recordType, "timeMs", t, "event", raw(payload))
    end
    if outcome == 0 then
      if wm == nil or t > wm then wm = t end
      applied = applied + 1
    elseif outcome == 2 then
      lates = lates + 1
    end
    outcomes[i] = outcome
  end
end
-- \`duplicates\` and \`late\` as stored, read only by a call that adds to them (most add to
-- neither: two fields fewer in the stats' HMGET above). Checked as the counts asked there; the
-- only write before this is the one id of a call that asks one (a late event's is kept), undone
-- should the check refuse, so the call leaves every key as it found it.
local storedDuplicates, storedLates = nil, nil
if duplicates + lates > 0 then
  local counts = redis.call("HMGET", STATS_KEY, "duplicates", "late")
  for i = 1, 2 do
    if counts[i] and not isIntegerText(counts[i]) then
      if idWritten then
        if idsMarked then redis.call("HDEL", newIds, writtenId) else redis.call("HDEL", newIds, writtenId, IDS_MARK) end
      end
      refuseKey(STATS_KEY .. " field " .. (i == 1 and "duplicates" or "late"), "'" .. counts[i] .. "'",
        "a number it adds to")
    end
  end
  storedDuplicates, storedLates = counts[1], counts[2]
end

-- Admitted requests: their counts, stats, and the reply kept for their key. Without \`reqs\`, the
-- one request of every event: all accepted, its duplicates and late events the call's.
local accepted, filtered, rejected = eventCount, 0, 0
if requests then
  accepted = 0
  first = 1
  for r, request in ipairs(requests) do
    if not results[r] then
      local requestDuplicates, requestLate = 0, 0
      -- Every event applied (the common case): none of its events was a duplicate or late.
      if applied < eventCount then
        for i = first, first + request.n - 1 do
          if outcomes[i] == 1 then requestDuplicates = requestDuplicates + 1 end
          if outcomes[i] == 2 then requestLate = requestLate + 1 end
        end
      end
      local requestFiltered, requestRejected = request.f or 0, request.x or 0
      accepted = accepted + request.n + requestFiltered
      filtered = filtered + requestFiltered
      rejected = rejected + requestRejected
      results[r] = { 0, requestDuplicates, requestLate }
    end
    first = first + request.n
  end
end
-- The cells to add, each [counterIndex, pane, group, count, sum, min|false, max|false, values]:
-- pre-aggregated by the process when every event applies, else rebuilt here
-- from the applied events' own updates.
local cells
if applied == eventCount then
  cells = sentCells
elseif eventCount == 1 then
  -- The one event not applied (a duplicate, late or skipped): nothing to add (and no ARGV[2]).
  cells = {}
else
  cells = {}
  local function addToCell(cell, value, bin)
    if bin then cell[9][bin] = (cell[9][bin] or 0) + 1 end
    local count, sum, low, high, values = cell[4], cell[5], cell[6], cell[7], cell[8]
    count = count + 1
    if type(value) == "number" then
      sum = sum + value
      if low == false or value < low then low = value end
      if high == false or value > high then high = value end
    elseif type(value) == "string" then
      values[#values + 1] = value
    end
    cell[4], cell[5], cell[6], cell[7] = count, sum, low, high
  end
  local index = {}
  local byIndex = type(args.sess) ~= "table"
  for i, updates in ipairs(cjson.decode(ARGV[2])) do
    if outcomes[i] == 0 then
      for _, update in ipairs(updates) do
        local counterIndex, pane, group, value, bin
        if byIndex then
          -- The cell's counter, pane and group; the value and bucket of this event.
          local from = update
          if type(update) == "table" then from, value, bin = update[1], update[2], update[3] end
          from = sentCells[from + 1]
          counterIndex, pane, group = from[1], from[2], from[3]
        else
          counterIndex, pane, group, value, bin = update[1], update[2], update[3], update[4], update[5]
        end
        local key = counterIndex .. "|" .. paneTextOf(pane) .. "|" .. group
        local cell = index[key]
        if not cell then
          cell = { counterIndex, pane, group, 0, 0, false, false, {}, {} }
          index[key] = cell
          cells[#cells + 1] = cell
        end
        addToCell(cell, value, bin)
      end
    end
  end
  -- Session cells as sessionRuns sends them: group by group (as the batch first names them), each
  -- group's by time, joined into runs less than the gap apart. Which events past maxSessions are
  -- dropped then does not depend on whether an event of the batch was a duplicate or late.
  if not byIndex then
    local gapOf, rankOf, rankOfCell, ranks, ordered, sessionCells = {}, {}, {}, 0, {}, {}
    for _, session in ipairs(args.sess) do gapOf[session[1]] = session[2] end
    for _, cell in ipairs(cells) do
      if gapOf[cell[1]] then
        local key = cell[1] .. "|" .. cell[3]
        if rankOf[key] == nil then
          ranks = ranks + 1
          rankOf[key] = ranks
        end
        rankOfCell[cell] = rankOf[key]
        sessionCells[#sessionCells + 1] = cell
      else
        ordered[#ordered + 1] = cell
      end
    end
    table.sort(sessionCells, function(a, b)
      if rankOfCell[a] ~= rankOfCell[b] then return rankOfCell[a] < rankOfCell[b] end
      return a[2] < b[2]
    end)
    local run
    for _, cell in ipairs(sessionCells) do
      if run and rankOfCell[cell] == rankOfCell[run] and cell[2] - run[9] < gapOf[cell[1]] then
        run[4], run[5] = run[4] + cell[4], run[5] + cell[5]
        if cell[6] ~= false and (run[6] == false or cell[6] < run[6]) then run[6] = cell[6] end
        if cell[7] ~= false and (run[7] == false or cell[7] > run[7]) then run[7] = cell[7] end
        for _, value in ipairs(cell[8]) do run[8][#run[8] + 1] = value end
        run[9] = cell[2]
      else
        run = { cell[1], cell[2], cell[3], cell[4], cell[5], cell[6], cell[7], cell[8], cell[2] }
        rankOfCell[run] = rankOfCell[cell]
        ordered[#ordered + 1] = run
      end
    end
    cells = ordered
  end
end

if withSessions then guardSessions(counters, cells) end

-- The cells counted first (see countFirst), before any write but the id's: per cell position
-- whether its group was new in its pane (nil for a cell not counted here). Should a count or a
-- check of a new group be refused, what was written (these counts and the id) is undone first,
-- so the call leaves every key as it found it, as when a check before the writes refuses. A group
-- counted 0, which no apply writes and HINCRBY answers as it answers none, is taken as none here:
-- not among the pane's groups before it, and deleted by a refused call.
-- (Lua's pcall here turns a refusal into its text: raised again as a refusal, never as
-- { err = nil }, which stops redis-server 7.0.)
local countedNew = nil
if countFirst and cells == sentCells then
  countedNew = { nil, nil, nil, nil, nil, nil, nil, nil }
  -- A refusal (its text: Lua's pcall turns one into that) and the cells counted before it.
  local refusal, through = nil, 0
  for i = 1, #cells do
    local pane = cellPanes[i]
    if pane and not pane.values then
      local key, field, count = pane.key, cellFields[i], cells[i][4]
      local countText = count
      if count == 1 then countText = "1" end
      local total = redis.pcall("HINCRBY", key, field, countText)
      -- Refused (a key of another type, a field no integer), or a count past 2^53, so near what the
      -- checks take (18 digits; a double that far holds no odd number): that count undone, the
      -- field checked as above; refused, the rest undone too.
      local refused = type(total) == "table"
      if refused or total + 1 == total then
        if not refused then redis.call("HINCRBY", key, field, -count) end
        local checked, text = pcall(expectNumbers, key, { field })
        if not checked then
          refusal, through = text, i - 1
          break
        end
        total = redis.call("HINCRBY", key, field, countText)
      end
      local isNew = total == count
      countedNew[i] = isNew
      if isNew then
        -- The checks of a new group above: the pane's groups (but this one), the counter's
        -- overflow count, OTHER's fields and HyperLogLog, and, for a pane found empty (so new),
        -- its counter's live panes and open windows.
        local checked, text = pcall(function()
          local counter, cell = pane.counter, cells[i]
          local name = counter.name
          pane.before = redis.call("HLEN", key) - 1
          local overflowField = "overflow:" .. name
          local overflow = redis.call("HGET", STATS_KEY, overflowField)
          if overflow and not isIntegerText(overflow) then
            refuseKey(STATS_KEY .. " field " .. overflowField, "'" .. overflow .. "'", "a number it adds to")
          end
          pane.values = expectNumbers(key, { "c:" .. OTHER })
          if counter.kind == "distinct" and #cell[8] > 0 then
            local hll = hllKey(name, pane.text, OTHER)
            hllHeld[hll] = expectHll(hll)
          end
          if pane.before == 0 then
            expectType(livePanesKey(name), "zset")
            expectType(openKey(name), "zset")
          end
        end)
        if not checked then
          refusal, through = text, i
          break
        end
      end
    end
  end
  -- The undoing, in a function made only for a refusal.
  if refusal then
    (function()
      for k = through, 1, -1 do
        local new = countedNew[k]
        if new then
          redis.call("HDEL", cellPanes[k].key, cellFields[k])
        elseif new == false then
          redis.call("HINCRBY", cellPanes[k].key, cellFields[k], -cells[k][4])
        end
      end
      if idWritten then
        if idsMarked then redis.call("HDEL", newIds, writtenId) else redis.call("HDEL", newIds, writtenId, IDS_MARK) end
      end
      error({ err = tostring(refusal) })
    end)()
  end
end

-- Every key checked: the writes. Rate-limit buckets as charged, the log, stored replies, new ids.
if chargedBuckets then
  for _, bucket in ipairs(chargedBuckets) do
    local key = bucketKey(bucket.name)
    redis.call("HSET", key, "t", num(bucket.t), "u", num(bucket.u))
    -- A full bucket is the same as none: keep it only until it refills (from its update, which may
    -- be ahead of now).
    redis.call("PEXPIRE", key,
      num(math.max(1, math.ceil((bucket.limit - bucket.t) / bucket.perMs + (bucket.u - now)))))
  end
end
if logged then
  for _, record in ipairs(logged) do appendLog(record, statsTtl) end
end
if requests then
  for r, request in ipairs(requests) do
    local result = results[r]
    if result[1] == 0 and type(request.ik) == "string" then
      local key = replyKey(request.ik)
      -- Admitted with a key: in \`kept\`, so it holds its index entry's number (\`ip\`).
      redis.call("HSET", key, "b", request.ib, "r", request.ir, "d", result[2], "l", result[3], "p", request.ip)
      redis.call("PEXPIRE", key, request.it)
    end
  end
end
-- The replies kept, indexed (see book above), the expired ones' entries dropped; past the bound
-- the oldest forgotten (their replies deleted: a request sent again with one of their keys
-- applies again; one expired is not counted as forgotten), a bounded number a call.
if book then
  if book.reset then redis.call("DEL", REPLIES_KEY) end
  if book.expired > 0 then redis.call("LPOP", REPLIES_KEY, book.expired) end
  redis.call("RPUSH", REPLIES_KEY, unpack(book.entries))
  if book.forgotten then
    local total, forgotten, popped = book.total, 0, 0
    while total > book.max and popped < 64 * #kept do
      local oldest = redis.call("LPOP", REPLIES_KEY)
      -- None left while the total says more: sizes out of step (keys deleted), started again.
      if not oldest then
        total = 0
        break
      end
      popped = popped + 1
      local keyHash, size, expiresAt, number = replyEntry(oldest)
      total = math.max(0, total - size)
      -- Its reply deleted, and counted, only while it is the one this entry indexes (its number in
      -- \`p\`): not one stored again with the same key since.
      if keyHash and expiresAt > now then
        local key = replyKey(keyHash)
        if redis.call("HGET", key, "p") == number then
          redis.call("DEL", key)
          forgotten = forgotten + 1
        end
      end
    end
    book.total, book.now = total, forgotten
    if forgotten > 0 then book.forgotten = book.forgotten + forgotten else book.forgotten = nil end
  end
  -- The list lives at least as long as the latest reply it indexes, never shortened (a TTL lowered
  -- since), extended only when due (to lifeOf: an eighth more), its life asked only then (by
  -- \`ri\`) or when it may be new.
  if book.emptied or book.indexUntil < now + book.life then
    local left = redis.call("PTTL", REPLIES_KEY)
    if left < book.life then
      left = lifeOf(book.life)
      redis.call("PEXPIRE", REPLIES_KEY, left)
    end
    book.indexUntil = math.floor(now + left)
  end
end
if idWritten then
  if not idsMarked then redis.call("PEXPIRE", newIds, 2 * dedupeTtl + math.ceil(dedupeTtl / 8)) end
elseif insertedIds then
  if not idsMarked then
    freshIds[#freshIds + 1] = IDS_MARK
    freshIds[#freshIds + 1] = "1"
  end
  for from = 1, #freshIds, 1000 do
    redis.call("HSET", newIds, unpack(freshIds, from, math.min(from + 999, #freshIds)))
  end
  if not idsMarked then redis.call("PEXPIRE", newIds, 2 * dedupeTtl + math.ceil(dedupeTtl / 8)) end
end

if withSessions then cells = withSessions(counters, cells, now) end

-- The panes written, in the order first written: per pane (its record, above), once, its expiry
-- says whether it is new and whether its life is due to be extended. Per cell: HINCRBY's reply
-- says whether the group is new in the pane (its count was the cell's: counts only grow).
local paneOrder = { nil, nil, nil, nil, nil, nil, nil, nil }
-- The pane, listed among those written (once).
local function written(pane)
  if not pane.listed then
    pane.listed = true
    paneOrder[#paneOrder + 1] = pane
  end
  return pane
end
-- Several cells in one pane of a count, sum or avg counter are read with one HMGET (the check's)
-- and written with one HSET, instead of an HINCRBY per field (a 100-event batch grouped by 20 countries: 2
-- commands instead of 20 or 40). Sums are added in Lua as the memory store adds them (doubles).
-- Returns false, having written nothing, when the pane's new groups would pass maxGroups: those
-- cells then go one by one below, which decides which groups fit. list: the cells' positions.
local function writeTogether(pane, list)
  local counter = pane.counter
  local withSum = counter.kind ~= "count"
  -- Read when checked, before any write (every cell of a pane is in one list).
  local read = pane.values
  local values, newGroups = { nil, nil, nil, nil, nil, nil, nil, nil }, 0
  for k = 1, #list do
    local cell = cells[list[k]]
    local group = cell[3]
    local field = "c:" .. group
    local stored = read[field]
    if not stored then newGroups = newGroups + 1 end
    values[#values + 1] = field
    -- Text checked a number (expectNumbers) or a number: arithmetic takes either, once (tonumber
    -- reads a text twice).
    values[#values + 1] = num((stored or 0) + cell[4])
    if withSum then
      field = "s:" .. group
      values[#values + 1] = field
      values[#values + 1] = num((read[field] or 0) + cell[5])
    end
  end
  if newGroups > 0 then
    if pane.groups == nil then
      pane.groups = pane.before or redis.call("HLEN", pane.key) / fieldsPerGroup(counter.kind)
      -- An empty pane hash is a new pane, whatever its score said (its keys were evicted).
      if pane.groups == 0 then pane.isNew, pane.refresh = true, true end
    end
    if pane.groups + newGroups > limitsOf(counter).maxGroups then return false end
    pane.groups = pane.groups + newGroups
  end
  redis.call("HSET", pane.key, unpack(values))
  return true
end
-- The cells that go together (their positions), per pane in the order first seen, and those
-- written so (inHset).
-- With no more cells than counters (a single event) a pane seldom has two, and a count's one
-- HINCRBY is as cheap as an HSET; a sum's or avg's cell still goes in one HSET, from the fields
-- read when checked, where one by one it takes two commands (cells left out go one by one, which
-- is right for any pane).
local together, byPane, inHset = {}, not cellsFromOne and {} or nil, {}
local manyCells = #cells > #counters
-- The cells checked above (all applied, no session counter): their panes and fields as found there.
local asChecked = cells == sentCells
-- A rebuilt window cell's pane record (made above when a cell was checked in it), made only then.
-- (Never for cells that came as \`one\`, which has no paneByKey: one event's cells are all applied,
-- asChecked, or none.)
local recordOf = nil
if not asChecked then
  function recordOf(counter, paneStart)
    local paneText = paneTextOf(paneStart)
    local key = paneKey(counter.name, paneText)
    return paneByKey[key] or paneRecord(counter, key, paneText, paneStart)
  end
end
for i = 1, #cells do
  local cell = cells[i]
  local counter = counters[cell[1] + 1]
  local kind = counter.kind
  if kind == "sum" or kind == "avg" or (kind == "count" and manyCells) then
    local pane = asChecked and cellPanes[i] or recordOf(counter, cell[2])
    local list = byPane and byPane[pane]
    if list then
      list[#list + 1] = i
    else
      -- Made with its first cell (an array grown from empty is resized at its first value).
      list = { i, pane = pane }
      if byPane then byPane[pane] = list end
      together[#together + 1] = list
    end
  end
end
for t = 1, #together do
  local list = together[t]
  local pane = list.pane
  if (#list > 1 or pane.counter.kind ~= "count") and writeTogether(written(pane), list) then
    for k = 1, #list do inHset[list[k]] = true end
  end
end
for cellAt = 1, #cells do
  if not inHset[cellAt] then
    local cell = cells[cellAt]
    local counterIndex, paneStart, group, count, sum, low, high, values =
      cell[1], cell[2], cell[3], cell[4], cell[5], cell[6], cell[7], cell[8]
    local counter = counters[counterIndex + 1]
    local name, kind = counter.name, counter.kind
    local pane = written(asChecked and cellPanes[cellAt] or recordOf(counter, paneStart))
    local key, paneText = pane.key, pane.text
    -- A count of one (a single event's) as text: a number argument costs redis.call a conversion.
    local countText = count
    if count == 1 then countText = "1" end
    local countField = asChecked and cellFields[cellAt] or "c:" .. group
    local groupIsNew = countedNew and countedNew[cellAt]
    if groupIsNew == nil then groupIsNew = redis.call("HINCRBY", key, countField, countText) == count end
    if groupIsNew then
      -- A new group: the pane's groups before it, from its fields, the first time one is new.
      if pane.groups == nil then
        pane.groups = pane.before or (redis.call("HLEN", key) - 1) / fieldsPerGroup(kind)
        -- An empty pane hash is a new pane, whatever its score said (its keys were evicted).
        if pane.groups == 0 then pane.isNew, pane.refresh = true, true end
      end
      if pane.groups >= limitsOf(counter).maxGroups then
        -- Past maxGroups: undo, and count into OTHER_GROUP instead. Events that read OTHER_GROUP
        -- themselves overflow once, as one by one (the memory store): the first opens the group,
        -- the rest find it in the pane.
        redis.call("HDEL", key, countField)
        local overflowed = count
        if group == ${luaString(OTHER_GROUP)} then overflowed = 1 end
        group = ${luaString(OTHER_GROUP)}
        redis.call("HINCRBY", STATS_KEY, "overflow:" .. name, overflowed)
        groupIsNew = redis.call("HINCRBY", key, "c:" .. group, countText) == count
      end
      if groupIsNew then pane.groups = pane.groups + 1 end
    end
    if kind == "sum" or kind == "avg" then
      -- Added here in doubles, as the memory store adds (HINCRBYFLOAT adds in long double and
      -- writes 17 digits of that, which may end in another last bit), to the field as read when
      -- checked (OTHER's too, for a new group) or as written by a cell before this one.
      local field, values = "s:" .. group, pane.values
      local total = (tonumber(values[field]) or 0) + sum
      values[field] = total
      redis.call("HSET", key, field, num(total))
    elseif kind == "min" or kind == "max" then
      local value = low
      if kind == "max" then value = high end
      local current = tonumber(redis.call("HGET", key, "m:" .. group))
      if current == nil or (kind == "min" and value < current) or (kind == "max" and value > current) then
        redis.call("HSET", key, "m:" .. group, num(value))
      end
    elseif kind == "quantiles" then
      local current = tonumber(redis.call("HGET", key, "n:" .. group))
      if current == nil or low < current then redis.call("HSET", key, "n:" .. group, num(low)) end
      current = tonumber(redis.call("HGET", key, "x:" .. group))
      if current == nil or high > current then redis.call("HSET", key, "x:" .. group, num(high)) end
      local sketch = quantileKey(name, paneText, group)
      -- A group new in its pane starts an empty sketch: one left from an expired or evicted pane
      -- of the same start may outlive it (by up to TTL/8), and must not be added to.
      if groupIsNew then redis.call("DEL", sketch) end
      -- Whether every bucket was new to the sketch (each HINCRBY answered just its count): then
      -- the sketch may be new too, made by these HINCRBYs without a TTL (its key evicted or
      -- deleted while the pane holds the group), as a HyperLogLog PFADD made below.
      local fresh = true
      for bin, binCount in pairs(cell[9]) do
        if redis.call("HINCRBY", sketch, bin, binCount) ~= binCount then fresh = false end
      end
      -- Its life from now is at least the pane's; the pane's refreshes extend it later (below).
      if groupIsNew or fresh then redis.call("PEXPIRE", sketch, lifeOf(counter.ttl)) end
    elseif kind == "distinct" and #values > 0 then
      local hll = hllKey(name, paneText, group)
      -- As a sketch: a group new in its pane starts an empty HyperLogLog.
      if groupIsNew then redis.call("DEL", hll) end
      local created = 0
      -- A single value comes bare (see trimCells); #values is then its length, more than 0.
      if type(values) == "string" then
        created = redis.call("PFADD", hll, values)
      else
        for i = 1, #values, 500 do
          created = math.max(created, redis.call("PFADD", hll, unpack(values, i, math.min(i + 499, #values))))
        end
      end
      -- One there when checked (and not deleted above) has its PX already, from when it was made
      -- or from the pane's last refresh (below), which extends every group's; PFADD answers 0 only
      -- when it existed.
      if created == 1 and (groupIsNew or not hllHeld[hll]) then
        redis.call("PEXPIRE", hll, lifeOf(counter.ttl))
      end
    end
  end
end
-- Panes new or due: their keys, their score and (for a new pane) the windows they open, then
-- their counters' live panes and open windows, which so live as long as their newest pane.
local refreshed = nil
for p = 1, #paneOrder do
  local pane = paneOrder[p]
  if pane.refresh then
    local counter = pane.counter
    local name, kind, life = counter.name, counter.kind, lifeOf(counter.ttl)
    redis.call("PEXPIRE", pane.key, life)
    pane.expiresAt = now + life
    if kind == "distinct" or kind == "quantiles" then
      -- The group's own keys: a sketch written long ago would otherwise expire before its pane.
      for _, field in ipairs(redis.call("HKEYS", pane.key)) do
        if string.sub(field, 1, 2) == "c:" then
          local group = string.sub(field, 3)
          local groupKey = hllKey(name, pane.text, group)
          if kind == "quantiles" then groupKey = quantileKey(name, pane.text, group) end
          redis.call("PEXPIRE", groupKey, life) -- does nothing when the key does not exist
        end
      end
    end
    redis.call("ZADD", livePanesKey(name), now + life, pane.text)
    if pane.isNew then
      local open = openKey(name)
      local paneStart, hop, size = startOf(pane), limitsOf(counter).hop, counter.size
      local start = math.floor(paneStart / hop) * hop
      while start + size > paneStart do
        redis.call("ZADD", open, "NX", num(start + size), num(start))
        start = start - hop
      end
    end
    refreshed = refreshed or {}
    refreshed[name] = counter
  end
end
-- Each counter's newest pane written here (\`newest\`, kept on the counter: no table more) becomes
-- its \`k:<counter>\` when no newer one is there.
for p = 1, #paneOrder do
  local pane = paneOrder[p]
  local counter = pane.counter
  local newest = counter.newest
  if newest == nil or startOf(pane) > startOf(newest) then counter.newest = pane end
end
if refreshed then
  for name, counter in pairs(refreshed) do
    local livePanes, open, life = livePanesKey(name), openKey(name), lifeOf(counter.ttl)
    if shortOf(livePanes, life) then redis.call("PEXPIRE", livePanes, life) end
    redis.call("ZREMRANGEBYSCORE", livePanes, "-inf", num(now))
    if shortOf(open, life) then redis.call("PEXPIRE", open, life) end
  end
end

local changed = { nil, nil, nil, nil, nil, nil, nil, nil }
-- The counts asked: accepted and applied at 3 and 4, filtered and rejected (more than 0 only with
-- requests, which asks them) after \`db\`. Integer text (checked above) or absent: arithmetic
-- reads it once, as tonumber would twice.
if accepted > 0 then
  changed[1], changed[2] = "accepted", num((stored[3] or 0) + accepted)
end
if applied > 0 then
  changed[#changed + 1] = "applied"
  changed[#changed + 1] = num((stored[4] or 0) + applied)
end
if filtered > 0 then
  changed[#changed + 1] = "filtered"
  changed[#changed + 1] = num((stored[8 + counterCount] or 0) + filtered)
end
if rejected > 0 then
  changed[#changed + 1] = "rejected"
  changed[#changed + 1] = num((stored[9 + counterCount] or 0) + rejected)
end
if duplicates > 0 then
  changed[#changed + 1] = "duplicates"
  changed[#changed + 1] = num((storedDuplicates or 0) + duplicates)
end
if lates > 0 then
  changed[#changed + 1] = "late"
  changed[#changed + 1] = num((storedLates or 0) + lates)
end
-- The watermark as text, for the stats and the reply.
local wmText = ""
if wm ~= nil then
  wmText = num(wm)
  changed[#changed + 1] = "wm"
  changed[#changed + 1] = wmText
end
-- Applied by an instance still on an older definition than the record's (\`dv\`): what that one
-- calls final now, the watermark less its lateness, stays final (its reads call it so until it
-- reloads), as the record's write kept final what the definition it replaced called so.
if ${arg("dv")} and wm ~= nil and definitionVersion > ${arg("dv")} and
  (closedThrough == nil or wm - lateness > closedThrough) then
  changed[#changed + 1] = "cl"
  changed[#changed + 1] = num(wm - lateness)
end
for i = 1, counterCount do
  local counter = counters[i]
  local pane, name = counter.newest, counter.name
  if pane and (pane.text ~= counter.knownPane or pane.expiresAt ~= counter.knownExpiresAt) then
    local knownStart = tonumber(counter.knownPane)
    if knownStart == nil or startOf(pane) >= knownStart or counter.knownExpiresAt <= now then
      changed[#changed + 1] = "k:" .. name
      changed[#changed + 1] = pane.text .. " " .. num(pane.expiresAt)
    end
  end
end
if book then
  if book.forgotten then
    changed[#changed + 1] = "repliesForgotten"
    changed[#changed + 1] = num(book.forgotten)
  end
  changed[#changed + 1] = "ri"
  changed[#changed + 1] = num(book.total) .. " " .. num(book.last) .. " " .. num(book.indexUntil)
end
if dedupeKeysText then
  changed[#changed + 1] = "dk"
  changed[#changed + 1] = dedupeKeysText
end
if markedBucket then
  changed[#changed + 1] = "db"
  changed[#changed + 1] = markedBucket
end
if #changed > 0 then writeStats(changed, statsExpireAt, now, statsLife) end
-- One digit per event: all "0" in the common case, without turning each number into text.
local outcomeText
if applied == eventCount then outcomeText = string.rep("0", eventCount) else outcomeText = table.concat(outcomes) end
-- The reply's JSON written here, not by cjson.encode, which makes a buffer and formats each number
-- as a float; an applied request's result, the common one, without it too.
local resultsText = "[0,0,0]"
if requests then
  local resultsJson = {}
  for r = 1, #results do
    local result = results[r]
    if result[1] ~= 0 then
      resultsJson[r] = cjson.encode(result)
    elseif result[2] == 0 and result[3] == 0 then
      resultsJson[r] = "[0,0,0]"
    else
      resultsJson[r] = "[0," .. num(result[2]) .. "," .. num(result[3]) .. "]"
    end
  end
  resultsText = table.concat(resultsJson, ",")
elseif duplicates + lates > 0 then
  -- The one request of every event (no \`reqs\`).
  resultsText = "[0," .. num(duplicates) .. "," .. num(lates) .. "]"
end
local demandJson = "[]"
if demand then demandJson = cjson.encode(demand) end
local versionText = "0"
if definitionVersion ~= 0 then versionText = num(definitionVersion) end
-- \`f\`: the replies this call forgot before their TTL (the store warns of them), absent for none.
local forgotText = ""
if book and book.now > 0 then forgotText = ',"f":' .. num(book.now) end
local reply = '{"o":"' .. outcomeText .. '","wm":"' .. wmText .. '","d":' .. demandJson ..
  ',"r":[' .. resultsText .. '],"v":' .. versionText .. forgotText .. "}"
return keepReply(callKey, reply)
`;

/**
 * Reads windows of one counter. ARGV[1] is JSON
 * `{name, kind, top?, page?: {after?, limit}, windows: [[start, [pane, …]], …]}` (`page`: see
 * `ReadOptions.page`); with `top`, a distinct counter's window adds a row for the union of its other groups
 * (see `ReadOptions.top`), merged through a temporary HyperLogLog `tmp:rest`.
 * Returns JSON `[[start, group, count, sum, minOrMax, distinct, max?, [bin, count, …]?], …]`
 * with numbers as text (the last two for quantiles counters); with `stats: true`, those rows with
 * the stats (see {@linkcode READ_REPLY_LUA}).
 */
export const READ_SCRIPT = COMMON + MERGE_LUA + READ_REPLY_LUA + `
local name, kind, windows, top = args.name, args.kind, args.windows, args.top
-- bytesBefore(a, b): byte order of two strings.
${LUA_BYTES_BEFORE}-- The union of a distinct counter's groups but the top ones: {count, distinct}.
local function restOf(cells)
  local ranked = {}
  for i, cell in ipairs(cells) do ranked[i] = cell end
  table.sort(ranked, function(a, b)
    if a.distinct ~= b.distinct then return a.distinct > b.distinct end
    return bytesBefore(a.group, b.group)
  end)
  local union, count, keys = P .. "tmp:rest", 0, {}
  redis.call("DEL", union)
  for i = top + 1, #ranked do
    local cell = ranked[i]
    count = count + cell.count
    for _, pane in ipairs(cell.panes) do keys[#keys + 1] = hllKey(name, num(pane), cell.group) end
  end
  for i = 1, #keys, 500 do redis.call("PFMERGE", union, unpack(keys, i, math.min(i + 499, #keys))) end
  local distinct = redis.call("PFCOUNT", union)
  redis.call("DEL", union)
  -- REST_GROUP: NUL, then plain text.
  return { group = "\\0${REST_GROUP.slice(1)}", count = count, sum = 0, distinct = distinct }
end
-- A page (args.page = {after?, limit}): of each window in turn, only the first groups after
-- \`after\` (the first window's) in byte order, up to limit rows in all. One pass over the
-- panes' fields keeps the smallest keys in a heap; only those groups are read and merged.
local function pageGroups(panes, after, limit)
  -- A key's first 6 bytes from byte i as one number (each byte + 1, base 257; 0 past its end):
  -- numbers in order are those bytes in order, a shorter text first, so most compares need no
  -- loop over bytes (bytesBefore only when the 6 bytes tie).
  local function prefix(a, b, c, d, e, f)
    return ((((((a or -1) + 1) * 257 + (b or -1) + 1) * 257 + (c or -1) + 1) * 257 +
      (d or -1) + 1) * 257 + (e or -1) + 1) * 257 + (f or -1) + 1
  end
  local keys, prefixes, seen, multi = {}, {}, {}, #panes > 1
  -- Whether entry i of the heap comes after entry j.
  local function above(i, j)
    local x, y = prefixes[i], prefixes[j]
    if x ~= y then return x > y end
    return bytesBefore(keys[j], keys[i])
  end
  local function swap(i, j)
    keys[i], keys[j] = keys[j], keys[i]
    prefixes[i], prefixes[j] = prefixes[j], prefixes[i]
  end
  local afterPrefix = after and prefix(string.byte(after, 1, 6))
  for _, pane in ipairs(panes) do
    for _, field in ipairs(redis.call("HKEYS", paneKey(name, num(pane)))) do
      -- Every group of a pane has its count field: "c:" .. group.
      local c1, c2, a, b, c, d, e, f = string.byte(field, 1, 8)
      if c1 == 99 and c2 == 58 then
        local p = prefix(a, b, c, d, e, f)
        local n = #keys
        local wanted = true
        if afterPrefix and p <= afterPrefix then
          wanted = p == afterPrefix and bytesBefore(after, string.sub(field, 3))
        end
        if wanted and n >= limit then
          local top = prefixes[1]
          wanted = p < top or (p == top and bytesBefore(string.sub(field, 3), keys[1]))
        end
        if wanted then
          local group = string.sub(field, 3)
          if multi then
            wanted = not seen[group]
            seen[group] = true
          end
          if wanted then
            if n < limit then
              keys[n + 1], prefixes[n + 1] = group, p
              local i = n + 1
              while i > 1 do
                local parent = math.floor(i / 2)
                if not above(i, parent) then break end
                swap(i, parent)
                i = parent
              end
            else
              keys[1], prefixes[1] = group, p
              local i = 1
              while true do
                local left, right, largest = 2 * i, 2 * i + 1, i
                if left <= n and above(left, largest) then largest = left end
                if right <= n and above(right, largest) then largest = right end
                if largest == i then break end
                swap(largest, i)
                i = largest
              end
            end
          end
        end
      end
    end
  end
  table.sort(keys, bytesBefore)
  return keys
end
local out = {}
local page = args.page
if type(page) == "table" then
  for i, window in ipairs(windows) do
    local left = page.limit - #out
    if left <= 0 then break end
    local after = nil
    if i == 1 and type(page.after) == "string" then after = page.after end
    local start, panes = window[1], window[2]
    for _, cell in ipairs(mergeGroups(name, kind, panes, pageGroups(panes, after, left))) do
      local row = rowText(cell)
      out[#out + 1] = { num(start), row[1], row[2], row[3], row[4], row[5], row[6], row[7] }
    end
  end
  return readReply(out)
end
for _, window in ipairs(windows) do
  local start, panes = window[1], window[2]
  local cells = mergePanes(name, kind, panes)
  if kind == "distinct" and type(top) == "number" and #cells > top then
    cells[#cells + 1] = restOf(cells)
  end
  for _, cell in ipairs(cells) do
    local row = rowText(cell)
    out[#out + 1] = { num(start), row[1], row[2], row[3], row[4], row[5], row[6], row[7] }
  end
end
return readReply(out)
`;

/**
 * Claims windows that became final. ARGV[1] is JSON
 * `{late, limit, cells, logTtl, sl?, idle, now, peek, counters: [[name, kind, hop, size, ttl]], tk?,
 * dv?, gen?, rec?, th?, ts?}` (`th`: the latest end it closes, see `CloseOptions.through`; `ts`: `[start, group]`
 * of the last session ending at `th` it closes, see `CloseOptions.throughSession`; `ls`: `{counter:
 * [{start, groups: [group, …]}, …]}`, see `CloseOptions.listed`; `sl`: the stats' life where a counter's TTL is longer than `logTtl`, as the
 * apply's; `dv`: the definition version the caller serves, see `CloseOptions.definitionVersion`;
 * `gen` and `rec`: the generation closed, and whether its record must exist, checked against the
 * definition record KEYS[2] as the apply does, see {@linkcode APPLY_SCRIPT}).
 * Returns JSON `{"w": [[counter, start, end, [[group, count, sum, minOrMax, distinct], …],
 * continued], …], "m": 1 when it stopped at `cells` with more to close, "c": the cutoff it found
 * (`ClosedWindows.cutoff`), …}` (`continued` 1 when an earlier call claimed the window), or `{"w": [], "v": version}` when the stats' `dv` is later than
 * `dv`, or `{"w": [], "gone": 1}` when the record says the generation was deleted (or the stream
 * created again under another), or `{"w": [], "gone": 2}` when it is missing and `rec` says it
 * must exist: nothing closed nor written. A window of more cells (a group in one of its panes) than the call has left is claimed
 * (ZREM, `cl`) by the call that starts it and its groups merged and logged over several calls,
 * each at most `cells` (see below), so no one call holds Redis for long.
 * The ZREM inside the script makes each window close exactly once; the same call again (its
 * one-time token `tk` seen) returns the windows the first one closed.
 *
 * A close (not a peek) also keeps the data of windows not closed before it: a live pane of such a
 * window (or of one it closes) with less than ttl + ttl/16 left gets lifeOf(ttl) again, with its
 * HyperLogLogs or sketches, its score in the live panes and the counter's live panes and open
 * windows, as a write would give it. So an open window's panes outlive a pause of its producer
 * (whose watermark then stands still) as long as some instance sweeps more often than ttl, and a
 * window's panes live at least ttl after it closed. Of session counters (`sess`:
 * `[[name, kind, gap, ttl], …]`) it keeps alive the open sessions with less than ttl/2 left, and
 * gives those it closes ttl (see `SESSION_CLOSE_LUA`).
 *
 * A close (not a peek) also says, in its reply (`n`, with the `applied` `a`, watermark `wm` and `cl`
 * it left) and in the stats (`qn`, `qa`, `qw`, `qc` and `qk` from ARGV), when a close next has
 * something to do if no batch is applied and `cl` is not raised meanwhile: 0 at once, -1 never,
 * else a time of the clock. The caller skips the script until then while the stats' `applied`,
 * `wm` and `cl` are unchanged (see `RedisStore.closeWindows`).
 */
export const CLOSE_SCRIPT = COMMON + LUA_BYTES_BEFORE + MERGE_LUA + SESSION_LUA +
  SESSION_CLOSE_LUA + `
-- The same close sent again: the windows the first one closed, which are closed no more.
local callKey, first = callReply(args.tk)
if first then return first end
-- The stream's definition record (KEYS[2], always given by the store; same slot), as the
-- apply reads it (definitionGone): an incarnation deleted, or deleted and created again (another
-- generation), since the caller read it, or a record missing that the caller recorded (\`rec\`),
-- closes nothing and writes nothing, so no result of a stream whose DELETE answered is logged by
-- an instance that has not heard of it yet.
if KEYS[2] then
  local record = redis.call("HMGET", KEYS[2], "v", "g", "x")
  -- \`gone\` 2: the record is missing (not deleted nor another generation's).
  if definitionGone(record, args.gen, args.rec) then
    return cjson.encode({ w = {}, gone = record[1] and 1 or 2 })
  end
end
local lateness, limit, logTtl, idle, now, peek =
  args.late, args.limit, args.logTtl, args.idle, args.now, args.peek
-- The stats' life, as the apply gives it (its \`sl\`).
local statsLife = args.sl or logTtl
-- Everything is read first and the writes (\`later\`: commands, and records to log) made once
-- every key they touch has been read or checked (see refuseKey), so a close that fails writes
-- nothing: a window it found stays open.
local later, logged = {}, {}
local function write(...) later[#later + 1] = { ... } end
local function logLater(record) logged[#logged + 1] = record end
local stored = redis.call("HMGET", STATS_KEY, "wm", "exp", "cl", "applied", "qn", "qa", "qw", "qk",
  "qc", "dv")
expectStatsTime("wm", stored[1])
expectStatsTime("cl", stored[3])
local wm = tonumber(stored[1])
local out = {}
-- No watermark: no batch was applied (nor is anything open). An idle stream's clock floor is not
-- written for it either (the memory store holds nothing of it): its first batch raises to it.
-- Nothing is due before one (\`n\` -1: never), which changes \`applied\`.
if wm == nil then return cjson.encode({ w = out, n = -1, a = stored[4] or "", cl = stored[3] or "" }) end
-- A later definition than the caller's (\`dv\`) kept final in its write (the stats' \`dv\`, as the
-- stats read takes it: one that raised the lateness or lengthened idle): the caller's lateness
-- may call due what that one still takes events into. Nothing is closed nor written, not even the
-- idle floor; the reply says the version (\`v\`) for the caller to load, and no \`n\`.
if args.dv and stored[10] and isVersionText(stored[10]) and tonumber(stored[10]) > args.dv then
  return cjson.encode({ w = out, v = tonumber(stored[10]) })
end
-- The latest end a close claimed (see the apply's \`cl\`), raised by what this one closes.
local closedThrough = tonumber(stored[3])
local clRead = closedThrough
local raised = raiseToClock(wm, now, idle)
-- What reads call final (config/final.ts closedBefore): the watermark less the lateness, or \`cl\`
-- when later (kept final by a definition that raised the lateness, a batch of an instance on an
-- older one, keepFinal), so window.closed comes when a read says final.
local cutoff = raised - lateness
if closedThrough ~= nil and closedThrough > cutoff then cutoff = closedThrough end
-- What this call closes: no end past \`th\`, the cutoff its caller's peek reported (see
-- CloseOptions.through), so the close claims only what the peek saw. What is due past it stays
-- due (nextDue judges by \`cutoff\`), for the next sweep.
local closeTo = cutoff
if type(args.th) == "number" and args.th < closeTo then closeTo = args.th end
-- The alert markers of the open windows (from the one ending first, \`first\`: windows close in
-- that order) get twice the ttl again, as a firing gives them (alertMarkerTtlMs), so an alert that
-- fired early in a window kept open (by a pause, or by a producer whose stale events hold the
-- watermark) does not fire again; so does the index, which drops the closed windows' entries.
local function keepMarkers(name, ttl, first)
  local index, markerLife, firstStart = alertedKey(name), 2 * ttl, tonumber(first[1])
  local entries = readKey("zset", "ZRANGE", index, 0, -1, "WITHSCORES")
  local closedEntries = false
  for i = 1, #entries, 2 do
    if tonumber(entries[i + 1]) >= firstStart then
      write("PEXPIRE", entries[i], markerLife)
    else
      closedEntries = true
    end
  end
  if #entries > 0 then write("PEXPIRE", index, markerLife) end
  if closedEntries then write("ZREMRANGEBYSCORE", index, "-inf", "(" .. first[1]) end
end
-- keepMarkers where no pane of an open window was due: applies keep giving the panes life, not
-- the markers, so they are kept when their index is due, which is no later than the oldest of
-- them (a firing gives the index life only when it has none, see FIRE_SCRIPT). One read for a
-- counter no alert fired on.
local function keepDueMarkers(name, ttl, due, first)
  local indexLife = redis.call("PTTL", alertedKey(name))
  if indexLife == -2 or indexLife >= due then return end
  first = first or redis.call("ZRANGE", openKey(name), 0, 0, "WITHSCORES")
  if #first > 0 then keepMarkers(name, ttl, first) end
end
-- Gives the live panes of counter c's windows not closed yet that are due for it lifeOf(ttl) again
-- (see above), by later writes, and the open windows' alert markers theirs.
local function keepOpen(name, kind, hop, size, ttl)
  local live, open = livePanesKey(name), openKey(name)
  local due = ttl + math.ceil(ttl / 16)
  local soon = redis.call("ZRANGEBYSCORE", live, "(" .. num(now), num(now + due))
  if #soon == 0 then return keepDueMarkers(name, ttl, due) end
  -- Windows close in the order of their ends: a pane whose last window ends before the first
  -- open one is in no open window (no command asked for it).
  local first = redis.call("ZRANGE", open, 0, 0, "WITHSCORES")
  if #first == 0 then return end
  local firstEnd, life, kept = tonumber(first[2]), lifeOf(ttl), false
  for _, paneText in ipairs(soon) do
    local pane = tonumber(paneText)
    local start = math.floor(pane / hop) * hop
    local held = false
    if start + size >= firstEnd then
      while start + size > pane do
        if redis.call("ZSCORE", open, num(start)) then
          held = true
          break
        end
        start = start - hop
      end
    end
    if held then
      local key = paneKey(name, paneText)
      write("PEXPIRE", key, life)
      if kind == "distinct" or kind == "quantiles" then
        for _, field in ipairs(redis.call("HKEYS", key)) do
          if string.sub(field, 1, 2) == "c:" then
            local group = string.sub(field, 3)
            if kind == "quantiles" then
              write("PEXPIRE", quantileKey(name, paneText, group), life)
            else
              write("PEXPIRE", hllKey(name, paneText, group), life)
            end
          end
        end
      end
      write("ZADD", live, num(now + life), paneText)
      kept = true
    end
  end
  if kept then
    if shortOf(live, life) then write("PEXPIRE", live, life) end
    if shortOf(open, life) then write("PEXPIRE", open, life) end
    -- One read, none written, for a counter no alert fired on.
    keepMarkers(name, ttl, first)
  else
    keepDueMarkers(name, ttl, due, first)
  end
end
-- A window of more cells than a call has left is claimed by the call that starts it and closed
-- over several calls: \`closing:<counter>\` holds {s = start, e = end, p = its panes ("," between),
-- i = the pane being walked (1-based), k = that pane's HSCAN cursor} and
-- \`closed:<counter>:<start>\` the groups of it logged so far, so each call merges and logs the
-- next ones, each group once.
local function closingKey(name) return P .. "closing:" .. name end
local function loggedKey(name, start) return P .. "closed:" .. name .. ":" .. num(start) end
local function readJob(name)
  local v = redis.call("HMGET", closingKey(name), "s", "e", "p", "i", "k")
  if not v[1] then return nil end
  local panes = {}
  for text in string.gmatch(v[3], "[^,]+") do panes[#panes + 1] = tonumber(text) end
  return { start = tonumber(v[1]), stop = tonumber(v[2]), panes = panes, pane = tonumber(v[4]), cursor = v[5] }
end
-- The groups args.ls lists of name's window at start (CloseOptions.listed) as a set, and how many
-- it holds; nil: no bound.
local function listedGroups(name, start)
  if type(args.ls) ~= "table" then return nil, 0 end
  local set, size = {}, 0
  if type(args.ls[name]) == "table" then
    for _, window in ipairs(args.ls[name]) do
      if tonumber(window.start) == start then
        for _, group in ipairs(window.groups) do
          if not set[group] then set[group], size = true, size + 1 end
        end
      end
    end
  end
  return set, size
end
-- Whether listed (args.ls) names the window of name starting at start.
local function namedWindow(name, start)
  if type(args.ls) ~= "table" or type(args.ls[name]) ~= "table" then return false end
  for _, window in ipairs(args.ls[name]) do
    if tonumber(window.start) == start then return true end
  end
  return false
end
-- Whether every group of the panes is in listed.
local function allListed(name, panes, listed)
  for _, pane in ipairs(panes) do
    local fields = redis.call("HKEYS", paneKey(name, num(pane)))
    for _, field in ipairs(fields) do
      if string.sub(field, 1, 2) == "c:" and not listed[string.sub(field, 3)] then return false end
    end
  end
  return true
end
-- The next groups of job's window, at most budget cells (a group costs one per pane of the
-- window; at least one group a call, unless listed names it not), pane by pane in HSCAN order,
-- stopping at the first group not in listed when given; moves job on (the table only).
-- Returns the cells, the cost and whether the window is done.
local function closeStep(name, kind, job, budget, listed)
  local per = math.max(#job.panes, 1)
  local groups, counts, spent, taken, logged = {}, {}, 0, {}, loggedKey(name, job.start)
  -- About a quarter of the groups the budget allows a scan (COUNT counts fields): a reply cut
  -- short is scanned again by the next call, so a short one wastes less.
  local count = math.max(10, math.ceil(budget / per / 4) * fieldsPerGroup(kind))
  while job.pane <= #job.panes do
    local reply = redis.call("HSCAN", paneKey(name, num(job.panes[job.pane])), job.cursor,
      "MATCH", "c:*", "COUNT", count)
    local fields, stopped = reply[2], false
    for i = 1, #fields, 2 do
      local group = string.sub(fields[i], 3)
      -- HSCAN may return a field twice, and a group in several panes is logged at the first.
      if not taken[group] and redis.call("SISMEMBER", logged, group) == 0 then
        if (spent > 0 and spent + per > budget) or (listed and not listed[group]) then
          stopped = true
          break
        end
        taken[group] = true
        groups[#groups + 1], counts[group] = group, fields[i + 1]
        spent = spent + per
      end
    end
    -- Stopped inside a reply: the next call scans from the same cursor and skips what this logged.
    if stopped then break end
    job.cursor = reply[1]
    if job.cursor == "0" then job.pane = job.pane + 1 end
    if spent >= budget then break end
  end
  -- The groups taken, merged over the window's panes (the scan's counts spare one pane's reads).
  return mergeGroups(name, kind, job.panes, groups, counts), spent, job.pane > #job.panes
end
-- Keeps where job got (by later writes), or drops it when done.
local function saveJob(name, job, cells, done, ttl)
  if done then
    write("DEL", closingKey(name), loggedKey(name, job.start))
    return
  end
  local panes = {}
  for i, pane in ipairs(job.panes) do panes[i] = num(pane) end
  write("HSET", closingKey(name), "s", num(job.start), "e", num(job.stop), "p", table.concat(panes, ","),
    "i", num(job.pane), "k", job.cursor)
  for from = 1, #cells, 1000 do
    local groups = {}
    for i = from, math.min(#cells, from + 999) do groups[#groups + 1] = cells[i].group end
    write("SADD", loggedKey(name, job.start), unpack(groups))
  end
  if type(ttl) == "number" then
    write("PEXPIRE", closingKey(name), lifeOf(ttl))
    write("PEXPIRE", loggedKey(name, job.start), lifeOf(ttl))
  end
end
-- Lists a window's merged cells and logs them (unless a peek); \`continued\`: an earlier call
-- claimed the window (the reply says so, for a count of windows closed to count it once).
local function emit(name, kind, start, windowEnd, cells, continued)
  local rows = {}
  for i, cell in ipairs(cells) do rows[i] = rowText(cell) end
  out[#out + 1] = { name, num(start), num(windowEnd), rows, continued and 1 or 0 }
  if peek then return end
  for _, cell in ipairs(cells) do
    local min, max
    if kind == "min" then min = cell.extreme elseif kind == "max" then max = cell.extreme end
    local state
    if kind == "quantiles" then
      state = jsonObject("count", cell.count, "sum", 0, "min", cell.extreme, "max", cell.high,
        "distinct", 0, "approximate", true, "bins", raw(binsJson(cell)))
    else
      state = jsonObject("count", cell.count, "sum", cell.sum, "min", min, "max", max,
        "distinct", cell.distinct, "approximate", kind == "distinct")
    end
    logLater(logRecord("window.closed", "counter", name, "start", start, "end", windowEnd,
      "group", cell.group, "state", raw(state)))
  end
end
local budget, more = args.cells, false
for _, c in ipairs(args.counters) do
  local name, kind, size, ttl = c[1], c[2], c[4], c[5]
  local open = openKey(name)
  if not peek and type(ttl) == "number" then keepOpen(name, kind, c[3], size, ttl) end
  -- A window an earlier call claimed goes on first.
  local busy = false
  local job = readJob(name)
  if job and budget <= 0 then
    busy, more = true, true
  elseif job then
    local cells, spent, done = closeStep(name, kind, job, budget, listedGroups(name, job.start))
    budget = budget - spent
    if #cells > 0 then emit(name, kind, job.start, job.stop, cells, true) end
    if not peek then saveJob(name, job, cells, done, ttl) end
    if not done then
      busy, more = true, true
    end
  end
  local due = {}
  if not busy and limit > 0 then
    due = redis.call("ZRANGEBYSCORE", open, "-inf", num(closeTo), "LIMIT", 0, limit)
  end
  if #due > 0 then
    local live = redis.call("ZRANGE", livePanesKey(name), 0, -1)
    local claimed, perGroup = {}, fieldsPerGroup(kind)
    for _, startText in ipairs(due) do
      if budget <= 0 then
        more = true
        break
      end
      local start = tonumber(startText)
      local windowEnd = start + size
      local panes, total = {}, 0
      for _, paneText in ipairs(live) do
        local pane = tonumber(paneText)
        if pane >= start and pane < windowEnd then
          panes[#panes + 1] = pane
          total = total + redis.call("HLEN", paneKey(name, paneText)) / perGroup
        end
      end
      claimed[#claimed + 1] = startText
      -- A window the peek listed in part closes a part at a time, its listed groups only: whole,
      -- it would close groups whose alerts were not judged.
      -- The peek listed groups of this window, which takes no more writes once due: as many as its
      -- cells (never fewer than its groups) are all of them, with no pane's keys read.
      local only, listedSize = nil, 0
      if namedWindow(name, start) then only, listedSize = listedGroups(name, start) end
      if total <= budget and (only == nil or listedSize >= total or allListed(name, panes, only)) then
        budget = budget - total
        emit(name, kind, start, windowEnd, mergePanes(name, kind, panes))
      else
        table.sort(panes)
        local started = { start = start, stop = windowEnd, panes = panes, pane = 1, cursor = "0" }
        local cells, spent, done = closeStep(name, kind, started, budget, listedGroups(name, start))
        budget = budget - spent
        emit(name, kind, start, windowEnd, cells)
        if not peek then saveJob(name, started, cells, done, ttl) end
        if not done then
          more = true
          break
        end
      end
    end
    if not peek and #claimed > 0 then
      write("ZREM", open, unpack(claimed))
      -- Due in order of end: the last one claimed ends latest.
      local lastEnd = tonumber(claimed[#claimed]) + size
      if closedThrough == nil or lastEnd > closedThrough then closedThrough = lastEnd end
    end
  end
end
closedThrough = closeSessions(closeTo, limit, peek, now, write, logLater, out, closedThrough)
if #logged > 0 then expectLog() end
local statsChanged = {}
if raised ~= wm then statsChanged = { "wm", num(raised) } end
if closedThrough ~= clRead then
  statsChanged[#statsChanged + 1] = "cl"
  statsChanged[#statsChanged + 1] = num(closedThrough)
end
for _, command in ipairs(later) do redis.call(unpack(command)) end
for _, record in ipairs(logged) do appendLog(record, logTtl) end
-- When (the clock, ms) a close next has something to do if no batch is applied meanwhile (one
-- changes \`applied\` or the watermark): 0 at once, -1 never. Read after this call's writes, and
-- early rather than late (a pane or session counted as held when it may not be): a close before it
-- only finds nothing to do. Every key was read above, but a read that fails now (a key written
-- over meanwhile) says "at once".
-- An idle stream's stats (its watermark, counts, \`cl\`): a close that raised the watermark wrote
-- them at every sweep, which kept them alive (see writeStats); a skipped one writes nothing, so a
-- close is due again when they need that, or they would expire statsTtl after the last close with
-- work (the watermark read as none, the counts as 0) while the stream is still swept.
local statsDue, statsKept = nil, false
if type(idle) == "number" then
  local expiresAt = tonumber(stored[2])
  if dueForRefresh(expiresAt, now, statsLife) then expiresAt, statsKept = now + lifeOf(statsLife), true end
  -- The first time dueForRefresh holds.
  statsDue = expiresAt - statsLife - math.ceil(statsLife / 16) + 1
end
local function nextDue()
  if more then return 0 end
  local due = math.huge
  local function atLeast(at) if at < due then due = at end end
  -- An end (+ gap) closes once the cutoff reaches it: the watermark by an apply, or the clock.
  local function closesAt(score)
    if score <= cutoff then atLeast(0) elseif type(idle) == "number" then atLeast(score + lateness + idle) end
  end
  local function first(key)
    local reply = redis.pcall("ZRANGE", key, 0, 0, "WITHSCORES")
    if reply.err then return 0 end
    if #reply == 0 then return nil end
    return tonumber(reply[2])
  end
  -- (A window claimed and closed over several calls goes on: it set \`more\`.)
  for _, c in ipairs(args.counters) do
    local name, ttl = c[1], c[5]
    local firstEnd = first(openKey(name))
    if firstEnd then
      closesAt(firstEnd)
      -- A pane of an open window is kept alive (see keepOpen) once it has ttl + ttl/16 left: this
      -- call kept those that had, so the next is the first with more left (or one in no open
      -- window, which costs a close that finds nothing).
      if type(ttl) == "number" and due > 0 then
        local margin = ttl + math.ceil(ttl / 16)
        local live = redis.pcall("ZRANGEBYSCORE", livePanesKey(name), "(" .. num(now + margin), "+inf",
          "WITHSCORES", "LIMIT", 0, 1)
        if live.err then return 0 end
        if #live > 0 then atLeast(tonumber(live[2]) - margin) end
      end
    end
  end
  if type(args.sess) == "table" then
    for _, session in ipairs(args.sess) do
      local name, ttl = session[1], session[4]
      -- Open sessions: closed once the cutoff passes end + gap; kept alive with ttl/2 left.
      local openEnd = first(sessionOpenKey(name))
      if openEnd then closesAt(openEnd) end
      local alive = redis.pcall("ZRANGEBYSCORE", sessionAllKey(name), "(" .. num(now), "+inf", "WITHSCORES", "LIMIT", 0, 1)
      if alive.err then return 0 end
      if #alive > 0 and type(ttl) == "number" then atLeast(tonumber(alive[2]) - math.floor(ttl / 2)) end
      -- Closed sessions leave the index by start once they expire.
      local expires = first(sessionClosedKey(name))
      if expires then atLeast(expires) end
    end
  end
  if statsDue then atLeast(statsDue) end
  if due == math.huge then return -1 end
  if due <= now then return 0 end
  return due
end
-- With the watermark, \`applied\` and \`cl\` as this call leaves them: the caller compares them
-- with the stats' to tell whether a batch was applied since, or \`cl\` raised without one (by
-- keepFinal, a definition write's \`kf\`, an apply of an older definition whose events were all
-- late or duplicates), which moves the cutoff.
local wmAfter = stored[1]
if raised ~= wm then wmAfter = num(raised) end
local clAfter = closedThrough and num(closedThrough) or ""
local due = 0
if not peek then
  due = nextDue()
  -- Kept in the stats too (\`qn\` when, \`qa\`, \`qw\` and \`qc\` the stats it holds for: \`applied\`,
  -- \`wm\` and \`cl\`, \`qk\` the close's counters and options, hashed by the caller), for a process
  -- that has not closed it yet.
  local quiet = { "qn", num(due), "qa", stored[4] or "", "qw", wmAfter, "qk", args.qk or "",
    "qc", clAfter }
  for i = 1, #quiet, 2 do
    if stored[4 + (i + 1) / 2] ~= quiet[i + 1] then
      statsChanged[#statsChanged + 1] = quiet[i]
      statsChanged[#statsChanged + 1] = quiet[i + 1]
    end
  end
  -- Their life extended now, as statsDue counted on.
  if statsKept and #statsChanged == 0 then statsChanged = { "wm", wmAfter } end
end
if #statsChanged > 0 then writeStats(statsChanged, tonumber(stored[2]), now, statsLife) end
local reply = cjson.encode({ w = out, m = more and 1 or 0, n = due, a = stored[4] or "", wm = wmAfter,
  cl = clAfter, c = num(cutoff) })
-- A call that closed nothing is kept for nobody: sent again it would find the same.
if #out == 0 then return reply end
return keepReply(callKey, reply)
`;

/**
 * Claims alert firings. ARGV[1] is JSON
 * `{gen, logTtl, firings: [[alert, counter, start, end, group, value|false, ttl, approximate], …],
 * tk}`. Returns JSON: the indexes (1-based) of the firings that were new (the same call again, its
 * one-time token `tk` seen: the first one's); `{gone: 1}` when the definition record (KEYS[2]) says
 * the incarnation of generation `gen` is gone, as {@linkcode CLOSE_SCRIPT} asks it and says it.
 */
export const FIRE_SCRIPT = COMMON + `
local callKey, first = callReply(args.tk)
if first then return first end
-- An incarnation deleted, or deleted and created again, since the caller read it fires nothing
-- and writes nothing (definitionGone, as the close asks it): no alert.fired of a stream whose
-- DELETE answered is logged by an instance that has not heard of it yet. Said, so that the caller
-- reads the record again.
if KEYS[2] and definitionGone(redis.call("HMGET", KEYS[2], "v", "g", "x"), args.gen) then
  return '{"gone":1}'
end
local logTtl, firings = args.logTtl, args.firings
-- The log checked first (see refuseKey): a marker set for a firing the log then refused would
-- stop that alert for good.
if #firings > 0 then expectLog() end
-- So is each counter's index of markers.
local indexes = {}
for _, f in ipairs(firings) do
  if not indexes[f[2]] then
    indexes[f[2]] = true
    expectType(alertedKey(f[2]), "zset")
  end
end
-- A marker a firing finds in a window still open is indexed if it is not: one an older release
-- set (before markers were indexed) would not be kept while its window stays open, and the alert
-- would fire again once it expired. Indexed, it gets a new marker's life, so the index is still
-- due before it (see keepDueMarkers in CLOSE_SCRIPT). A read and a ZADD adding nothing for a
-- marker already indexed; a read for one of a closed window.
local function indexFound(counter, start, marker, ttl)
  -- Only read: a window list of another type is refused by the close, not here.
  local open = redis.pcall("ZSCORE", openKey(counter), num(start))
  if type(open) ~= "string" then return end
  local index = alertedKey(counter)
  if redis.call("ZADD", index, "NX", num(start), marker) == 0 then return end
  -- No shorter (a retention lowered since it fired).
  if redis.call("PTTL", marker) < ttl then redis.call("PEXPIRE", marker, ttl) end
  if redis.call("PTTL", index) < 0 then redis.call("PEXPIRE", index, ttl) end
end
local fired = {}
for i, f in ipairs(firings) do
  local alert, counter, start, windowEnd, group, value, ttl = f[1], f[2], f[3], f[4], f[5], f[6], f[7]
  local marker = alertKey(alert, counter, start, group)
  if not redis.call("SET", marker, "1", "NX", "PX", ttl) then
    indexFound(counter, start, marker, ttl)
  else
    -- Indexed by window start, so a close keeps the markers of open windows (see keepOpen).
    local index = alertedKey(counter)
    redis.call("ZADD", index, num(start), marker)
    -- Life only for an index that has none (a new one): a close gives it and the open windows'
    -- markers life again once it is due, which a firing extending it would put off past the
    -- older markers' expiry (see keepMarkers in CLOSE_SCRIPT).
    if redis.call("PTTL", index) < 0 then redis.call("PEXPIRE", index, ttl) end
    -- false (no value) is logged as null; a string is a quantiles counter's value as JSON.
    if type(value) == "string" then value = raw(value) elseif type(value) ~= "number" then value = nil end
    -- An estimate (a HyperLogLog's count) says so, as the window's state does.
    local estimate = f[8] == true and { "approximate", true } or {}
    appendLog(logRecord("alert.fired", "alert", alert, "counter", counter, "start", start,
      "end", windowEnd, "group", group, "value", value, unpack(estimate)), logTtl)
    fired[#fired + 1] = i
  end
end
return keepReply(callKey, cjson.encode(fired))
`;

/**
 * Appends records to the log. ARGV[1] is JSON `{logTtl, records: ["<record JSON>", …], tk}`.
 * Returns how many; the same call again (its one-time token `tk` seen) appends nothing.
 */
export const APPEND_SCRIPT = COMMON + `
local callKey, first = callReply(args.tk)
if first then return tonumber(first) end
local logTtl, records = args.logTtl, args.records
-- The log and its hold checked first (see refuseKey): a record appended before one that fails
-- would be appended again when the call is made again.
if #records > 0 then expectLog() end
for _, record in ipairs(records) do appendLog(record, logTtl) end
keepReply(callKey, num(#records))
return #records
`;

/**
 * Marks how far the webhook dispatch took the log (see `Store.markDispatched`). ARGV[1] is JSON
 * `{through: "<log id>" | false, ttl}`: with an id, the hold's mark becomes the later of it and
 * the one there, lives `ttl` more, and the entries at or before it beyond the newest LOG_RETAIN
 * are trimmed (at most {@linkcode LOG_TRIM_STEP}); with false the hold goes and the log is
 * capped near LOG_RETAIN again. Returns the hold's `lost` count, which it clears; the same call
 * again (its one-time token `tk` seen) the first one's count, so a send repeated after one that
 * ran does not report the entries lost as none.
 */
export const MARK_SCRIPT = COMMON + `
-- The same mark sent again: the count the first one reported (and cleared), not 0.
local callKey, first = callReply(args.tk)
if first then return tonumber(first) end
local through, ttl = args.through, args.ttl
local lost = tonumber(redis.call("HGET", HOLD_KEY, "lost") or "0")
if not through then
  redis.call("DEL", HOLD_KEY)
  if redis.call("EXISTS", LOG_KEY) == 1 then
    redis.call("XTRIM", LOG_KEY, "MAXLEN", "~", LOG_RETAIN)
  end
  return tonumber(keepReply(callKey, num(lost)))
end
local mark = redis.call("HGET", HOLD_KEY, "m")
if not mark or logIdAfter(through, mark) then mark = through end
redis.call("HSET", HOLD_KEY, "m", mark)
redis.call("HDEL", HOLD_KEY, "lost")
redis.call("PEXPIRE", HOLD_KEY, ttl)
local length = redis.call("XLEN", LOG_KEY)
local excess = length - LOG_RETAIN
if excess > 0 then
  local rows = redis.call("XRANGE", LOG_KEY, "-", mark, "COUNT", math.min(excess, ${LOG_TRIM_STEP}))
  if #rows > 0 then redis.call("XTRIM", LOG_KEY, "MAXLEN", length - #rows) end
end
return tonumber(keepReply(callKey, num(lost)))
`;

/**
 * Records live subscribers' demand. ARGV[1] is JSON `{expiresAt, ttl, types: [type, …]}`;
 * the `demand` hash maps each type to the time (ms) it is wanted until.
 */
export const DEMAND_SCRIPT = COMMON + `
local expiresAt, ttl, types = args.expiresAt, args.ttl, args.types
for _, recordType in ipairs(types) do redis.call("HSET", DEMAND_KEY, recordType, num(expiresAt)) end
redis.call("PEXPIRE", DEMAND_KEY, ttl)
return #types
`;

/**
 * Raises a stream's \`cl\` (\`StreamStats.closedThrough\`) to ARGV[1] JSON \`{through}\` when it is
 * earlier (or absent) and the stream has a watermark: see \`Store.keepFinal\`. The stats keep
 * their life. Returns 1 when it raised it, else 0.
 */
export const KEEP_FINAL_SCRIPT = COMMON + luaRaiseClosedThrough("STATS_KEY") + `
local stored = redis.call("HMGET", STATS_KEY, "wm", "cl")
local wm = expectStatsTime("wm", stored[1])
local closedThrough = expectStatsTime("cl", stored[2])
if wm == nil then return 0 end
return raiseClosedThrough(closedThrough, args.through)
`;

/** Reads the sessions of a session counter (see `_session_scripts.ts`). */
export const SESSION_READ = COMMON + SESSION_LUA + READ_REPLY_LUA + SESSION_READ_SCRIPT;

/**
 * The live panes of one counter that start in a range, ARGV[1] JSON `{name, from, to, now}`:
 * those of its index of live panes whose life (their score) ends after `now` and whose start is in
 * `[from, to)`. Returns JSON `[paneText, …]`, in index order (by life, not start). Only those
 * travel: the index holds every pane the counter keeps (86,400 of a tumbling `1s` counter kept a
 * day), and sent whole, reading one window of such a counter took 1.6 MB and over a second.
 */
export const PANES_SCRIPT = PRELUDE + `
local name, from, to, now = args.name, args.from, args.to, args.now
local out = {}
for _, paneText in ipairs(redis.call("ZRANGEBYSCORE", livePanesKey(name), "(" .. num(now), "+inf")) do
  local start = tonumber(paneText)
  if start >= from and start < to then out[#out + 1] = paneText end
end
-- (cjson writes an empty table as an object: the caller reads anything else as no panes.)
return cjson.encode(out)
`;
