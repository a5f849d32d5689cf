/**
 * The Lua prelude's `num`, which writes every number a script stores or replies: it must give
 * exactly `%.17g`'s text (what Redis, the store and older instances parse), also where it takes
 * its faster integer path. And `raiseClosedThrough`, which the keep-final script and the
 * definition write share: what it writes, and what it refuses.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  LUA_COMMON,
  luaRaiseClosedThrough,
  luaStatsTime,
} from "../../../src/store/redis/_lua_common.ts";
import { redisTest, withDirect } from "../../_redis.ts";

/**
 * Replies the values (ARGV[1] as JSON, and a few only Lua can make: -0, ±inf, NaN) whose `num`
 * text differs from `%.17g`'s, as "<%.17g> <num>".
 */
const COMPARE = LUA_COMMON + `
local values = cjson.decode(ARGV[1])
values[#values + 1] = 0 * -1
values[#values + 1] = 1 / 0
values[#values + 1] = -1 / 0
values[#values + 1] = 0 / 0
local wrong = {}
for _, value in ipairs(values) do
  local expected = string.format("%.17g", value)
  if num(value) ~= expected then wrong[#wrong + 1] = expected .. " " .. num(value) end
end
return wrong
`;

const EDGES = [
  0,
  1,
  -1,
  0.5,
  -7.25,
  0.1,
  1 / 3,
  1796089490283,
  2 ** 53 - 1,
  -(2 ** 53 - 1),
  2 ** 53,
  -(2 ** 53),
  2 ** 53 + 2,
  1e17,
  -1e17,
  1e21,
  2 ** 63,
  -(2 ** 63),
  2 ** 64,
  5e-324,
  1.7976931348623157e308,
];

redisTest("num() in the Lua prelude writes every number as %.17g does", async (fixture) => {
  const integers = fc.sample(fc.maxSafeInteger(), 300);
  const near = fc.sample(fc.integer({ min: -1000, max: 1000 }), 50).flatMap((d) => [
    2 ** 53 + d * 2,
    -(2 ** 53) - d * 2,
  ]);
  const doubles = fc.sample(fc.double({ noNaN: true, noDefaultInfinity: true }), 300);
  const values = [...EDGES, ...integers, ...near, ...doubles];
  const wrong = await withDirect(
    fixture.redisUrl,
    (send) => send("EVAL", COMPARE, "1", "x", JSON.stringify(values)),
  );
  assert.deepEqual(wrong, []);
});

/**
 * Calls `raiseClosedThrough` on the stats hash KEYS[1] with ARGV[1] as `through` and `cl` as
 * `expectStatsTime` reads it, as its scripts do; replies what it returned and `cl` after.
 */
const RAISE = LUA_COMMON + luaStatsTime("KEYS[1]") + luaRaiseClosedThrough("KEYS[1]") + `
local closed = expectStatsTime("cl", redis.call("HGET", KEYS[1], "cl"))
local raised = raiseClosedThrough(closed, tonumber(ARGV[1]))
return { raised, redis.call("HGET", KEYS[1], "cl") or false }
`;

redisTest(
  "raiseClosedThrough() in the Lua helpers raises the stats' cl to a later bound, never lowers it, and says whether it raised it",
  async (fixture) => {
    const raise = (through: number) =>
      withDirect(fixture.redisUrl, (send) => send("EVAL", RAISE, "1", "stats", String(through)));
    const T0 = 1796089490283;
    // Absent: set, written as num() writes it.
    assert.deepEqual(await raise(T0), [1, String(T0)]);
    // Earlier or the same: kept as it is.
    assert.deepEqual(await raise(T0 - 60_000), [0, String(T0)]);
    assert.deepEqual(await raise(T0), [0, String(T0)]);
    // Later: raised.
    assert.deepEqual(await raise(T0 + 60_000), [1, String(T0 + 60_000)]);
    // Only `cl` is written: the other fields of the stats hash are left as they are.
    await withDirect(fixture.redisUrl, (send) => send("HSET", "stats", "wm", "5"));
    assert.deepEqual(await raise(T0 + 120_000), [1, String(T0 + 120_000)]);
    assert.deepEqual(
      await withDirect(fixture.redisUrl, (send) => send("HGETALL", "stats")),
      ["cl", String(T0 + 120_000), "wm", "5"],
    );
  },
);

redisTest(
  "raiseClosedThrough() refuses a cl holding text no script writes (as expectStatsTime reads it) and writes nothing",
  async (fixture) => {
    await withDirect(fixture.redisUrl, (send) => send("HSET", "stats", "cl", "soon"));
    await assert.rejects(
      withDirect(fixture.redisUrl, (send) => send("EVAL", RAISE, "1", "stats", "1000")),
      // Redis adds the script's sha and line after the text.
      {
        message:
          /^WRONGTYPE edgestream key stats field cl holds 'soon' where a time in ms belongs: nothing was written \(delete or repair the key\)( |$)/,
      },
    );
    assert.equal(
      await withDirect(fixture.redisUrl, (send) => send("HGET", "stats", "cl")),
      "soon",
    );
  },
);
