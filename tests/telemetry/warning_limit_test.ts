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
