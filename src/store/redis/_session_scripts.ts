/**
 * Session windows in the Redis store: Lua for the apply and close scripts
 * (`_scripts.ts` splices it in after their common prelude, so sessions are
 * merged in the same EVALSHA as everything else), the script that reads
 * sessions, and the process-side grouping of a batch's updates into runs.
 *
 * Key layout under the stream's prefix, per session counter `<c>`:
 * - `sz:<c>:<group>` — zset of the group's open sessions: member = start, score = end.
 * - `so:<c>` — zset of all open sessions: member `<start>:<group>`, score = end + gap
 *   (when it becomes final); its size is what `maxSessions` bounds.
 * - `sa:<c>` — zset of the open sessions: member `<start>:<group>`, score = expiry time (ms), to
 *   forget expired ones and to find those a sweep keeps alive (see {@linkcode SESSION_CLOSE_LUA}).
 *   (A release before this one kept closed sessions here too, until they expired.)
 * - `sc:<c>` — zset of the closed sessions, the same members and scores, to forget expired ones.
 * - `ss:<c>` — the members of both, score = start, for reads by start.
 * - `sv:<c>:<start>:<group>` — hash of a session: `c` count, `s` sum, `m` min or max,
 *   `e` end, `x` set once closed. PX = the counter's TTL after its last write, its close, or a
 *   sweep that kept it (open) alive.
 * - `sh:<c>:<start>:<group>` — HyperLogLog of a distinct session counter.
 *
 * A session's key holds its start, so a merge that moves the start writes the
 * merged state under the new start and deletes the old keys (HLLs merged with
 * PFMERGE). Closed sessions leave `sz` and `so`: only open ones merge, and the
 * lateness check already keeps every event that could reach a closed one out.
 *
 * @module
 */
import { type CounterMeta, SESSIONS_PER_WINDOW } from "../types.ts";

