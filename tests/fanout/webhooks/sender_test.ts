import assert from "node:assert/strict";
import fc from "fast-check";
import { RETRY_SCHEDULE_MS, retryDelayMs } from "../../../src/fanout/webhooks/sender.ts";

Deno.test("retryDelayMs() follows Svix's schedule and gives up after the eighth attempt", () => {
  const middle = () => 0.5;
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7].map((tries) => retryDelayMs(tries, { random: middle })),
    [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000],
  );
  assert.equal(retryDelayMs(8, { random: middle }), null);
  assert.equal(RETRY_SCHEDULE_MS.length, 8);
  assert.equal(RETRY_SCHEDULE_MS[0], 0);
});

Deno.test("retryDelayMs() jitters within ±20%", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 7 }),
      fc.double({ min: 0, max: 0.9999999, noNaN: true }),
      (
        tries,
        random,
      ) => {
        const delay = retryDelayMs(tries, { random: () => random })!;
        const base = RETRY_SCHEDULE_MS[tries];
        assert.ok(delay >= Math.floor(base * 0.8) && delay <= Math.ceil(base * 1.2), `${delay}`);
      },
    ),
  );
  assert.equal(retryDelayMs(1, { random: () => 0 }), 4_000);
  assert.equal(retryDelayMs(1, { random: () => 0.999999999 }), 6_000);
});
