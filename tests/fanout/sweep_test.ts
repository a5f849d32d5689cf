/**
 * How a failed sweep is logged: the store unavailable (the next sweep tries again) at warning, as
 * a request's 503 is; anything else (a defect, bad data) at error.
 */
import assert from "node:assert/strict";
import { logSweepError } from "../../src/fanout/sweep.ts";
import { StoreUnavailableError } from "../../src/store/types.ts";
import { collectingLogs, messageOf } from "../_logs.ts";

Deno.test("logSweepError() logs an unavailable store at warning and anything else at error, naming the stream", async () => {
  const records = await collectingLogs(async (records) => {
    logSweepError(new StoreUnavailableError("Redis is unavailable (closeWindows): OOM"), "orders");
    logSweepError(new StoreUnavailableError("Redis did not answer"));
    logSweepError(new Error("Redis refused closeWindows: ERR bad"), "orders");
    logSweepError(new TypeError("boom"));
    return await Promise.resolve([...records]);
  });
  assert.deepEqual(records.map((record) => [record.level, messageOf(record).split(": ")[0]]), [
    ["warning", "Sweep of stream 'orders' failed"],
    ["warning", "Sweep failed"],
    ["error", "Sweep of stream 'orders' failed"],
    ["error", "Sweep failed"],
  ]);
});