/** Lua helpers of session counters, spliced into the apply and close scripts after the prelude. */
export const SESSION_LUA = `
local function sessionGroupKey(name, group) return P .. "sz:" .. name .. ":" .. group end
local function sessionOpenKey(name) return P .. "so:" .. name end
local function sessionAllKey(name) return P .. "sa:" .. name end
local function sessionClosedKey(name) return P .. "sc:" .. name end
local function sessionStartKey(name) return P .. "ss:" .. name end
local function sessionValueKey(name, startText, group)
  return P .. "sv:" .. name .. ":" .. startText .. ":" .. group
end
local function sessionHllKey(name, startText, group)
  return P .. "sh:" .. name .. ":" .. startText .. ":" .. group
end
-- Adds a count, sum and extreme to a session hash (the extreme only for min and max).
local function addToSession(key, kind, count, sum, low, high)
  if kind == "sum" or kind == "avg" then
    -- The sum added here in doubles, as the memory store adds (HINCRBYFLOAT adds in long double
    -- and writes 17 digits of that, which may end in another last bit); the count with it.
    local stored = redis.call("HMGET", key, "c", "s")
    redis.call("HSET", key, "c", num((tonumber(stored[1]) or 0) + count), "s",
      num((tonumber(stored[2]) or 0) + sum))
    return
  end
  redis.call("HINCRBY", key, "c", count)
  if kind == "min" or kind == "max" then
    local value = low
    if kind == "max" then value = high end
    if type(value) == "number" then
      local current = tonumber(redis.call("HGET", key, "m"))
      if current == nil or (kind == "min" and value < current) or (kind == "max" and value > current) then
        redis.call("HSET", key, "m", num(value))
      end
    end
  end
end
-- The group's open sessions a run [runStart, runEnd] may reach, as ZRANGEBYSCORE … WITHSCORES
-- gives them (start, end, …): those ending after runStart - gap that start before runEnd + gap.
-- A group's open sessions are disjoint and at least the gap apart, so by end (the score) they are
-- in start order too: those are the ones ending before runEnd + gap and at most the first ending
-- at or after it (a session that may start before runEnd + gap; none after it does). Reading every
-- session ending after runStart - gap read all the group's later sessions for each run: a backfill
-- sent newest first read them all once a run, seconds of Redis held for a batch.
local function sessionsNear(groupKey, runStart, runEnd, gap)
  local found = redis.call("ZRANGEBYSCORE", groupKey, "(" .. num(runStart - gap),
    "(" .. num(runEnd + gap), "WITHSCORES")
  local after = redis.call("ZRANGEBYSCORE", groupKey, num(runEnd + gap), "+inf", "WITHSCORES",
    "LIMIT", 0, 1)
  if #after > 0 then
    found[#found + 1] = after[1]
    found[#found + 1] = after[2]
  end
  return found
end
-- Merges one run of a group's events, [counterIndex, start, group, count, sum, min|false,
-- max|false, values, end?], into the group's open sessions within the gap of it,
-- or opens a session (unless maxSessions are open: then the run is dropped and counted).
local function applySessionRun(counter, session, cell, now)
  local name, kind, ttl, gap = counter.name, counter.kind, counter.ttl, session[2]
  local runStart, group, count, sum, low, high, values =
    cell[2], cell[3], cell[4], cell[5], cell[6], cell[7], cell[8]
  -- A cell rebuilt in the script (some event duplicate or late) is one event time and carries
  -- an empty bucket table there, as every rebuilt cell does: its end is its start.
  local runEnd = runStart
  if type(cell[9]) == "number" then runEnd = cell[9] end
  local groupKey, openKey, allKey = sessionGroupKey(name, group), sessionOpenKey(name), sessionAllKey(name)
  local hits = {}
  local found = sessionsNear(groupKey, runStart, runEnd, gap)
  for i = 1, #found, 2 do
    local startText = found[i]
    local start = tonumber(startText)
    if start < runEnd + gap then
      local member = startText .. ":" .. group
      if redis.call("EXISTS", sessionValueKey(name, startText, group)) == 1 then
        hits[#hits + 1] = { start = start, finish = tonumber(found[i + 1]), text = startText }
      else
        -- Expired before it closed: it is gone.
        redis.call("ZREM", groupKey, startText)
        redis.call("ZREM", openKey, member)
        redis.call("ZREM", allKey, member)
        redis.call("ZREM", sessionStartKey(name), member)
      end
    end
  end
  if #hits == 0 and redis.call("ZCARD", openKey) >= session[3] then
    redis.call("HINCRBY", STATS_KEY, "overflow:" .. name, count)
    return
  end
  local start, finish = runStart, runEnd
  for _, hit in ipairs(hits) do
    if hit.start < start then start = hit.start end
    if hit.finish > finish then finish = hit.finish end
  end
  local startText = num(start)
  local key = sessionValueKey(name, startText, group)
  local hll = sessionHllKey(name, startText, group)
  local mergedHlls = {}
  for _, hit in ipairs(hits) do
    if hit.start ~= start then
      local oldKey = sessionValueKey(name, hit.text, group)
      local old = redis.call("HMGET", oldKey, "c", "s", "m")
      local extreme = tonumber(old[3]) or false
      addToSession(key, kind, tonumber(old[1]) or 0, tonumber(old[2]) or 0, extreme, extreme)
      redis.call("DEL", oldKey)
      if kind == "distinct" then mergedHlls[#mergedHlls + 1] = sessionHllKey(name, hit.text, group) end
      local member = hit.text .. ":" .. group
      redis.call("ZREM", groupKey, hit.text)
      redis.call("ZREM", openKey, member)
      redis.call("ZREM", allKey, member)
      redis.call("ZREM", sessionStartKey(name), member)
    end
  end
  addToSession(key, kind, count, sum, low, high)
  redis.call("HSET", key, "e", num(finish))
  redis.call("PEXPIRE", key, ttl)
  if kind == "distinct" then
    if #mergedHlls > 0 then
      redis.call("PFMERGE", hll, unpack(mergedHlls))
      redis.call("DEL", unpack(mergedHlls))
    end
    for i = 1, #values, 500 do
      redis.call("PFADD", hll, unpack(values, i, math.min(i + 499, #values)))
    end
    redis.call("PEXPIRE", hll, ttl)
  end
  local member = startText .. ":" .. group
  redis.call("ZADD", groupKey, num(finish), startText)
  -- (Indexes are extended, never shortened: see shortOf.)
  if shortOf(groupKey, ttl) then redis.call("PEXPIRE", groupKey, ttl) end
  redis.call("ZADD", openKey, num(finish + gap), member)
  redis.call("ZADD", allKey, num(now + ttl), member)
  redis.call("ZADD", sessionStartKey(name), num(start), member)
end
-- Checks the keys applySessions may write for these cells before any is written (see refuseKey):
-- the counter's zsets, the group's, and the hash (and HyperLogLog) of each session a run may merge
-- with (as applySessionRun finds them) and of the one it may start. A run that merges with a
-- session an earlier run of the batch made or moved writes a key checked for that run.
local function checkSessionKeys(counters, cells)
  local sessions = {}
  for _, session in ipairs(args.sess) do sessions[session[1] + 1] = session end
  local checked = {}
  local function zset(key)
    if not checked[key] then
      checked[key] = true
      expectType(key, "zset")
    end
  end
  local function session(name, kind, startText, group)
    local key = sessionValueKey(name, startText, group)
    if checked[key] then return end
    checked[key] = true
    expectNumbers(key, { "c", "s" })
    if kind == "distinct" then expectHll(sessionHllKey(name, startText, group)) end
  end
  for _, cell in ipairs(cells) do
    local found = sessions[cell[1] + 1]
    if found then
      local counter = counters[cell[1] + 1]
      local name, kind, gap, runStart, group = counter.name, counter.kind, found[2], cell[2], cell[3]
      local runEnd = runStart
      if type(cell[9]) == "number" then runEnd = cell[9] end
      zset(sessionOpenKey(name))
      zset(sessionAllKey(name))
      zset(sessionStartKey(name))
      local groupKey = sessionGroupKey(name, group)
      zset(groupKey)
      session(name, kind, num(runStart), group)
      local near = sessionsNear(groupKey, runStart, runEnd, gap)
      for i = 1, #near, 2 do
        if tonumber(near[i]) < runEnd + gap then session(name, kind, near[i], group) end
      end
    end
  end
end
-- Applies the cells of session counters (args.sess: [[counterIndex, gap, maxSessions], …])
-- and returns the other cells, for the pane code.
local function applySessions(counters, cells, now)
  if type(args.sess) ~= "table" then return cells end
  local sessions = {}
  for _, session in ipairs(args.sess) do sessions[session[1] + 1] = session end
  local touched = {}
  for _, cell in ipairs(cells) do
    local session = sessions[cell[1] + 1]
    if session then
      local counter = counters[cell[1] + 1]
      touched[counter.name] = counter
    end
  end
  -- Once per counter rather than per run, before the runs: an open session that expired (its
  -- hash gone, no sweep closed it) leaves the indexes, so it takes no room of maxSessions (the
  -- memory store forgets it too). Its group's zset keeps it until a run of that group finds it
  -- gone (applySessionRun), as that key was not checked here.
  for name in pairs(touched) do
    local openKey, allKey, startKey = sessionOpenKey(name), sessionAllKey(name), sessionStartKey(name)
    local expired = redis.call("ZRANGEBYSCORE", allKey, "-inf", num(now))
    for i = 1, #expired, 500 do
      local last = math.min(i + 499, #expired)
      redis.call("ZREM", startKey, unpack(expired, i, last))
      redis.call("ZREM", openKey, unpack(expired, i, last))
    end
    redis.call("ZREMRANGEBYSCORE", allKey, "-inf", num(now))
  end
  local rest = {}
  for _, cell in ipairs(cells) do
    local session = sessions[cell[1] + 1]
    if session then
      applySessionRun(counters[cell[1] + 1], session, cell, now)
    else
      rest[#rest + 1] = cell
    end
  end
  -- The index keys live as long as their newest session.
  for name, counter in pairs(touched) do
    local openKey, allKey, startKey = sessionOpenKey(name), sessionAllKey(name), sessionStartKey(name)
    -- Extended, never shortened (see shortOf): they list sessions given a longer life under a
    -- retention lowered since.
    local ttl = counter.ttl
    if shortOf(openKey, ttl) then redis.call("PEXPIRE", openKey, ttl) end
    if shortOf(allKey, ttl) then redis.call("PEXPIRE", allKey, ttl) end
    if shortOf(startKey, ttl) then redis.call("PEXPIRE", startKey, ttl) end
  end
  return rest
end
`;

