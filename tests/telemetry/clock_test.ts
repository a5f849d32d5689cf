import assert from "node:assert/strict";
import { withinPeriod } from "../../src/telemetry/clock.ts";

Deno.test("withinPeriod: from the time on, for less than the period; a clock before the time (stepped back) is not within", () => {
  assert.equal(withinPeriod(1_000, 1_000, 2_000), true);
  assert.equal(withinPeriod(2_999, 1_000, 2_000), true);
  assert.equal(withinPeriod(3_000, 1_000, 2_000), false);
  assert.equal(withinPeriod(999, 1_000, 2_000), false);
  assert.equal(withinPeriod(1_000 - 3_600_000, 1_000, 2_000), false);
  assert.equal(withinPeriod(1_000, -Infinity, 2_000), false);
  assert.equal(withinPeriod(1_000, 1_000, 0), false);
});
