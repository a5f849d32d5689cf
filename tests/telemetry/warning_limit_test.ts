import assert from "node:assert/strict";
import { WarningLimit } from "../../src/telemetry/mod.ts";

Deno.test("WarningLimit says a warning per key the first time, then once the period passed", () => {
  let now = 0;
  const limit = new WarningLimit<object>(60_000, () => now);
  const [a, b] = [{}, {}];
  assert.deepEqual([limit.due(a), limit.due(a), limit.due(b)], [true, false, true]);
  now = 59_999;
  assert.equal(limit.due(a), false);
  now = 60_000;
  assert.deepEqual([limit.due(a), limit.due(a)], [true, false]);
});

Deno.test("WarningLimit counts a clock before the last warning's time (stepped back) as due, then waits a period from there", () => {
  let now = 3_600_000;
  const limit = new WarningLimit<object>(60_000, () => now);
  const key = {};
  assert.equal(limit.due(key), true);
  now -= 3_600_000; // an hour back: not silent until the clock passes the old time again
  assert.deepEqual([limit.due(key), limit.due(key)], [true, false]);
  now += 59_999;
  assert.equal(limit.due(key), false);
  now += 1;
  assert.equal(limit.due(key), true);
});