/**
 * {@linkcode SESSION_LUA}'s closing of sessions, for the close script only: the apply script does
 * not create a closure it never calls.
 */
export const SESSION_CLOSE_LUA = `
-- Keeps the open sessions of a session counter alive while they wait to close (a producer's pause
-- stands its watermark still): one whose life ends within ttl/2 (\`sa\`, by expiry: only those are
-- asked) gets ttl from now, with its HyperLogLog, its group's zset and the counter's indexes, as a
-- write would give it. So an open session outlives a pause as long as some instance sweeps more
-- often than ttl/2, and is extended at most once per ttl/2 of it. At most \`most\` a sweep, those
-- nearest their end first (as the sessions it closes are bounded): up to maxSessions (100,000 by
-- default) written in one burst come due together, and keeping them all in one script would hold
-- Redis for seconds. By later writes (write(…)).
local function keepSessionsOpen(name, kind, ttl, now, most, write)
  local openKey, allKey = sessionOpenKey(name), sessionAllKey(name)
  local soon = redis.call("ZRANGEBYSCORE", allKey, "(" .. num(now), num(now + math.floor(ttl / 2)),
    "WITHSCORES", "LIMIT", 0, most)
  if #soon == 0 then return end
  local groups, kept, moved = {}, false, false
  for i = 1, #soon, 2 do
    local member = soon[i]
    if not redis.call("ZSCORE", openKey, member) then
      -- Closed by a release before this one, which left closed sessions here: moved to \`sc\`, as
      -- this release closes them, so it neither takes an open one's room here nor is asked again.
      write("ZREM", allKey, member)
      write("ZADD", sessionClosedKey(name), soon[i + 1], member)
      moved = true
    else
      local colon = string.find(member, ":", 1, true)
      local startText, group = string.sub(member, 1, colon - 1), string.sub(member, colon + 1)
      write("PEXPIRE", sessionValueKey(name, startText, group), ttl)
      if kind == "distinct" then write("PEXPIRE", sessionHllKey(name, startText, group), ttl) end
      if not groups[group] then
        groups[group] = true
        local groupKey = sessionGroupKey(name, group)
        if shortOf(groupKey, ttl) then write("PEXPIRE", groupKey, ttl) end
      end
      write("ZADD", allKey, num(now + ttl), member)
      kept = true
    end
  end
  -- (Its members' lives end within ttl/2: ttl covers them.)
  -- Extended, never shortened (see shortOf).
  local closedKey, startKey = sessionClosedKey(name), sessionStartKey(name)
  if moved and shortOf(closedKey, ttl) then write("PEXPIRE", closedKey, ttl) end
  if kept then
    if shortOf(openKey, ttl) then write("PEXPIRE", openKey, ttl) end
    if shortOf(allKey, ttl) then write("PEXPIRE", allKey, ttl) end
    if shortOf(startKey, ttl) then write("PEXPIRE", startKey, ttl) end
  end
end
-- Closes the open sessions (args.sess: [[name, kind, gap, ttl], …]) with end + gap <= cutoff,
-- at most limit * ${SESSIONS_PER_WINDOW} per counter, appending [name, start, end, [[group, count, sum,
-- minOrMax, distinct]]] to out and, unless peeking, logging window.closed for each, keeping the
-- others alive (keepSessionsOpen), giving each it closes ttl from now (it stays readable that
-- long; a longer life it has stays) and forgetting closed ones that expired. It reads only: its
-- writes go to write(command, …) and its records to logLater(record). Returns closedThrough (a
-- number or nil) raised to the latest end + gap of a session it closed.
local function closeSessions(cutoff, limit, peek, now, write, logLater, out, closedThrough)
  if type(args.sess) ~= "table" then return closedThrough end
  for _, session in ipairs(args.sess) do
    local name, kind, gap, ttl = session[1], session[2], session[3], session[4]
    local openKey, allKey = sessionOpenKey(name), sessionAllKey(name)
    local closedKey, startKey = sessionClosedKey(name), sessionStartKey(name)
    if not peek then
      keepSessionsOpen(name, kind, ttl, now, limit * ${SESSIONS_PER_WINDOW}, write)
      -- Closed sessions that expired leave the index by start: as many a call as it may close
      -- (sessions closed together expire together), the rest at the next.
      local expired = redis.call("ZRANGEBYSCORE", closedKey, "-inf", num(now), "LIMIT", 0,
        limit * ${SESSIONS_PER_WINDOW})
      if #expired > 0 then
        expectType(startKey, "zset")
        for i = 1, #expired, 500 do
          local last = math.min(i + 499, #expired)
          write("ZREM", startKey, unpack(expired, i, last))
          write("ZREM", closedKey, unpack(expired, i, last))
        end
      end
    end
    local due
    if type(args.th) == "number" and type(args.ts) == "table" then
      -- Of those due at \`th\` (the latest cutoff can be), none after \`ts\` in the close order
      -- (CloseOptions.throughSession): members of one score sort by their bytes.
      local last = num(args.ts[1]) .. ":" .. args.ts[2]
      local scored = redis.call("ZRANGEBYSCORE", openKey, "-inf", num(cutoff), "WITHSCORES",
        "LIMIT", 0, limit * ${SESSIONS_PER_WINDOW})
      due = {}
      for i = 1, #scored, 2 do
        if tonumber(scored[i + 1]) == args.th and bytesBefore(last, scored[i]) then break end
        due[#due + 1] = scored[i]
      end
    else
      due = redis.call("ZRANGEBYSCORE", openKey, "-inf", num(cutoff), "LIMIT", 0,
        limit * ${SESSIONS_PER_WINDOW})
    end
    -- The sessions it closes leave \`sa\` for \`sc\` in one ZREM and one ZADD (of at most 500 each).
    local closedMembers, closedScores = {}, {}
    for _, member in ipairs(due) do
      local colon = string.find(member, ":", 1, true)
      local startText, group = string.sub(member, 1, colon - 1), string.sub(member, colon + 1)
      local key = sessionValueKey(name, startText, group)
      local stored = redis.call("HMGET", key, "c", "s", "m", "e")
      if not peek then
        local groupKey = sessionGroupKey(name, group)
        expectType(groupKey, "zset")
        write("ZREM", openKey, member)
        write("ZREM", groupKey, startText)
      end
      if stored[1] then
        local count, sum, extreme = tonumber(stored[1]), tonumber(stored[2]) or 0, tonumber(stored[3])
        local start, finish = tonumber(startText), tonumber(stored[4])
        local distinct = 0
        if kind == "distinct" then distinct = redis.call("PFCOUNT", sessionHllKey(name, startText, group)) end
        out[#out + 1] = { name, startText, num(finish),
          { { group, num(count), num(sum), extreme and num(extreme) or "", num(distinct) } } }
        if not peek then
          write("HSET", key, "x", "1")
          -- Its life: ttl from now, unless it was given a longer one (a retention lowered since).
          local expiresAt = tonumber(redis.call("ZSCORE", allKey, member))
          if expiresAt == nil or expiresAt < now + ttl then
            expiresAt = now + ttl
            write("PEXPIRE", key, ttl)
            if kind == "distinct" then write("PEXPIRE", sessionHllKey(name, startText, group), ttl) end
          end
          closedMembers[#closedMembers + 1] = member
          closedScores[#closedScores + 1] = num(expiresAt)
          closedScores[#closedScores + 1] = member
          if closedThrough == nil or finish + gap > closedThrough then closedThrough = finish + gap end
          local min, max
          if kind == "min" then min = extreme elseif kind == "max" then max = extreme end
          local state = jsonObject("count", count, "sum", sum, "min", min, "max", max,
            "distinct", distinct, "approximate", kind == "distinct")
          logLater(logRecord("window.closed", "counter", name, "start", start, "end", finish,
            "group", group, "state", raw(state)))
        end
      end
    end
    -- (\`sa\` and \`sc\`, which these write to, were read above: Redis refused another type.)
    if #closedMembers > 0 then
      for i = 1, #closedMembers, 500 do
        write("ZREM", allKey, unpack(closedMembers, i, math.min(i + 499, #closedMembers)))
      end
      for i = 1, #closedScores, 1000 do
        write("ZADD", closedKey, unpack(closedScores, i, math.min(i + 999, #closedScores)))
      end
      -- Extended, never shortened (see shortOf).
      if shortOf(closedKey, ttl) then write("PEXPIRE", closedKey, ttl) end
      if shortOf(startKey, ttl) then write("PEXPIRE", startKey, ttl) end
    end
  end
  return closedThrough
end
`;

