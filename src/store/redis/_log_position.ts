/**
 * The script that tells where a stream's result log stands (`RedisStore.logPosition`), from
 * `XINFO STREAM`: its `last-generated-id`, which Redis keeps when entries are trimmed and when
 * the stream is empty, and `entries-added` against `length`, which says whether any entry was
 * ever removed. Kept apart from the scripts that write and trim the log.
 *
 * @module
 */
import { luaString } from "./_lua_common.ts";
import { STREAM_KEYS } from "./_scripts.ts";

/**
 * KEYS[1]: the stream's key prefix. Returns `{lastId, entriesAdded, length, firstId}`, `""` for
 * what this Redis does not report (`entries-added` came with 7.0; nothing but the newest entry's
 * id when it refuses `XINFO` in a script) and `firstId` `""` when the log is empty;
 * `{"0-0", "0", "0", ""}` when the log does not exist.
 */
export const LOG_POSITION_SCRIPT = `
local LOG_KEY = KEYS[1] .. ${luaString(STREAM_KEYS.log)}
if redis.call("EXISTS", LOG_KEY) == 0 then return {"0-0", "0", "0", ""} end
local info = redis.pcall("XINFO", "STREAM", LOG_KEY)
if type(info) ~= "table" or info.err then
  -- A Redis that refuses XINFO in a script: its newest entry, and nothing known of trims.
  local newest = redis.call("XREVRANGE", LOG_KEY, "+", "-", "COUNT", 1)[1]
  return {newest and newest[1] or "0-0", "", "0", ""}
end
local last, added, length, first = "0-0", "", "0", ""
for i = 1, #info, 2 do
  local name, value = info[i], info[i + 1]
  if name == "last-generated-id" then last = value
  elseif name == "entries-added" then added = tostring(value)
  elseif name == "length" then length = tostring(value)
  elseif name == "first-entry" and type(value) == "table" then first = value[1] end
end
return {last, added, length, first}
`;
