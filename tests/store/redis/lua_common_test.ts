/**
 * The Lua prelude's `num`, which writes every number a script stores or replies: it must give
 * exactly `%.17g`'s text (what Redis, the store and older instances parse), also where it takes
 * its faster integer path.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { LUA_COMMON } from "../../../src/store/redis/_lua_common.ts";
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

Deno.test("the apply script makes no raiseClosedThrough closure (it never calls it); the keep-final script has it", async () => {
  // Each `local function` is a closure made on every call of a script that holds it.
  const { APPLY_SCRIPT, KEEP_FINAL_SCRIPT } = await import("../../../src/store/redis/_scripts.ts");
  assert.equal(APPLY_SCRIPT.includes("raiseClosedThrough"), false);
  assert.match(KEEP_FINAL_SCRIPT, /local function raiseClosedThrough\(/);
  assert.match(KEEP_FINAL_SCRIPT, /return raiseClosedThrough\(/);
});