/**
 * Reads the live sessions of one counter, newest start first. ARGV[1] is JSON
 * `{name, kind, from, to, limit|false, open?, stats?, now}`; at most `limit` of them, those
 * that start together by group key (as the memory store and the reader order them). Returns JSON
 * `[[start, end, group, count, sum, minOrMax, distinct, closed], …]`,
 * numbers as text, `""` for no min or max, closed `1` or `0`; with `stats`, those rows with the
 * stats, by `readReply` (`READ_REPLY_LUA` in `_scripts.ts`, which this script follows).
 */
export const SESSION_READ_SCRIPT = `
local name, kind, from, to, limit = args.name, args.kind, args.from, args.to, args.limit
local out = {}
local members
if args.open then
  -- The open sessions only: \`so\` holds at most maxSessions, whatever the closed ones retained.
  -- In no order: the caller sorts them and applies \`limit\`.
  members = {}
  for _, member in ipairs(redis.call("ZRANGE", sessionOpenKey(name), 0, -1)) do
    local start = tonumber(string.sub(member, 1, string.find(member, ":", 1, true) - 1))
    if start >= from and start < to then members[#members + 1] = member end
  end
elseif type(limit) == "number" then
  -- A member whose hash expired (the index by start keeps it until a sweep or a write of the
  -- counter forgets it) is skipped before it counts towards the limit, as the memory store skips
  -- it: the read goes on past such members, in chunks, until it has \`limit\` live ones.
  local startKey = sessionStartKey(name)
  local function live(member)
    local colon = string.find(member, ":", 1, true)
    return redis.call("EXISTS", sessionValueKey(name, string.sub(member, 1, colon - 1),
      string.sub(member, colon + 1))) == 1
  end
  -- The first \`count\` live members that \`command\` (ZRANGEBYSCORE or ZREVRANGEBYSCORE) of the
  -- index by start gives between its bounds \`first\` and \`second\`, in its order. Each chunk is
  -- twice the one before: a LIMIT offset walks the members it skips, so chunks of one size past
  -- many expired members would walk them again and again.
  local function liveRange(command, first, second, count)
    local found, offset, size = {}, 0, math.max(count, 64)
    while #found < count do
      if offset > 0 then size = size * 2 end
      local chunk = redis.call(command, startKey, first, second, "LIMIT", offset, size)
      for _, member in ipairs(chunk) do
        if #found < count and live(member) then found[#found + 1] = member end
      end
      if #chunk < size then break end
      offset = offset + #chunk
    end
    return found
  end
  members = liveRange("ZREVRANGEBYSCORE", "(" .. num(to), num(from), limit)
  if limit > 0 and #members == limit then
    -- Sessions that start together come newest-member first here; every store and the reader
    -- order them by group key, ascending: the tail tied with the last start is read again so.
    local lastText = string.sub(members[#members], 1, string.find(members[#members], ":", 1, true) - 1)
    local tied = 0
    while tied < #members and string.sub(members[#members - tied], 1, #lastText + 1) == lastText .. ":" do
      tied = tied + 1
    end
    local last = redis.call("ZSCORE", startKey, members[#members])
    local ascending = liveRange("ZRANGEBYSCORE", last, last, tied)
    for i = 1, tied do members[#members - tied + i] = ascending[i] end
  end
else
  members = redis.call("ZREVRANGEBYSCORE", sessionStartKey(name), "(" .. num(to), num(from))
end
for _, member in ipairs(members) do
  local colon = string.find(member, ":", 1, true)
  local startText, group = string.sub(member, 1, colon - 1), string.sub(member, colon + 1)
  do
    -- A session that expired since the last apply is gone: its hash no longer exists.
    local stored = redis.call("HMGET", sessionValueKey(name, startText, group), "c", "s", "m", "e", "x")
    if stored[1] then
      local distinct = 0
      if kind == "distinct" then distinct = redis.call("PFCOUNT", sessionHllKey(name, startText, group)) end
      out[#out + 1] = { startText, stored[4], group, stored[1], stored[2] or "0", stored[3] or "",
        num(distinct), stored[5] and 1 or 0 }
    end
  end
end
return readReply(out)
`;

