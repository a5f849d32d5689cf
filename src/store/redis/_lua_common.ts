/**
 * The Lua prelude every Redis script of both Redis stores starts with
 * (`_scripts.ts`, `_delivery_scripts.ts`); each file adds its own helpers
 * after it.
 *
 * Every script is called with one key, KEYS[1]: the hash-tagged prefix
 * (`es:{orders}:`, `es:{wh}:`) that every key it touches starts with, so a
 * script's keys share one Redis Cluster slot. Its arguments come as JSON
 * (see `RedisCalls.script`); every script takes an object in ARGV[1], decoded
 * here into `args`, and reads its fields into named locals first thing.
 * A script that writes may take a one-time token in `args.tk` and keep its
 * reply under `call:<token>` (`callReply`, `keepReply`): the same call sent
 * again answers that reply instead of running again. A script that writes checks the keys it may
 * write before its first write (`refuseKey`, `expectType`, `readKey` of {@linkcode LUA_READ_KEY}):
 * Redis keeps what a script wrote before one of its commands failed.
 *
 * @module
 */
/**
 * How long (ms) a call's one-time token is kept (an apply's reply, a deletion): a call sent again
 * within it (Deno's `fetch` sends a request again once when a kept-alive connection closes before
 * any reply, and the client retries once, though Redis may have run it) answers as the first
 * instead of running again.
 */
export const CALL_REPLY_TTL_MS = 60_000;

/**
 * Lua `bytesBefore(a, b)`: whether string a sorts before b in byte order, as zset members of one
 * score do (Lua's own `<` follows the server's collation locale). For the scripts that need it.
 */
export const LUA_BYTES_BEFORE = `
local function bytesBefore(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
`;

/**
 * Lua `refillFrom(now, updated, window)`: the time a token bucket updated at `updated` refills from
 * after an update at `now`, `updated` when it is ahead of `now` by at most `window` (the time the
 * bucket takes to refill from empty), else `now`. The rule of the memory store's `refillFrom`
 * (`src/store/memory/_refill_from.ts` says why), for the rate-limit buckets of `_scripts.ts` and
 * the endpoint buckets of `_delivery_scripts.ts`.
 */
export const LUA_REFILL_FROM = `
local function refillFrom(now, updated, window)
  if updated > now and updated - now <= window then return updated end
  return now
end
`;

/**
 * Lua `readKey(expected, command, key, ...)` (after {@linkcode LUA_COMMON}, whose refuseKey it
 * calls): a read that names a key of the wrong type. For the scripts that need it (each helper is
 * a closure made on every call of a script that holds it).
 */
export const LUA_READ_KEY = `
-- A read (command key ...) of a key that must be of type expected or absent: its reply, or, when
-- Redis refuses it for the key's type, a refusal naming the key (see refuseKey).
local function readKey(expected, command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == "table" and reply.err then
    local found = redis.call("TYPE", key).ok
    if found ~= expected then refuseKey(key, "a " .. found, "a " .. expected) end
    error(reply)
  end
  return reply
end
`;