/** One pre-aggregated cell: `[counter, pane, group, count, sum, min|false, max|false, values]`. */
type Cell = [number, number, string, number, number, number | false, number | false, string[]];

/** A cell as the apply builds it: a quantiles counter's carry its bucket counts too (never a session's). */
type InputCell = [...Cell, unknown?];

/**
 * Joins the cells of session counters (one per event time and group) into
 * runs of events less than the gap apart, each `[…cell, end]`, so the script
 * merges one run per group and session instead of one cell per event time.
 * Cells of other counters pass through.
 */
export function sessionRuns(
  cells: InputCell[],
  counters: readonly CounterMeta[],
): unknown[] {
  if (!counters.some((counter) => counter.session)) return cells;
  const out: unknown[] = [];
  const byGroup = new Map<string, Cell[]>();
  for (const input of cells) {
    if (!counters[input[0]].session) {
      out.push(input);
      continue;
    }
    // Session counters have no quantiles (compile.ts refuses them): eight fields.
    const cell = input as Cell;
    const key = `${cell[0]}|${cell[2]}`;
    const list = byGroup.get(key);
    if (list) list.push(cell);
    else byGroup.set(key, [cell]);
  }
  for (const list of byGroup.values()) {
    const gapMs = counters[list[0][0]].session!.gapMs;
    list.sort((a, b) => a[1] - b[1]);
    let run: [...Cell, number] | null = null;
    let seen = new Set<string>();
    for (const cell of list) {
      if (run && cell[1] - run[8] < gapMs) {
        run[3] += cell[3];
        run[4] += cell[4];
        if (cell[5] !== false && (run[5] === false || cell[5] < run[5])) run[5] = cell[5];
        if (cell[6] !== false && (run[6] === false || cell[6] > run[6])) run[6] = cell[6];
        for (const value of cell[7]) {
          if (!seen.has(value)) {
            seen.add(value);
            run[7].push(value);
          }
        }
        run[8] = cell[1];
        continue;
      }
      if (run) out.push(run);
      run = [cell[0], cell[1], cell[2], cell[3], cell[4], cell[5], cell[6], [...cell[7]], cell[1]];
      seen = new Set(cell[7]);
    }
    if (run) out.push(run);
  }
  return out;
}

/** The apply script's `sess` argument: `[[counterIndex, gap, maxSessions], …]`, or undefined. */
export function sessionApplyArgs(counters: readonly CounterMeta[]): unknown[] | undefined {
  const sessions = counters.flatMap((counter, index) =>
    counter.session ? [[index, counter.session.gapMs, counter.session.maxSessions]] : []
  );
  return sessions.length > 0 ? sessions : undefined;
}

/** The close script's `sess` argument: `[[name, kind, gap, ttl], …]`, or undefined. */
export function sessionCloseArgs(counters: readonly CounterMeta[]): unknown[] | undefined {
  const sessions = counters.flatMap((counter) =>
    counter.session ? [[counter.name, counter.aggregate, counter.session.gapMs, counter.ttlMs]] : []
  );
  return sessions.length > 0 ? sessions : undefined;
}