export const LUA_COMMON = `
local P = KEYS[1]
local args = cjson.decode(ARGV[1])
-- Numbers leave Lua as %.17g text: Lua's own number-to-string (.. and tostring)
-- and cjson.encode keep only 14 significant digits. An integer below 2^53 (times, counts) is
-- the same text written as %d, several times cheaper than formatting a float; -0 is not. (x % 1 is
-- 0 for a whole x only; NaN and infinities give NaN. It asks no C function, as math.floor does.)
local function num(x)
  if x % 1 == 0 and x > -9007199254740992 and x < 9007199254740992 and (x ~= 0 or 1 / x > 0) then
    return string.format("%d", x)
  end
  return string.format("%.17g", x)
end
-- A writing call's one-time token (args.tk, absent for none): the key its reply is kept under
-- and, when this is the same call sent again, that reply (text), which the script returns as is.
local function callReply(tk)
  if type(tk) ~= "string" then return nil, false end
  local key = P .. "call:" .. tk
  return key, redis.call("GET", key)
end
-- Keeps a call's reply (text) under its key from callReply for ${CALL_REPLY_TTL_MS} ms; returns it.
local function keepReply(key, reply)
  if key then redis.call("SET", key, reply, "PX", "${CALL_REPLY_TTL_MS}") end
  return reply
end
-- Redis does not undo what a script wrote before one of its commands failed, and a command fails on
-- a key of another type (one that something else wrote over). So a script that writes checks every
-- key it may write before its first write (by reading it, or here), and one that finds a key of the
-- wrong type writes nothing and fails naming it.
local function refuseKey(key, found, expected)
  error({ err = "WRONGTYPE edgestream key " .. key .. " holds " .. found .. " where " .. expected ..
    " belongs: nothing was written (delete or repair the key)" })
end
-- Refuses key unless it is of type expected or absent; returns its type ("none" when absent).
local function expectType(key, expected)
  local found = redis.call("TYPE", key).ok
  if found ~= "none" and found ~= expected then refuseKey(key, "a " .. found, "a " .. expected) end
  return found
end
-- Text HINCRBY adds to: an integer without a plus sign, a leading zero or -0 (within 18 digits).
local function isIntegerText(text)
  local digits = string.match(text, "^%-?([1-9]%d*)$")
  return text == "0" or (digits ~= nil and #digits <= 18)
end
-- Text of a definition version as the definition store writes it (a record's \`a\`, the stats'
-- \`dv\`): 1 to 15 digits, no sign nor leading zero, so within 2^53 (as the store's TypeScript
-- reads the stats' \`dv\`). Not isIntegerText: "0", "-1" or 17 digits are no version a write makes.
local function isVersionText(text)
  return #text <= 15 and string.find(text, "^[1-9]%d*$") ~= nil
end
-- The life (ms) a write gives a key that must live ttl after its last write (a pane, the stats
-- hash): ttl and an eighth more, so it is not extended on every write (see dueForRefresh in
-- _scripts.ts). The window store's scripts and the definition write give it alike.
local function lifeOf(ttl) return ttl + math.ceil(ttl / 8) end
`;

/**
 * A TypeScript string constant as a Lua string literal, for putting shared
 * constants into script text. Only printable ASCII without quotes or
 * backslashes is taken, so the text needs no escaping in Lua.
 */
export function luaString(text: string): string {
  if (!/^[ -~]*$/.test(text) || /["\\]/.test(text)) {
    throw new Error(`Not a plain Lua string constant: ${JSON.stringify(text)}`);
  }
  return `"${text}"`;
}

/**
 * Lua over the stats hash at the Lua expression `statsKey` (after {@linkcode LUA_COMMON}, whose
 * refuseKey it calls): `expectStatsTime(field, text)` reads a field holding a time (the
 * watermark `wm`, `cl`). Shared by the window store's scripts and the definition write, so both
 * read them alike; {@linkcode luaRaiseClosedThrough} raises `cl`.
 */
export function luaStatsTime(statsKey: string): string {
  return `
-- A stats field holding a time (the watermark \`wm\`, \`cl\`): absent, or a finite number as num()
-- writes it; anything else is refused (see refuseKey) rather than taken as none and written over.
-- Returns the time (nil when absent), so the text is turned into a number once.
local function expectStatsTime(field, text)
  if not text then return nil end
  local x = tonumber(text)
  if x == nil or x ~= x or x == math.huge or x == -math.huge or string.find(text, "%s") then
    refuseKey(${statsKey} .. " field " .. field, "'" .. text .. "'", "a time in ms")
  end
  return x
end
`;
}

/**
 * Lua `raiseClosedThrough(closed, through)` over the stats hash at the Lua expression `statsKey`
 * (after {@linkcode LUA_COMMON} and {@linkcode luaStatsTime}): raises `cl`. Apart, for the scripts
 * that raise it (the keep-final script, the definition write): each helper is a closure made on
 * every call of a script that holds it, and the apply script never calls this one.
 */
export function luaRaiseClosedThrough(statsKey: string): string {
  return `
-- Raises the stats' \`cl\` to through unless closed (as expectStatsTime read it) is as late
-- already: what was called final stays so, never less. Returns 1 when it raised it, else 0.
local function raiseClosedThrough(closed, through)
  if closed ~= nil and closed >= through then return 0 end
  redis.call("HSET", ${statsKey}, "cl", num(through))
  return 1
end
`;
}
